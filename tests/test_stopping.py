"""Stopping the crawl from a pipeline while items from ``start()`` are in it (scrapy/scrapy#7029).

The first test pins Scrapy's behaviour that scrapy_sdi.stopping works around: when it fails,
Scrapy closes on its own, and ``recheck_scraper_closing`` (the use of Scrapy's private
attributes) can go. The same for download handlers left open by a spider closed at open
(``close_handlers_at_close``).
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from scrapy import Spider
from scrapy.exceptions import CloseSpider
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from scrapy.utils.test import get_crawler
from twisted.internet import reactor, task

from scrapy_sdi.stopping import CrawlStop, close_handlers_at_close, recheck_scraper_closing


class StartItemSpider(Spider):
    name = "start_items"

    async def start(self) -> Any:
        yield {"n": 1}


class ClosingPipeline:
    """Asks the crawl to close while its item is still in the pipeline."""

    helped = False

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler
        self.stop = CrawlStop(crawler)

    @classmethod
    def from_crawler(cls, crawler: Any) -> ClosingPipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if self.helped:
            self.stop("closed_by_pipeline")
        else:
            deferred_from_coro(self.crawler.engine.close_spider_async(reason="closed_by_pipeline"))
        await maybe_deferred_to_future(
            task.deferLater(reactor, 0.2, lambda: None)
        )  # still in the pipeline when the scraper is asked to close
        return item

    async def close_spider(self) -> None:
        self.stop.cancel()


def crawler(helped: bool) -> Any:
    pipeline = type("Pipeline", (ClosingPipeline,), {"helped": helped})
    return get_crawler(StartItemSpider, {"ITEM_PIPELINES": {pipeline: 100}, "LOG_LEVEL": "INFO"})


@pytest_twisted.ensureDeferred
async def test_scrapy_still_waits_forever_for_a_close_asked_while_a_start_item_is_in_a_pipeline():
    c = crawler(helped=False)
    crawl = c.crawl()
    await task.deferLater(reactor, 2, lambda: None)
    assert not crawl.called, (
        "Scrapy now closes on its own (scrapy/scrapy#7029 is fixed): "
        "remove recheck_scraper_closing from scrapy_sdi/stopping.py, and this test"
    )
    recheck_scraper_closing(c.engine.scraper)  # let this crawl end
    await crawl
    assert c.stats.get_value("item_scraped_count") == 1


@pytest_twisted.ensureDeferred
async def test_crawl_stop_closes_the_crawl_with_its_reason():
    c = crawler(helped=True)
    crawl = c.crawl()
    timeout = reactor.callLater(10, crawl.cancel)
    await crawl
    timeout.cancel()
    assert c.stats.get_value("finish_reason") == "closed_by_pipeline"
    assert c.stats.get_value("item_scraped_count") == 1


class RecordingHandler:
    """A download handler that only records its close (the aiohttp one would leak its sessions)."""

    lazy = False
    closed: list[str] = []

    def __init__(self, crawler: Any = None) -> None:
        pass

    @classmethod
    def from_crawler(cls, crawler: Any) -> RecordingHandler:
        return cls(crawler)

    async def download_request(self, request: Any) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed.append("closed")


class UnusablePipeline:
    """Closes the spider at open, as SDIPipeline does when its buffer cannot be used."""

    helped = False

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Any) -> UnusablePipeline:
        return cls(crawler)

    async def open_spider(self) -> None:
        if self.helped:
            close_handlers_at_close(self.crawler)
        raise CloseSpider("unusable")

    def process_item(self, item: Any) -> Any:
        return item


async def closed_at_open(helped: bool) -> list[str]:
    RecordingHandler.closed = []
    pipeline = type("Pipeline", (UnusablePipeline,), {"helped": helped})
    c = get_crawler(
        StartItemSpider,
        {
            "ITEM_PIPELINES": {pipeline: 100},
            "DOWNLOAD_HANDLERS": {"http": RecordingHandler, "https": None},
            "LOG_LEVEL": "INFO",
        },
    )
    await c.crawl()
    assert c.stats.get_value("finish_reason") == "unusable"
    return RecordingHandler.closed


@pytest_twisted.ensureDeferred
async def test_scrapy_still_leaves_download_handlers_open_when_a_spider_closes_at_open():
    assert await closed_at_open(helped=False) == [], (
        "Scrapy now closes its download handlers when a spider closes at open: remove "
        "close_handlers_at_close from scrapy_sdi/stopping.py and pipeline.py, and this test"
    )


@pytest_twisted.ensureDeferred
async def test_close_handlers_at_close_closes_them_once():
    assert await closed_at_open(helped=True) == ["closed"]
