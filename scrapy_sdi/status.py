"""What happened to submitted results: the API's status lookups and the local buffer's counts.

Inside a crawl (any reactor), ``await`` :func:`url_statuses` or :func:`crawler_statuses` with the
crawl's client; from plain blocking code (scripts, notebooks, cron jobs), :class:`StatusLookup`
runs the same coroutines on :mod:`scrapy_sdi.blocking`'s reactor thread. :func:`buffer_status`
reads a buffer directly and needs no reactor at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import call_later
from twisted.internet import defer

from scrapy_sdi.blocking import run_blocking
from scrapy_sdi.buffer import DELIVERED
from scrapy_sdi.client import SDIClient
from scrapy_sdi.clock import Timers
from scrapy_sdi.errors import SDIError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from scrapy.statscollectors import StatsCollector

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.buffer_calls import BufferCalls

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UrlStatus:
    url: str
    status_code: int | None
    status: str
    description: str  # the API's description of the code (status-codes), or its own text
    crawler: str | None = None
    submitted_at: str | None = None


@dataclass(frozen=True)
class CrawlerStatus:
    crawler: str
    total: int
    by_status: dict[str, int] = field(default_factory=dict)


async def url_statuses(client: SDIClient, urls: Iterable[str]) -> list[UrlStatus]:
    """Status of each URL, with the code's description from the API's status-codes list."""
    found = await client.status_by_urls(urls)
    codes = {c.get("code"): c.get("description") for c in await client.status_codes()}
    return [
        UrlStatus(
            url=str(r.get("url")),
            status_code=r.get("status_code"),
            status=str(r.get("status")),
            description=str(codes.get(r.get("status_code")) or r.get("description") or ""),
            crawler=r.get("crawler"),
            submitted_at=r.get("submitted_at"),
        )
        for r in found
    ]


async def crawler_statuses(client: SDIClient, crawlers: Sequence[str]) -> list[CrawlerStatus]:
    found = await client.status_by_crawlers(crawlers)
    return [
        CrawlerStatus(
            str(r.get("crawler")), int(r.get("total") or 0), dict(r.get("by_status") or {})
        )
        for r in found
    ]


class StatusLookup:
    """Blocking status lookups for scripts: ``StatusLookup(url, user, password).urls([...])``."""

    def __init__(
        self, api_url: str, username: str, password: str, *, timeout: float = 30.0
    ) -> None:
        self._args = (api_url, username, password)
        self._timeout = timeout

    def urls(self, urls: Iterable[str]) -> list[UrlStatus]:
        return run_blocking(self._with_client, url_statuses, list(urls))

    def crawlers(self, crawlers: Sequence[str]) -> list[CrawlerStatus]:
        return run_blocking(self._with_client, crawler_statuses, list(crawlers))

    async def _with_client(self, call: Any, arg: Any) -> Any:
        client = SDIClient(*self._args, timeout=self._timeout)
        try:
            return await call(client, arg)
        finally:
            await client.close()


@dataclass(frozen=True)
class BufferStatus:
    counts: dict[str, int]
    by_crawler: dict[str, dict[str, int]]
    oldest_pending_age: float | None
    size_bytes: int | None


def buffer_file_size(buffer: Buffer) -> int | None:
    """Bytes on disk of a file-backed buffer, its write-ahead log included (a PostgreSQL
    buffer's tables and indexes); None for memory."""
    return buffer.size_bytes()


def buffer_status(buffer: Buffer) -> BufferStatus:
    """Counts by state and crawler, the oldest pending age and the file size of a buffer."""
    return BufferStatus(
        buffer.counts(),
        buffer.counts_by_crawler(),
        buffer.oldest_pending_age(),
        buffer_file_size(buffer),
    )


async def record_remote_status(
    client: SDIClient,
    calls: BufferCalls,
    stats: StatsCollector,
    *,
    crawler: str,
    since: float,
    timeout: float,
) -> None:
    """``sdi/remote_status/<name>``: what the API says of the results this run delivered, looked
    up within ``timeout`` (the buffer's answer included); a failure is one WARNING, never an
    error of the crawl."""

    def delivered_urls() -> list[str]:
        return [row["url"] for row in calls.buffer.export(DELIVERED, crawler, since=since)]

    clock = Timers()
    deadline = clock.seconds() + timeout
    try:
        urls = await clock.within(calls.call(delivered_urls), timeout)
    except TimeoutError:
        logger.warning("SDI: status lookup at close failed: the buffer did not answer in time")
        return
    if not urls:
        return
    lookup = defer.Deferred.fromCoroutine(url_statuses(client, urls))
    timer = call_later(max(0.0, deadline - clock.seconds()), lookup.cancel)
    try:
        statuses = await lookup
    except (SDIError, defer.CancelledError) as exc:
        logger.warning(
            "SDI: status lookup at close failed: %(error)s", {"error": str(exc) or "timed out"}
        )
        return
    finally:
        timer.cancel()
    for status in statuses:
        stats.inc_value(f"sdi/remote_status/{status.status}")
