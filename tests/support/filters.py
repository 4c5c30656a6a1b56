"""Filters a test changes while delivery runs."""

from __future__ import annotations

from typing import Any

from scrapy_sdi.filters import FilterSet, compile_filters


class InForce:
    """The filters delivery applies (a FilterSource's ``in_force``), changed by the test."""

    def __init__(self, raw: list[dict[str, Any]], version: str) -> None:
        self.set(raw, version)

    def set(self, raw: list[dict[str, Any]], version: str) -> None:
        self.current = compile_filters(raw, version)

    def in_force(self) -> FilterSet:
        return self.current
