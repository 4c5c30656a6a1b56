"""Spiders the tests crawl: results are yielded straight from start(), no site needed."""

from __future__ import annotations

import scrapy

from tests.support.items import FileAttrs, FileDataclass, FileItem


class SyntheticSpider(scrapy.Spider):
    """Yields ``n`` file results (``-a n=...``), ids stable across runs: url-<offset+i>."""

    name = "synthetic"

    def __init__(
        self, n="100", offset="0", bad_every="0", poison_every="0", big_every="0", **kwargs
    ):
        super().__init__(**kwargs)
        self.n, self.offset = int(n), int(offset)
        self.bad_every, self.poison_every, self.big_every = (
            int(bad_every),
            int(poison_every),
            int(big_every),
        )

    async def start(self):
        for i in range(self.offset, self.offset + self.n):
            if self.bad_every and i % self.bad_every == 0:
                yield {"url": f"not a url {i}", "filename": "bad.bin"}
                continue
            poison = "poison/" if self.poison_every and i % self.poison_every == 0 else ""
            big = self.big_every and i % self.big_every == 0
            yield {
                "url": f"https://files.example.com/f/{poison}{i}/file{i}.mp3",
                "referrer": "https://example.com/list",
                "description": "x" * 20_000 if big else f"sample {i}",
                "uploader": "tester",
            }


class ScriptedSpider(scrapy.Spider):
    """Yields the items of a JSON script (``-a script=PATH``), phase by phase.

    The script is ``{"phases": [{"items": [...], "wait_for": {...}, "done_file": PATH}, ...]}``.
    Before a phase's items, the spider waits (without blocking the reactor) until every stat in
    its ``wait_for`` has the given value, e.g. ``{"sdi/filters_version": "v2"}`` (a number means
    "at least": ``{"sdi/filters_refresh_failures": 1}``). After a phase's
    items, it waits until all of them went through the item pipelines (scraped or dropped), then
    creates ``done_file`` if given. A wait longer than ``timeout`` seconds sets the stat
    ``scripted/wait_timeout`` and ends the script, so a test can tell.
    """

    name = "scripted"

    def __init__(self, script, timeout="30", **kwargs):
        super().__init__(**kwargs)
        import json
        from pathlib import Path

        self.phases = json.loads(Path(script).read_text(encoding="utf-8"))["phases"]
        self.timeout = float(timeout)

    async def start(self):
        from pathlib import Path

        yielded = 0
        for number, phase in enumerate(self.phases):
            wanted = phase.get("wait_for") or {}
            if not await self._wait(
                lambda wanted=wanted: all(
                    _reached(self.crawler.stats.get_value(k), v) for k, v in wanted.items()
                ),
                f"phase {number}: {wanted}",
            ):
                return
            for item in phase.get("items", []):
                yielded += 1
                yield dict(item)
            target = yielded
            if not await self._wait(
                lambda target=target: self._processed() >= target,
                f"phase {number}: {target} items processed",
            ):
                return
            if phase.get("done_file"):
                Path(phase["done_file"]).touch()

    def _processed(self):
        stats = self.crawler.stats
        return (stats.get_value("item_scraped_count") or 0) + (
            stats.get_value("item_dropped_count") or 0
        )

    async def _wait(self, condition, what):
        return await _poll(self, condition, what, self.timeout)


class GatedSpider(SyntheticSpider):
    """SyntheticSpider's ``n`` results in ``phases`` equal parts; part k > 0 is yielded only once the
    file ``gate-k`` exists in ``gates``. A test opens a gate after it has set up a fault, so results
    are surely left to meet the fault, however fast the earlier ones were delivered."""

    name = "gated"

    def __init__(self, gates, phases="2", timeout="120", **kwargs):
        super().__init__(**kwargs)
        from pathlib import Path

        self.gates, self.phases, self.timeout = Path(gates), int(phases), float(timeout)

    async def start(self):
        bounds = [self.offset + self.n * k // self.phases for k in range(self.phases + 1)]
        for k in range(self.phases):
            gate = self.gates / f"gate-{k}"
            if k and not await _poll(self, gate.exists, f"the file {gate}", self.timeout):
                return
            for i in range(bounds[k], bounds[k + 1]):
                yield {
                    "url": f"https://files.example.com/f/{i}/file{i}.mp3",
                    "description": f"sample {i}",
                }


class PacedSpider(SyntheticSpider):
    """SyntheticSpider's ``n`` results, one every ``pace`` seconds (without blocking the reactor):
    results keep arriving through whatever a test does to the crawl meanwhile."""

    name = "paced"

    def __init__(self, pace="0.005", **kwargs):
        super().__init__(**kwargs)
        self.pace = float(pace)

    async def start(self):
        import time

        due = time.monotonic()
        async for item in super().start():
            yield item
            due += self.pace
            await _poll(self, lambda due=due: time.monotonic() >= due, "the next result's time", 60)


async def _poll(spider, condition, what, timeout):
    """Wait without blocking the reactor until ``condition()``; False (and a stat) after ``timeout`` s."""
    import time

    from scrapy.utils.asyncio import call_later
    from scrapy.utils.defer import maybe_deferred_to_future
    from twisted.internet import defer

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            spider.logger.error("%s: gave up waiting for %s", type(spider).__name__, what)
            spider.crawler.stats.set_value("scripted/wait_timeout", what)
            return False
        tick: defer.Deferred[None] = defer.Deferred()
        call_later(0.02, tick.callback, None)  # with or without a Twisted reactor
        await maybe_deferred_to_future(tick)
    return True


def _reached(value, wanted):
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool):
        return isinstance(value, (int, float)) and value >= wanted
    return value == wanted


