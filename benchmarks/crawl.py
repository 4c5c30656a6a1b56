"""One benchmark crawl in its own process; ``benchmarks/run.py`` starts one per variant and round.

    python benchmarks/crawl.py VARIANT --items N --out RESULT.json [-s NAME=VALUE ...]
                               [--offset K] [--profile PROFILE.html] [--cprofile STATS]

VARIANT is ``none`` (no pipeline), ``noop`` (a pipeline returning the item), ``sdi``
(scrapy_sdi.SDIPipeline; point it at the API with -s SDI_...), ``feed`` (FEEDS to the JSON lines
file named by -s BENCH_FEED_PATH) or ``naive`` (one blocking urllib POST per result, to the API
named by the SDI_ settings). The spider yields N results from the callback of one local ``data:`` response.
The result file holds the times recorded by the ``Timer`` extension and the crawl's stats.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import scrapy
from scrapy import signals
from scrapy.crawler import AsyncCrawlerProcess
from scrapy.settings import Settings

# the checkout's package, not an installed copy: a worktree's benchmark measures its own code
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import scrapy_sdi  # noqa: E402

logger = logging.getLogger(__name__)

VARIANTS = ("none", "noop", "sdi", "feed", "naive")


class SyntheticSpider(scrapy.Spider):
    """Yields ``n`` file results from one local response (a ``data:`` URL): no network, only items.

    Items yielded by a callback are processed CONCURRENT_ITEMS at a time, as in real crawls;
    items yielded by ``start()`` itself would be handed over one per loop turn instead.
    """

    name = "bench"

    def __init__(self, n: str = "1000", offset: str = "0", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n, self.offset = int(n), int(offset)

    async def start(self):
        yield scrapy.Request("data:,bench", callback=self.parse_results)

    def parse_results(self, response):
        for i in range(self.offset, self.offset + self.n):
            yield {
                "url": f"https://files.example.com/f/{i}/file{i}.mp3",
                "referrer": "https://example.com/list",
                "description": f"sample {i}",
                "uploader": "bench",
            }


class NoopPipeline:
    """The baseline: the cheapest pipeline there is."""

    def process_item(self, item: Any) -> Any:
        return item


class NaivePostPipeline:
    """What a first client does: one blocking HTTP POST per result, nothing kept on disk."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        self.token = ""

    @classmethod
    def from_crawler(cls, crawler: Any) -> NaivePostPipeline:
        get = crawler.settings.get
        return cls(get("SDI_API_URL"), get("SDI_USERNAME"), get("SDI_PASSWORD"))

    def open_spider(self) -> None:
        self.token = self._post(
            "/auth/token", {"username": self.username, "password": self.password}
        )["access_token"]

    def process_item(self, item: Any) -> Any:
        result = {
            "id": uuid.uuid4().hex,
            "url": item["url"],
            "filename": item["url"].rpartition("/")[2],
        }
        result.update((k, v) for k, v in item.items() if k != "url")
        self._post("/crawler-results", {"crawler": "bench", "results": [result]})
        return item

    def _post(self, path: str, body: Any) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


class Timer:
    """Records when the spider opened, went idle and closed (after every pipeline's close_spider)."""

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler
        self.times: dict[str, float] = {}
        self.delivered_at_idle: int | None = None

    @classmethod
    def from_crawler(cls, crawler: Any) -> Timer:
        timer = cls(crawler)
        crawler.signals.connect(timer.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(timer.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(timer.spider_closed, signal=signals.spider_closed)
        _TIMERS.append(timer)
        return timer

    def spider_opened(self) -> None:
        self.times["opened"] = time.perf_counter()

    def spider_idle(self) -> None:
        if "idle" not in self.times:
            self.times["idle"] = time.perf_counter()
            self.delivered_at_idle = self.crawler.stats.get_value("sdi/items_delivered", 0)

    def spider_closed(self) -> None:
        self.times["closed"] = time.perf_counter()


_TIMERS: list[Timer] = []


def build_settings(variant: str, overrides: list[str]) -> Settings:
    settings = Settings()
    settings.set("LOG_LEVEL", "INFO")
    settings.set("TELNETCONSOLE_ENABLED", False)
    settings.set("EXTENSIONS", {Timer: 0})
    for pair in overrides:
        name, _, value = pair.partition("=")
        settings.set(name, _value(value), priority="cmdline")
    if variant == "noop":
        settings.set("ITEM_PIPELINES", {NoopPipeline: 800})
    elif variant == "sdi":
        settings.set("ITEM_PIPELINES", {"scrapy_sdi.SDIPipeline": 800})
    elif variant == "feed":
        settings.set(
            "FEEDS", {settings["BENCH_FEED_PATH"]: {"format": "jsonlines", "overwrite": True}}
        )
    elif variant == "naive":
        settings.set("ITEM_PIPELINES", {NaivePostPipeline: 800})
    return settings


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def crawl(variant: str, items: int, offset: int, overrides: list[str]) -> dict[str, Any]:
    process = AsyncCrawlerProcess(build_settings(variant, overrides), install_root_handler=True)
    crawler = process.create_crawler(SyntheticSpider)
    started, cpu_started = time.perf_counter(), _cpu()
    process.crawl(crawler, n=str(items), offset=str(offset))
    process.start()
    finished, cpu = time.perf_counter(), _cpu() - cpu_started
    timer = _TIMERS[-1]
    times = {name: at - started for name, at in timer.times.items()}
    stats = {k: v for k, v in crawler.stats.get_stats().items() if isinstance(v, (int, float, str))}
    return {
        "variant": variant,
        "items": items,
        "seconds": times.get("closed", finished - started),  # start of the crawl to spider_closed
        "times": times,
        "delivered_at_idle": timer.delivered_at_idle,
        "stats": stats,
        "cpu_seconds": cpu,  # this process only, from the start of the crawl: immune to other load
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ok": not process.bootstrap_failed and "closed" in timer.times,
        "package": str(Path(scrapy_sdi.__file__).parent),  # the code measured
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("-s", dest="settings", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--profile", help="write a pyinstrument HTML profile of the crawl here")
    parser.add_argument(
        "--cprofile",
        help="write cProfile stats of the crawl here, and the top functions to STATS.txt",
    )
    args = parser.parse_args()
    if args.cprofile:
        import cProfile
        import io
        import pstats

        cprofiler = cProfile.Profile()
        cprofiler.enable()
        result = crawl(args.variant, args.items, args.offset, args.settings)
        cprofiler.disable()
        cprofiler.dump_stats(args.cprofile)
        text = io.StringIO()
        stats = pstats.Stats(cprofiler, stream=text)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(40)
        Path(args.cprofile + ".txt").write_text(text.getvalue(), encoding="utf-8")
    elif args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        result = crawl(args.variant, args.items, args.offset, args.settings)
        profiler.stop()
        Path(args.profile).write_text(profiler.output_html(), encoding="utf-8")
        Path(args.profile).with_suffix(".txt").write_text(
            profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8"
        )
    else:
        result = crawl(args.variant, args.items, args.offset, args.settings)
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
