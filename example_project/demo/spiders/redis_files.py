"""The "files" spider as a scrapy-redis cluster member: many workers, one crawl.

Every worker runs the same command; the crawl is shared through redis::

    scrapy crawl redis_files -s REDIS_URL=redis://127.0.0.1:6379/0 \\
        -s SDI_BUFFER_PATH=/var/lib/sdi/worker-1.db
    redis-cli lpush redis_files:start_urls '{"url": "http://127.0.0.1:8751/"}'

A worker pops start URLs from ``redis_files:start_urls`` (JSON ``{"url": ...}``); every page it
discovers goes into the shared request queue (``redis_files:requests``) through the shared
dupefilter (``redis_files:dupefilter``), so each page is crawled by one worker. Each worker
buffers its results in its own SDI buffer and delivers them itself. A worker closes after
``MAX_IDLE_TIME_BEFORE_CLOSE`` seconds without work (0: it waits for start URLs forever).
An idle worker looks for work at Scrapy's engine heartbeat, every 5 s; a busy one continuously.

What a kill -9 costs and why delivery stays exactly once: see docs/scaling.md.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from scrapy import signals
from scrapy_redis.spiders import RedisSpider

from demo.spiders.files import FilesSpider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import scrapy
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class RedisFilesSpider(RedisSpider, FilesSpider):
    """``FilesSpider``'s parsing, with start URLs, queue and dupefilter in redis."""

    name = "redis_files"
    #: Start messages taken per poll: one, so that several workers share a burst of them.
    redis_batch_size = 1
    custom_settings = {  # noqa: RUF012 (Scrapy's documented form)
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        # Keep queue and dupefilter when a worker closes: without this, the first worker to go
        # idle deletes both, under the feet of the workers still crawling.
        "SCHEDULER_PERSIST": True,
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        "MAX_IDLE_TIME_BEFORE_CLOSE": 10,
    }

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: object, **kwargs: object) -> Self:
        spider = super().from_crawler(crawler, *args, **kwargs)
        # scrapy-redis counts idle time from the last time it saw start URLs (or from import
        # time): a worker that had work a moment ago would close at once. Count from the last
        # response instead, so only a worker that really ran out of work closes.
        spider.spider_idle_start_time = int(time.time())
        crawler.signals.connect(spider.response_received, signal=signals.response_received)
        return spider

    def response_received(self) -> None:
        self.spider_idle_start_time = int(time.time())

    async def start(self) -> AsyncIterator[scrapy.Request]:
        # RedisMixin only defines the deprecated start_requests(); the rest of its start URLs
        # are read on spider_idle.
        for request in self.next_requests():
            yield request
