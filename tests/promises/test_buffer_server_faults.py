"""Promise: a buffer on a database server rides out the server's faults. Restarted, its
connections killed or the server frozen mid-crawl, the crawl goes on, its loop keeps turning,
items wait for their commit, and every result is stored exactly once.

The attacks, on a real PostgreSQL server (tests/support/postgres.py) while a crawl's results keep
arriving: ``pg_ctl restart`` (every connection cut, the server down for a moment), then
``pg_terminate_backend`` of the crawl's connections; and the whole server stopped with SIGSTOP
for 3 s, on each of Scrapy's three ways to run, while a call due every 10 ms
(``tests.support.lag.LagProbe``) must never run 100 ms late, neither while the server is frozen
nor as the hundreds of items that waited for it go on at once (the collector's pauses included:
the heap frozen while a crawl runs keeps them short). What the reference server stored
and the rows the test reads from the database with a connection of its own are the judges.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from tests.reliability.harness import PIPELINE_OPEN_LINE, Crawl, wait_until
from tests.support.crawl import FAST_RETRIES, REACTOR_MODES, assert_stored_once
from tests.support.pg_fleet import buffer_settings, pg_rows
from tests.support.postgres import PASSWORD

#: The restart test's results per round, one every PACE seconds: ~5 s of results meeting the faults.
RESULTS, PACE = 1000, 0.005
STALL = 3.0  # seconds the PostgreSQL server is stopped (SIGSTOP)
MAX_LAG_MS = 100
#: The stall test's results, one every STALL_PACE seconds: most arrive while the server is frozen.
STALL_RESULTS, STALL_PACE = 600, 0.002


def settings_for(server, db, **extra):
    return {
        **server.settings,
        **FAST_RETRIES,
        **buffer_settings(db.url),
        "SDI_BATCH_SIZE": 20,
        **extra,
    }


def assert_every_row_delivered_once(db, expected: int) -> None:
    """The buffer holds ``expected`` rows, one per URL, every one delivered."""
    rows = pg_rows(db.url)
    assert Counter(r["state"] for r in rows) == {"delivered": expected}
    assert len({r["url"] for r in rows}) == expected


@pytest.mark.parametrize(
    "rounds",
    [
        pytest.param(1, id="short", marks=pytest.mark.short_form),
        pytest.param(4, id="long", marks=pytest.mark.slow),
    ],
)
def test_a_restarted_database_and_a_killed_connection_lose_nothing_and_store_nothing_twice(
    sdi_server, postgres_db, tmp_path, rounds
):
    """Each round: a restart once 200 more results are buffered, a kill of the crawl's
    connections once 400 more are; RESULTS per round arrive meanwhile."""
    results = RESULTS * rounds
    crawl = Crawl(
        tmp_path / "crawl",
        settings_for(sdi_server, postgres_db),
        {"n": results, "pace": PACE},
        spider="PacedSpider",
    )
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        for k in range(rounds):
            start = k * RESULTS
            wait_until(
                lambda s=start: len(pg_rows(postgres_db.url)) >= s + 200, "200 more buffered"
            )
            postgres_db.server.restart()  # pg_ctl restart -m fast: the crawl's connections are cut
            assert crawl.alive, crawl.tail()
            wait_until(
                lambda s=start: len(pg_rows(postgres_db.url)) >= s + 600, "400 more buffered"
            )
            assert postgres_db.terminate() >= 1, "the crawl had no connection to kill"
        assert len(pg_rows(postgres_db.url)) < results, "the results had all arrived"
        result = crawl.finish(timeout=120 * rounds)
    finally:
        crawl.kill()
    assert result.returncode == 0, result.log[-3000:]
    stats = result.stats
    assert stats["finish_reason"] == "finished", stats
    assert stats["item_scraped_count"] == results, stats
    assert stats.get("sdi/items_unbuffered", 0) == 0, stats
    assert stats["sdi/pending_at_close"] == 0, stats
    assert_stored_once(sdi_server, results)
    assert_every_row_delivered_once(postgres_db, results)
    assert "Traceback" not in result.log, result.log[-3000:]
    # the items that waited are said to, with the database's own reason, its password masked
    waited = [
        line for line in result.log.splitlines() if "results wait and will be retried" in line
    ]
    assert waited, result.log[-3000:]
    assert all("PostgreSQL at" in line and ":***@" in line for line in waited), waited
    assert "stores results again" in result.log, result.log[-3000:]
    assert PASSWORD not in result.log


@pytest.mark.parametrize("mode", REACTOR_MODES)
def test_a_frozen_database_never_blocks_the_loop_and_everything_is_delivered_after(
    sdi_server, postgres_db, tmp_path, mode
):
    settings = settings_for(
        sdi_server,
        postgres_db,
        **REACTOR_MODES[mode],
        EXTENSIONS=json.dumps(
            {
                "tests.support.statsdump.StatsDump": 0,
                "scrapy_sdi.SDIStatus": 500,
                "tests.support.lag.LagProbe": 0,
            }
        ),
    )
    crawl = Crawl(
        tmp_path / "crawl",
        settings,
        {"n": STALL_RESULTS, "pace": STALL_PACE},
        spider="PacedSpider",
    )
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        wait_until(lambda: len(pg_rows(postgres_db.url)) >= 50, "50 results buffered")
        try:
            postgres_db.server.pause()
            # the rest arrives within the stall (STALL_RESULTS * STALL_PACE < STALL) and waits
            # for its commit: the crawl cannot have ended
            time.sleep(STALL)
            assert crawl.alive, crawl.tail()
        finally:
            postgres_db.server.resume()
        result = crawl.finish(timeout=120)
    finally:
        crawl.kill()
    assert result.returncode == 0, result.log[-3000:]
    stats = result.stats
    assert stats["lag/ticks"] > STALL / 0.01 / 2, stats  # the probe ran through the stall
    print(
        f"\n{mode}: the loop ran at most {stats['lag/max_ms']:.0f} ms late, "
        f"{stats['lag/max_ms_beside_gc']:.0f} ms beside the collector's pauses "
        f"(the longest {stats['lag/gc_max_ms']:.0f} ms)"
    )
    assert stats["lag/max_ms"] < MAX_LAG_MS, (
        f"the loop ran {stats['lag/max_ms']:.0f} ms late while the database was frozen or after "
        f"(of it, the garbage collector's longest pause: {stats['lag/gc_max_ms']:.0f} ms)"
    )
    assert stats["sdi/pending_at_close"] == 0, stats
    assert stats.get("sdi/items_unbuffered", 0) == 0, stats
    assert_stored_once(sdi_server, STALL_RESULTS)
    assert_every_row_delivered_once(postgres_db, STALL_RESULTS)
    assert "Traceback" not in result.log, result.log[-3000:]
