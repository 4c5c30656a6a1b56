"""Timing a crawl's close from its own log: a log format with milliseconds, and the seconds
from Scrapy's "Closing spider" line to its "Spider closed" line."""

from __future__ import annotations

import re

TIMED_LOG_FORMAT = "%(created).3f [%(name)s] %(levelname)s: %(message)s"


def close_seconds(log: str) -> float:
    """From Scrapy's "Closing spider (" line to its "Spider closed (" line."""
    closing = re.search(r"^(\d+\.\d+) \[scrapy\.core\.engine\] INFO: Closing spider \(", log, re.M)
    closed = re.search(r"^(\d+\.\d+) \[scrapy\.core\.engine\] INFO: Spider closed \(", log, re.M)
    assert closing and closed, log[-3000:]
    return float(closed.group(1)) - float(closing.group(1))
