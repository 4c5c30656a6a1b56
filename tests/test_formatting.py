"""The one helper each for ages, byte sizes and ISO times that every text output uses."""

from __future__ import annotations

import pytest

from scrapy_sdi.formatting import age, iso, size


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.9, "0s"),
        (59, "59s"),
        (60, "1m 00s"),
        (250, "4m 10s"),
        (3599, "59m 59s"),
        (3600, "1h 00m"),
        (3605, "1h 00m"),
        (7500, "2h 05m"),
        (86400, "1d 00h"),
        (3 * 86400 + 4 * 3600 + 59, "3d 04h"),
        (10_000 * 86400, "10000d 00h"),
        (-5, "0s"),
        (-100_000, "0s"),
    ],
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text


def test_age_unknown() -> None:
    assert age(None) == "-"
    assert age(None, none="never") == "never"


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (2048, "2.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (2048 * 1024**4, "2048.0 TiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_size(nbytes: int, text: str) -> None:
    assert size(nbytes) == text


def test_size_unknown() -> None:
    assert size(None) == "-"
    assert size(None, none="no file") == "no file"


@pytest.mark.parametrize(
    ("timestamp", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (0.999, "1970-01-01T00:00:00Z"),
        (1_796_406_701, "2026-12-04T17:51:41Z"),
        (1_796_406_701.75, "2026-12-04T17:51:41Z"),
        (-1, "1969-12-31T23:59:59Z"),
        (4_102_444_800, "2100-01-01T00:00:00Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ],
)
def test_iso(timestamp: float, text: str) -> None:
    assert iso(timestamp) == text


def test_iso_none() -> None:
    assert iso(None) is None
