"""The audit log on loguru's one logger: each audit log writes its own lines and nothing else."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from scrapy_sdi import audit
from scrapy_sdi.audit import AuditLog


@pytest.fixture
def app_lines() -> Iterator[list[str]]:
    """What an application's own loguru handler at DEBUG receives meanwhile."""
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)


def _entries(path: Path) -> list[tuple[str, int]]:
    return [(e["crawler"], e["n"]) for e in map(json.loads, path.read_text().splitlines())]


def test_two_crawls_in_one_process_each_write_only_their_own_lines(
    tmp_path: Path,
    app_lines: list[str],
) -> None:
    first, second = AuditLog(str(tmp_path / "a.jsonl")), AuditLog(str(tmp_path / "b.jsonl"))
    try:
        for n in range(3):
            first.record({"crawler": "a", "n": n})
            second.record({"crawler": "b", "n": n})
        logger.info("an application record")
        first.close()
        second.record({"crawler": "b", "n": 3})  # the other crawl goes on after one closed
    finally:
        first.close()
        second.close()
    assert _entries(tmp_path / "a.jsonl") == [("a", n) for n in range(3)]
    assert _entries(tmp_path / "b.jsonl") == [("b", n) for n in range(4)]
    assert app_lines == ["an application record\n"]  # no audit line reached the application


def test_a_closed_audit_log_leaves_no_sink_behind(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "a.jsonl"))
    log.record({"crawler": "a", "n": 1})
    log.close()
    log.record({"crawler": "a", "n": 2})  # after close: written nowhere, and no error
    log.close()  # twice is harmless
    assert _entries(tmp_path / "a.jsonl") == [("a", 1)]


def test_only_loguru_public_api() -> None:
    assert "loguru._" not in inspect.getsource(audit)
