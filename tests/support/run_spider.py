"""``python -m tests.support.run_spider SpiderClass -s K=V -a k=v``: a crawl in its own process."""

from __future__ import annotations

import argparse
import json
import warnings

from scrapy.crawler import AsyncCrawlerProcess, CrawlerProcess
from scrapy.exceptions import ScrapyDeprecationWarning
from scrapy.settings import Settings

from tests.support import spiders


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main() -> int:
    # -W cannot name a category of a module not imported yet, so the filter is set here
    warnings.filterwarnings("error", category=ScrapyDeprecationWarning)
    parser = argparse.ArgumentParser()
    parser.add_argument("spider")
    parser.add_argument("-s", action="append", default=[])
    parser.add_argument("-a", action="append", default=[])
    args = parser.parse_args()
    settings = Settings()
    for pair in args.s:
        key, _, value = pair.partition("=")
        settings.set(key, _value(value), priority="cmdline")
    spider_args = dict(pair.partition("=")[::2] for pair in args.a)
    reactor = settings.get("TWISTED_REACTOR")
    process_cls = (
        CrawlerProcess if reactor and "asyncio" not in str(reactor) else AsyncCrawlerProcess
    )
    process = process_cls(settings)
    process.crawl(getattr(spiders, args.spider), **spider_args)
    process.start()
    return 1 if process.bootstrap_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
