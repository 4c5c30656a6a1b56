"""SDIPipeline: every item becomes a buffered result, delivered to the SDI API in batches.

The pipeline only orchestrates: map and validate (mapping), exclude (filters), then hand the row
to the Outbox, which buffers it durably and delivers it (outbox, writer, buffer, delivery, client).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider, DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer

from scrapy_sdi.audit import AuditLog
from scrapy_sdi.buffer import (
    FILTERED,
    INVALID,
    BufferFileError,
    BufferWriteError,
    MemoryBuffer,
    Row,
    open_buffer,
)
from scrapy_sdi.client import SDIClient
from scrapy_sdi.filter_source import FilterSource
from scrapy_sdi.filters import count_filtered
from scrapy_sdi.mapping import (
    InvalidResult,
    ResultMapper,
    encode_result,
    new_result_id,
    stable_result_id,
)
from scrapy_sdi.outbox import Outbox
from scrapy_sdi.settings import settings_for
from scrapy_sdi.signals import delivery_opened
from scrapy_sdi.status import record_remote_status
from scrapy_sdi.stopping import CrawlStop

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector
    from typing_extensions import Self

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)

#: Keys set to 0 at open, so the closing stats dump always shows them and they add up.
STARTING_STATS = (
    "sdi/items_buffered",
    "sdi/items_delivered",
    "sdi/items_duplicate",
    "sdi/items_rejected",
    "sdi/items_filtered",
    "sdi/items_invalid",
    "sdi/items_deduplicated",
    "sdi/items_unbuffered",
    "sdi/batches_sent",
    "sdi/batches_failed",
    "sdi/retries",
)
#: What a dry run counts instead of deliveries.
DRY_RUN_STATS = ("sdi/dry_run/items", "sdi/dry_run/batches")


class SDIPipeline:
    """``ITEM_PIPELINES = {"scrapy_sdi.SDIPipeline": 800}``."""

    def __init__(self, settings: SDISettings, *, stats: StatsCollector, crawler: Crawler | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.crawler = crawler
        self.mapper = ResultMapper(field_map=settings.field_map)
        self.buffer: Buffer | None = None
        self.client: SDIClient | None = None
        self.outbox: Outbox | None = None
        self.filters: FilterSource | None = None
        self.audit: AuditLog | None = None
        self._opened_at = time.time()
        self._stop_crawl = CrawlStop(crawler)  # once the buffer failed: results found later would be lost too

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(settings_for(crawler), stats=crawler.stats, crawler=crawler)

    async def open_spider(self) -> None:
        settings = self.settings
        # a dry run must not mark anything delivered in the real buffer
        try:
            self.buffer = MemoryBuffer() if settings.dry_run else open_buffer(settings)
        except BufferFileError as exc:
            logger.error("%(error)s", {"error": exc})  # one line naming the file and what to do
            raise CloseSpider("sdi_buffer_unavailable") from None
        _warn_plain_http(settings.api_url)
        self.client = SDIClient(
            settings.api_url,
            settings.username,
            settings.password,
            timeout=settings.timeout,
            compression_min_bytes=settings.compression_min_bytes if settings.compression else None,
            stats=self.stats,
        )
        if settings.dry_run:
            logger.info("SDI dry run: results are buffered and counted but never submitted")
        if settings.audit_log:
            self.audit = AuditLog(settings.audit_log, rotation=settings.audit_rotation, retention=settings.audit_retention)
        self.filters = FilterSource(settings, self.buffer, self.client, stats=self.stats)
        self.outbox = Outbox(
            self.buffer,
            None if settings.dry_run else self.client,
            settings,
            stats=self.stats,
            audit=self.audit.record if self.audit is not None else None,
            filters=self.filters,
        )
        await maybe_deferred_to_future(defer.Deferred.fromCoroutine(self.filters.load()))
        pruned = self.buffer.prune(settings.retention_days)
        if pruned:
            logger.info("SDI buffer: pruned %(n)d delivered results older than %(days)g days", {"n": pruned, "days": settings.retention_days})
        for key in STARTING_STATS + (DRY_RUN_STATS if settings.dry_run else ()):
            self.stats.set_value(key, 0)
        self.outbox.start()
        self.filters.start()
        if self.crawler is not None:
            self.crawler.signals.send_catch_log(signal=delivery_opened, delivery=self.outbox)
        if self.filters.required_but_missing:
            logger.error("SDI filters: %(why)s; SDI_FILTERS_REQUIRED closes the spider", {"why": self.filters.unavailable})
            raise CloseSpider("sdi_filters_unavailable")
        logger.info(
            "SDI delivery to %(url)s as crawler %(crawler)r, %(buffer)s",
            {"url": settings.api_url, "crawler": settings.crawler_name, "buffer": _describe_buffer(settings)},
        )

    async def process_item(self, item: Any) -> Any:
        assert self.filters is not None
        crawler = self.settings.crawler_name
        try:
            result = self.mapper.to_result(item)
            passed = self.filters.in_force()  # what the row passes is remembered, so delivery need not match it again
            matched = self.filters.match(result["url"], result["filename"])
            # filtered rows get a random id: if the filters change, the URL may still be sent later
            dedup_id = self.settings.dedup and matched is None
            result_id = stable_result_id(crawler, result["url"]) if dedup_id else new_result_id()
            payload = encode_result(result, result_id)
        except InvalidResult as exc:
            url, kept = self.mapper.keep(item)  # what a requeue maps again
            await self._put(Row(new_result_id(), crawler, url, kept, INVALID, exc.reason))
            self.stats.inc_value("sdi/items_invalid")
            raise DropItem(f"SDI: invalid result: {exc.reason}", log_level="DEBUG") from None
        if matched is not None:
            # a URL already buffered is deduplicated: its row is matched when it is sent, and counted then
            if await self._put(Row(result_id, crawler, result["url"], payload, FILTERED, matched.describe())):
                count_filtered(self.stats, [matched])
            raise DropItem(f"SDI: excluded by {matched.describe()}", log_level="DEBUG")
        await self._put(Row(result_id, crawler, result["url"], payload, filters_version=None if passed is None else passed.key))
        return item

    async def _put(self, row: Row) -> bool:
        """A buffer that cannot store (disk full) stops the crawl: results found later would be lost too.

        The outbox has said why, once; each item is dropped quietly and counted.
        """
        assert self.outbox is not None
        try:
            return await self.outbox.put(row)
        except BufferWriteError:
            self.stats.inc_value("sdi/items_unbuffered")
            self._stop_crawl("sdi_buffer_failed")
            raise DropItem("SDI: not buffered, the buffer cannot store results", log_level="DEBUG") from None

    async def close_spider(self) -> None:
        self._stop_crawl.cancel()
        if self.outbox is None or self.buffer is None:
            return
        left = await maybe_deferred_to_future(defer.Deferred.fromCoroutine(self._close()))
        self.stats.set_value("sdi/pending_at_close", left)
        unbuffered = self.stats.get_value("sdi/items_unbuffered", 0)
        if unbuffered:
            logger.warning("SDI: %(n)d results were not buffered after the buffer failed; run the crawl again to find them", {"n": unbuffered})
        if left and self.buffer.durable:
            logger.warning(
                "SDI: %(n)d results are still pending in %(path)s; the next run delivers them, "
                "or drain them now with `scrapy sdi flush`",
                {"n": left, "path": self.settings.buffer_path},
            )
        elif left:
            self.stats.set_value("sdi/items_lost", left)
            logger.error("SDI: %(n)d results were not delivered and are lost (SDI_BUFFER = 'memory')", {"n": left})
        self.buffer.close()

    async def _close(self) -> int:
        """The final flush, then the status lookup: both here, since Scrapy awaits pipelines'
        close before ``spider_closed``, whose handlers (Spidermon's) read the stats at once."""
        assert self.outbox is not None and self.filters is not None and self.buffer is not None
        self.filters.stop()
        try:
            left = await self.outbox.close(self.settings.close_timeout)
            if self.settings.status_on_close and self.client is not None:
                await record_remote_status(
                    self.client, self.buffer, self.stats, crawler=self.settings.crawler_name, since=self._opened_at,
                    timeout=max(self.settings.close_timeout, self.settings.timeout),
                )
            return left
        finally:
            await self.filters.close()
            if self.client is not None:
                await self.client.close()
            if self.audit is not None:
                self.audit.close()


def _describe_buffer(settings: SDISettings) -> str:
    """How the start line names the buffer; a dry run creates none."""
    if settings.dry_run:
        return "dry run (results kept in memory, never sent)"
    return "buffer " + (settings.buffer_path if settings.buffer == "sqlite" else repr(settings.buffer))


def _warn_plain_http(api_url: str) -> None:
    """Credentials sent over plain http to another machine can be read on the way."""
    from urllib.parse import urlsplit

    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host not in ("localhost", "::1") and not host.startswith("127."):
        logger.warning("SDI_API_URL uses plain http to %(host)s: credentials and results travel unencrypted; use https", {"host": host})
