"""SDIPipeline: every item becomes a buffered result, delivered to the SDI API in batches.

The pipeline only orchestrates: map and validate (mapping), exclude (filters), then put the row
in the Outbox, which buffers it durably and delivers it (session, outbox, writer, buffer,
delivery, client). What it does not buffer it drops, counted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import CloseSpider, DropItem

from scrapy_sdi.buffer import FILTERED, INVALID, BufferFileError, BufferWriteError, Row
from scrapy_sdi.filters import count_filtered
from scrapy_sdi.mapping import (
    InvalidResult,
    ResultMapper,
    encode_draft,
    new_result_id,
    stable_result_id,
)
from scrapy_sdi.session import DeliverySession, describe_buffer
from scrapy_sdi.settings import settings_for
from scrapy_sdi.signals import delivery_opened
from scrapy_sdi.stopping import CrawlStop, close_handlers_at_close

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector
    from typing_extensions import Self

    from scrapy_sdi.filter_source import FilterSource
    from scrapy_sdi.outbox import Outbox
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)


class SDIPipeline:
    """``ITEM_PIPELINES = {"scrapy_sdi.SDIPipeline": 800}``."""

    def __init__(
        self, settings: SDISettings, *, stats: StatsCollector, crawler: Crawler | None = None
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.crawler = crawler
        self.mapper = ResultMapper(field_map=settings.field_map)
        self.session = DeliverySession(settings, stats)
        #: Where rows go, and the filters they are matched against (set by ``open_spider``).
        self.outbox: Outbox | None = None
        self.filters: FilterSource | None = None
        # once the buffer failed: results found later would be lost too
        self._stop_crawl = CrawlStop(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(settings_for(crawler), stats=crawler.stats, crawler=crawler)

    async def open_spider(self) -> None:
        try:
            self.outbox = await self.session.open()
        except BufferFileError as exc:
            logger.error("%(error)s", {"error": exc})  # one line naming the file and what to do
            close_handlers_at_close(self.crawler)
            raise CloseSpider("sdi_buffer_unavailable") from None
        self.filters = self.session.filters
        assert self.filters is not None
        if self.crawler is not None:
            self.crawler.signals.send_catch_log(signal=delivery_opened, delivery=self.outbox)
        if self.filters.required_but_missing:
            logger.error(
                "SDI filters: %(why)s; SDI_FILTERS_REQUIRED closes the spider",
                {"why": self.filters.unavailable},
            )
            close_handlers_at_close(self.crawler)
            raise CloseSpider("sdi_filters_unavailable")
        logger.info(
            "SDI delivery to %(url)s as crawler %(crawler)r, %(buffer)s",
            {
                "url": self.settings.api_url,
                "crawler": self.settings.crawler_name,
                "buffer": describe_buffer(self.settings, self.session.buffer),
            },
        )

    async def process_item(self, item: Any) -> Any:
        assert self.filters is not None
        crawler = self.settings.crawler_name
        try:
            result = self.mapper.draft(item)  # encoded once its id is chosen, without a copy
            url = result["url"]
            # what the row passes is remembered, so delivery need not match it again
            passed = self.filters.in_force()
            matched = self.filters.match(url, result["filename"])
            # filtered rows get a random id: if the filters change, the URL may still be sent later
            dedup_id = self.settings.dedup and matched is None
            result_id = stable_result_id(crawler, url) if dedup_id else new_result_id()
            payload = encode_draft(result, result_id)
        except InvalidResult as exc:
            url, kept = self.mapper.keep(item)  # what a requeue maps again
            await self._put(Row(new_result_id(), crawler, url, kept, INVALID, exc.reason))
            self.stats.inc_value("sdi/items_invalid")
            raise DropItem(f"SDI: invalid result: {exc.reason}", log_level="DEBUG") from None
        if matched is not None:
            # a URL already buffered is deduplicated: its row is matched when it is sent, and counted then
            if await self._put(Row(result_id, crawler, url, payload, FILTERED, matched.describe())):
                count_filtered(self.stats, [matched])
            raise DropItem(f"SDI: excluded by {matched.describe()}", log_level="DEBUG")
        await self._put(
            Row(
                result_id,
                crawler,
                url,
                payload,
                filters_version=None if passed is None else passed.key,
            )
        )
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
            raise DropItem(
                "SDI: not buffered, the buffer cannot store results", log_level="DEBUG"
            ) from None

    async def close_spider(self) -> None:
        """The final flush and the status lookup happen here, not in an extension's spider_closed:
        Scrapy awaits pipelines' close before it sends spider_closed, whose handlers (Spidermon's)
        read the stats at once."""
        self._stop_crawl.cancel()
        await self.session.close()