def _nested(levels):
    value = "leaf"
    for _ in range(levels):
        value = [value]
    return value


#: (what is wrong, the item, the start of the reason the buffer keeps for it)
BAD_RESULTS = [
    ("url missing", lambda i: {"description": f"no url {i}"}, "url is missing"),
    ("url null", lambda i: {"url": None}, "url is missing"),
    ("url not a string", lambda i: {"url": 10_000 + i}, "url is not a string: int"),
    ("url relative", lambda i: {"url": f"/f/{i}.mp3"}, "url is not an absolute http(s) URL"),
    (
        "url not http(s)",
        lambda i: {"url": f"ftp://files.example.com/{i}.mp3"},
        "url is not an absolute http(s) URL",
    ),
    (
        "NUL byte",
        lambda i: {"url": f"https://files.example.com/{i}\x00.mp3"},
        "url contains a NUL byte",
    ),
    (
        "lone surrogate",
        lambda i: {"url": f"https://files.example.com/{i}\ud800.mp3"},
        "url contains a lone surrogate",
    ),
    (
        "6 MB description",
        lambda i: {"url": f"https://files.example.com/big/{i}.mp3", "description": "x" * 6_000_000},
        "description is 6000000 bytes",
    ),
    (
        "not JSON-serializable",
        lambda i: {"url": f"https://files.example.com/obj/{i}.mp3", "thing": object()},
        "extra field 'thing' is not JSON-serializable",
    ),
    (
        "2,000 levels deep",
        lambda i: {"url": f"https://files.example.com/deep/{i}.mp3", "nested": _nested(2000)},
        "extra field 'nested' nests deeper than",
    ),
]


#: Where the "url under another name" kind keeps its URL: valid with SDI_FIELD_MAP = {"link": "url"}.
LINK_URL = "https://files.example.com/link/{i}.mp3"
_NONE_FIELDS = ("url", "filename", "referrer", "description", "uploader", "crawled_at")

#: BAD_RESULTS and more: every item type, wrong types, None fields, a URL under another field name.
BAD_ITEMS = [
    *BAD_RESULTS,
    ("scrapy.Item without url", lambda i: FileItem(description=f"item {i}"), "url is missing"),
    (
        "dataclass with a mailto url",
        lambda i: FileDataclass(url=f"mailto:files{i}@example.com"),
        "url is not an absolute http(s) URL",
    ),
    (
        "attrs with a list as filename",
        lambda i: FileAttrs(url=f"https://files.example.com/attrs/{i}.mp3", filename=["a"]),
        "filename is not a string: list",
    ),
    ("every field None", lambda i: dict.fromkeys(_NONE_FIELDS), "url is missing"),
    (
        "crawled_at not a time",
        lambda i: {"url": f"https://files.example.com/when/{i}.mp3", "crawled_at": "yesterday"},
        "crawled_at is not a valid time",
    ),
    (
        "url under another name",
        lambda i: {"link": LINK_URL.format(i=i), "description": f"linked {i}"},
        "url is missing",
    ),
]


class BadResultsSpider(scrapy.Spider):
    """Yields ``rounds`` rounds of: a good result, then each bad kind followed by a good one.

    The kinds are BAD_RESULTS, or BAD_ITEMS with ``-a kinds=items``. Good results have
    SyntheticSpider's URLs, numbered from 0.
    """

    name = "bad_results"

    def __init__(self, rounds="3", kinds="results", **kwargs):
        super().__init__(**kwargs)
        self.rounds = int(rounds)
        self.kinds = BAD_ITEMS if kinds == "items" else BAD_RESULTS

    async def start(self):
        good = 0
        for round_number in range(self.rounds):
            for kind in [None, *self.kinds]:
                if kind is not None:
                    yield kind[1](round_number)
                yield {
                    "url": f"https://files.example.com/f/{good}/file{good}.mp3",
                    "description": f"sample {good}",
                }
                good += 1


class ListingSpider(scrapy.Spider):
    """``pages`` listing pages (``data:`` URLs, no site needed) fetched at once, each yielding
    ``per_page`` file results from its callback: Scrapy hands a response's items to the pipelines
    CONCURRENT_ITEMS at a time, as with a real listing page. URLs as SyntheticSpider's, numbered
    page by page."""

    name = "listing"

    def __init__(self, pages="5", per_page="100", **kwargs):
        super().__init__(**kwargs)
        self.pages, self.per_page = int(pages), int(per_page)

    async def start(self):
        for page in range(self.pages):
            yield scrapy.Request(f"data:,page{page}", cb_kwargs={"page": page}, dont_filter=True)

    def parse(self, response, page):
        for i in range(page * self.per_page, (page + 1) * self.per_page):
            yield {
                "url": f"https://files.example.com/f/{i}/file{i}.mp3",
                "description": f"sample {i}",
            }
