"""Test-only extension: how late the crawl's loop runs a call due every 10 ms, as stats.

``lag/max_ms`` is the longest delay beyond the interval seen between two ticks, from the spider's
open to its close; ``lag/ticks`` counts the ticks. A loop blocked for 3 s shows ~3000.

A full pass of CPython's cyclic garbage collector holds the interpreter, on whichever thread it
runs, for as long as the heap takes to scan (40-60 ms of CPU for a crawl process after a burst of
allocations, more in wall time on a loaded machine): ``lag/gc_max_ms`` is the longest such pause,
and ``lag/max_ms_beside_gc`` the longest delay once the collector's time in the same interval is
taken off, for promises about what the crawl's own code does to the loop.
"""

from __future__ import annotations

import gc
import time

from scrapy import signals
from scrapy.utils.asyncio import create_looping_call

INTERVAL = 0.01


class LagProbe:
    def __init__(self, crawler):
        self.stats = crawler.stats
        self._last: float | None = None
        self._loop = None
        self._gc_started = 0.0
        self._gc_seconds = 0.0  # the collector's time since the last tick
        self._gc_open = False  # a collection started and its end not yet counted

    @classmethod
    def from_crawler(cls, crawler):
        probe = cls(crawler)
        crawler.signals.connect(probe.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(probe.spider_closed, signal=signals.spider_closed)
        return probe

    def spider_opened(self):
        for key in ("lag/max_ms", "lag/ticks", "lag/gc_max_ms", "lag/max_ms_beside_gc"):
            self.stats.set_value(key, 0)
        gc.callbacks.append(self._gc)
        self._loop = create_looping_call(self._tick)
        self._loop.start(INTERVAL, now=True)

    def _gc(self, phase, info):
        # A callback is Python code: the loop's thread may run a tick before it ends, when the
        # collector ran on another thread (a blocking buffer's). The tick then counts the pause
        # itself (``_gc_open``) and this callback only what is left after it.
        now = time.monotonic()
        if phase == "start":
            self._gc_started = now
            self._gc_open = True
            return
        self._gc_open = False
        took = max(0.0, now - self._gc_started)
        self._gc_seconds += took
        self.stats.max_value("lag/gc_max_ms", round(took * 1000, 1))

    def _tick(self):
        now = time.monotonic()
        if self._gc_open:  # the collector is done (this thread runs), its callback is not yet
            self._gc_seconds += now - self._gc_started
            self.stats.max_value("lag/gc_max_ms", round((now - self._gc_started) * 1000, 1))
            self._gc_started = now
        if self._last is not None:
            late = now - self._last - INTERVAL
            self.stats.max_value("lag/max_ms", round(late * 1000, 1))
            beside = max(0.0, late - self._gc_seconds)
            self.stats.max_value("lag/max_ms_beside_gc", round(beside * 1000, 1))
        self._gc_seconds = 0.0
        self._last = now
        self.stats.inc_value("lag/ticks")

    def spider_closed(self):
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
