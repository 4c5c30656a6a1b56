"""Stopping the crawl from an item pipeline, as Scrapy 2.19 allows it.

``engine.close_spider_async`` is the supported way, and the only one from a pipeline (Scrapy logs
a ``CloseSpider`` raised in ``process_item`` as an item error). But Scrapy checks whether the
scraper may close only when a response's output is done, so a close asked while items yielded
from ``start()`` are in the pipelines waits forever (scrapy/scrapy#7029, open; the fixes proposed,
#7032 and #7718, were closed unmerged). Until it is fixed, the close is helped along by looking
again every 50 ms.

A spider closed at open (``CloseSpider`` from ``open_spider``: an unusable buffer) never starts
the engine, so Scrapy never sends ``engine_stopped``, on which its download handlers close; in
the reactorless mode the aiohttp handler's sessions are then reported as two ERRORs ("Unclosed
client session") after our one line. :func:`close_handlers_at_close` closes them as the spider
closes.

Those are scrapy_sdi's only uses of Scrapy's private attributes, kept here as one place to
delete: tests/test_stopping.py fails as soon as Scrapy does either on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call
from scrapy.utils.defer import deferred_from_coro

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

RECHECK = 0.05  # seconds between looks, while a close waits for the scraper


class CrawlStop:
    """Closes the crawl once, however many items ask; ``cancel`` at the pipeline's close."""

    def __init__(self, crawler: Crawler | None) -> None:
        self._crawler = crawler
        self._recheck: Any = None  # a looping call, once the close is asked

    def __call__(self, reason: str) -> None:
        engine = self._crawler.engine if self._crawler is not None else None
        if engine is None or self._recheck is not None:
            return
        deferred_from_coro(engine.close_spider_async(reason=reason))
        self._recheck = create_looping_call(recheck_scraper_closing, engine.scraper)
        self._recheck.start(RECHECK)

    def cancel(self) -> None:
        if self._recheck is not None and self._recheck.running:
            self._recheck.stop()


def recheck_scraper_closing(scraper: Any) -> None:
    """What Scrapy does when a response's output is done: close the scraper if it is idle now.

    Probed, not assumed: if Scrapy renames these, the close waits as it would without the help.
    """
    slot = getattr(scraper, "slot", None)
    check = getattr(scraper, "_check_if_closing", None)
    if (
        slot is not None
        and check is not None
        and slot.closing is not None
        and not slot.closing.called
    ):
        check()


def close_handlers_at_close(crawler: Crawler | None) -> None:
    """Close Scrapy's download handlers when the spider closes: call it only before raising
    ``CloseSpider`` from ``open_spider``, when no ``engine_stopped`` will close them."""
    if crawler is None:
        return

    async def close() -> None:
        engine = crawler.engine
        downloader = getattr(engine, "downloader", None)
        closing = getattr(getattr(downloader, "handlers", None), "_close", None)
        if closing is not None and not engine.running:
            await closing()

    crawler.signals.connect(close, signal=signals.spider_closed, weak=False)
