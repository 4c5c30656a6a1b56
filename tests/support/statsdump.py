"""Test-only extension: writes the crawl's final stats to STATS_DUMP_PATH as JSON."""

from __future__ import annotations

import json

from scrapy import signals


class StatsDump:
    def __init__(self, crawler):
        self.crawler = crawler
        self.path = crawler.settings.get("STATS_DUMP_PATH")

    @classmethod
    def from_crawler(cls, crawler):
        ext = cls(crawler)
        crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
        return ext

    def spider_closed(self, reason):
        if self.path:
            stats = {
                k: v
                for k, v in self.crawler.stats.get_stats().items()
                if isinstance(v, (int, float, str))
            }
            stats["finish_reason"] = reason
            with open(self.path, "w", encoding="utf-8") as f:
                json.dump(stats, f)
