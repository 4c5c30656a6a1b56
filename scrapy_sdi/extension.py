"""SDIStatus: one quiet INFO line per interval about delivery, like Scrapy's LogStats.

It learns of the outbox through the ``delivery_opened`` signal and otherwise reads the
crawler's stats, so it adds nothing to the item path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call

from scrapy_sdi.settings import settings_for
from scrapy_sdi.signals import delivery_opened

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.statscollectors import StatsCollector
    from typing_extensions import Self

    from scrapy_sdi.outbox import Outbox

logger = logging.getLogger(__name__)


class SDIStatus:
    """``EXTENSIONS = {"scrapy_sdi.SDIStatus": 500}``."""

    def __init__(self, stats: StatsCollector, interval: float) -> None:
        self.stats = stats
        self.interval = interval
        self.delivery: Outbox | None = None
        self._task: Any = None
        self._last_delivered = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        settings = settings_for(crawler)
        ext = cls(crawler.stats, settings.log_interval)
        crawler.signals.connect(ext.delivery_opened, signal=delivery_opened)
        crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def delivery_opened(self, delivery: Outbox) -> None:
        self.delivery = delivery

    def spider_opened(self) -> None:
        if self.interval > 0:
            self._task = create_looping_call(self.log)
            self._task.start(self.interval, now=False)

    def log(self) -> None:
        value = self.stats.get_value
        delivered = value("sdi/items_delivered", 0)
        per_minute = (delivered - self._last_delivered) * 60.0 / self.interval
        self._last_delivered = delivered
        logger.info(
            "SDI: delivered %(delivered)d (%(rate)d/min), pending %(pending)d, filtered %(filtered)d, "
            "rejected %(rejected)d, API %(api)s",
            {
                "delivered": delivered,
                "rate": per_minute,
                "pending": self.delivery.backlog if self.delivery is not None else 0,
                "filtered": value("sdi/items_filtered", 0),
                "rejected": value("sdi/items_rejected", 0),
                "api": self.delivery.state if self.delivery is not None else "not started",
            },
        )

    def spider_closed(self) -> None:
        if self._task is not None and self._task.running:
            self._task.stop()
