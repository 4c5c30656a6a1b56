"""Promise: a buffer that blocks never blocks the crawl's loop; items wait, nothing is dropped.

The attack: a buffer that declares itself blocking (as a database server's does) is stalled for
3 s mid-crawl by another connection holding its write lock (``BEGIN IMMEDIATE`` on the SQLite
file, under ``tests.support.buffers.BlockingSQLiteBuffer``), while the second half of the
results arrives. A call due every 10 ms (``tests.support.lag.LagProbe``) must never run 100 ms
late, on any of Scrapy's three ways to run; afterwards every result is stored exactly once. And
when the buffer is stuck as the spider closes, the close keeps SDI_CLOSE_TIMEOUT and the next run
delivers what was left.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter

import pytest

from tests.reliability.harness import CLOSING_LINE, PIPELINE_OPEN_LINE, Crawl
from tests.support.closing import TIMED_LOG_FORMAT, close_seconds
from tests.support.crawl import FAST_RETRIES, REACTOR_MODES, assert_stored_once, run_crawl

STALL = 3.0  # seconds the buffer's write lock is held by another connection
MAX_LAG_MS = 100
RESULTS = 400
CLOSE_TIMEOUT = 2.0
#: What a close may add to SDI_CLOSE_TIMEOUT (as in test_close_timeout.py).
SLACK = 1.5


def settings_for(server, tmp_path, mode):
    return {
        **server.settings,
        **FAST_RETRIES,
        **REACTOR_MODES[mode],
        "SDI_BUFFER": "tests.support.buffers.BlockingSQLiteBuffer",
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        "SDI_BATCH_SIZE": 20,
        "EXTENSIONS": json.dumps(
            {
                "tests.support.statsdump.StatsDump": 0,
                "scrapy_sdi.SDIStatus": 500,
                "tests.support.lag.LagProbe": 0,
            }
        ),
    }


def hold_write_lock(path):
    """Another connection takes the buffer's write lock, as a long transaction elsewhere would."""
    other = sqlite3.connect(path, isolation_level=None, timeout=30)
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.mark.parametrize("mode", REACTOR_MODES)
def test_a_stalled_blocking_buffer_never_blocks_the_loop_and_nothing_is_lost(
    sdi_server, tmp_path, mode
):
    settings = settings_for(sdi_server, tmp_path, mode)
    crawl = Crawl(tmp_path / "crawl", settings, {"n": RESULTS}, gates=1)
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        other = hold_write_lock(settings["SDI_BUFFER_PATH"])
        crawl.open_gate()  # the second half meets the stalled buffer
        time.sleep(STALL)
        # its items wait for their commit: the crawl cannot have ended
        assert crawl.alive, crawl.tail()
        other.execute("COMMIT")
        other.close()
        result = crawl.finish(timeout=120)
    finally:
        crawl.kill()
    assert result.returncode == 0, result.log[-3000:]
    stats = result.stats
    assert stats["lag/ticks"] > STALL / 0.01 / 2, stats  # the probe ran through the stall
    assert stats["lag/max_ms"] < MAX_LAG_MS, (
        f"the loop ran {stats['lag/max_ms']:.0f} ms late while the buffer was stalled"
    )
    assert stats["sdi/items_delivered"] == RESULTS, stats
    assert stats["sdi/pending_at_close"] == 0, stats
    assert_stored_once(sdi_server, RESULTS)
    assert "Traceback" not in result.log


def test_a_buffer_stuck_at_close_keeps_the_close_timeout_and_the_next_run_delivers_the_rest(
    sdi_server, tmp_path
):
    settings = {
        **settings_for(sdi_server, tmp_path, "asyncio"),
        "SDI_TIMEOUT": 30,
        "SDI_LEASE_TIMEOUT": 60,
        "SDI_CRAWLER_NAME": "closing",
        "SDI_CLOSE_TIMEOUT": CLOSE_TIMEOUT,
        "LOG_FORMAT": TIMED_LOG_FORMAT,
    }
    crawl = Crawl(tmp_path / "first", settings, {"n": 200}, gates=1)
    other = None
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        sdi_server.stop()  # results are left to deliver at close
        crawl.open_gate()
        assert crawl.wait_for_line(CLOSING_LINE, timeout=60), crawl.tail()
        other = hold_write_lock(settings["SDI_BUFFER_PATH"])  # stuck past the close deadline
        first = crawl.finish(timeout=60)
    finally:
        crawl.kill()
        if other is not None:
            other.execute("COMMIT")
            other.close()
    assert first.returncode == 0, first.log[-3000:]
    took = close_seconds(first.log)
    assert took <= CLOSE_TIMEOUT + SLACK, (
        f"the close took {took:.1f}s with SDI_CLOSE_TIMEOUT = {CLOSE_TIMEOUT:g}"
    )
    assert first.stats["sdi/pending_at_close"] > 0, first.stats
    assert first.stats["lag/max_ms"] < MAX_LAG_MS, first.stats

    sdi_server.start()
    workdir = tmp_path / "next"
    workdir.mkdir()
    nxt = run_crawl(workdir, {**settings, "SDI_CLOSE_TIMEOUT": 30}, {"n": 0})
    assert nxt.returncode == 0, nxt.log[-3000:]
    assert nxt.stats["sdi/pending_at_close"] == 0, nxt.log[-3000:]
    stored = Counter(r["url"] for r in sdi_server.results())
    assert len(stored) == 200 and max(stored.values()) == 1
