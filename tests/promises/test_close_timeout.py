"""Promise: closing takes no longer than SDI_CLOSE_TIMEOUT, whatever the API does, and what is
left stays pending, is counted in sdi/pending_at_close, and is delivered by the next run.

The attack: once the crawl has opened (logged in, filters loaded), the API goes down, turns
slower than SDI_TIMEOUT, or throttles with a Retry-After of an hour; then the rest of the results
arrive and the spider closes. The close is timed from the crawl's own log (Scrapy's "Closing
spider" line to its "Spider closed" line), with the time of each line to the millisecond.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.reliability.harness import PIPELINE_OPEN_LINE, Crawl
from tests.support.closing import TIMED_LOG_FORMAT, close_seconds
from tests.support.crawl import FAST_RETRIES, run_crawl
from tests.support.pg_fleet import buffer_settings, pg_rows

CLOSE_TIMEOUT = 2.0
#: What a close may add to SDI_CLOSE_TIMEOUT: writing what is left, closing connections, Scrapy's own close.
SLACK = 1.5
RESULTS = 200


def go_down(server) -> None:
    server.stop()


def turn_slow(server) -> None:
    server.set_faults(latency=60)  # beyond SDI_TIMEOUT (30 s by default) and the close timeout


def throttle(server) -> None:
    server.set_faults(rate_limit_rate=1.0, retry_after=3600)


def recover(server) -> None:
    if not server.running:
        server.start()
    server.set_faults(latency=0, rate_limit_rate=0.0)


@pytest.mark.parametrize(
    "fault",
    [go_down, turn_slow, throttle],
    ids=["down", "slower than SDI_TIMEOUT", "Retry-After 1 h"],
)
def test_close_keeps_its_timeout_and_the_next_run_delivers_the_rest(sdi_server, tmp_path, fault):
    settings = {
        **sdi_server.settings,
        **FAST_RETRIES,
        "SDI_TIMEOUT": 30,
        "SDI_LEASE_TIMEOUT": 60,
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        "SDI_BATCH_SIZE": 20,
        "SDI_CRAWLER_NAME": "closing",
        "SDI_CLOSE_TIMEOUT": CLOSE_TIMEOUT,
        "LOG_FORMAT": TIMED_LOG_FORMAT,
    }
    crawl = Crawl(tmp_path / "first", settings, {"n": RESULTS}, gates=1)
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        fault(sdi_server)
        crawl.open_gate()  # the second half of the results meets the fault
        first = crawl.finish(timeout=120)
    finally:
        crawl.kill()
    assert first.returncode == 0, first.log[-3000:]
    took = close_seconds(first.log)
    assert took <= CLOSE_TIMEOUT + SLACK, (
        f"the close took {took:.1f}s with SDI_CLOSE_TIMEOUT = {CLOSE_TIMEOUT:g}"
    )
    buffered, left = first.stats["sdi/items_buffered"], first.stats["sdi/pending_at_close"]
    assert left > 0 and left == buffered - first.stats["sdi/items_delivered"], first.stats

    recover(sdi_server)
    workdir = tmp_path / "next"
    workdir.mkdir()
    nxt = run_crawl(workdir, {**settings, "SDI_CLOSE_TIMEOUT": 30}, {"n": 0})
    assert nxt.returncode == 0, nxt.log[-3000:]
    assert nxt.stats["sdi/pending_at_close"] == 0, nxt.log[-3000:]
    stored = Counter(r["url"] for r in sdi_server.results())
    assert len(stored) == buffered and max(stored.values()) == 1


def test_a_close_on_a_database_server_counts_exactly_what_is_left(
    sdi_server, postgres_db, tmp_path
):
    """The API down at close on a PostgreSQL buffer (its calls on a thread): the close keeps its
    timeout and still counts what is left from the database, blaming the API, not the buffer."""
    settings = {
        **sdi_server.settings,
        **FAST_RETRIES,
        **buffer_settings(postgres_db.url),
        "SDI_TIMEOUT": 30,
        "SDI_LEASE_TIMEOUT": 60,
        "SDI_BATCH_SIZE": 20,
        "SDI_CRAWLER_NAME": "closing",
        "SDI_CLOSE_TIMEOUT": CLOSE_TIMEOUT,
        "LOG_FORMAT": TIMED_LOG_FORMAT,
    }
    crawl = Crawl(tmp_path / "first", settings, {"n": RESULTS}, gates=1)
    try:
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE, timeout=60), crawl.tail()
        go_down(sdi_server)
        crawl.open_gate()
        first = crawl.finish(timeout=120)
    finally:
        crawl.kill()
    assert first.returncode == 0, first.log[-3000:]
    took = close_seconds(first.log)
    assert took <= CLOSE_TIMEOUT + SLACK, (
        f"the close took {took:.1f}s with SDI_CLOSE_TIMEOUT = {CLOSE_TIMEOUT:g}"
    )
    waiting = [r for r in pg_rows(postgres_db.url) if r["state"] in ("pending", "in_flight")]
    left = first.stats["sdi/pending_at_close"]
    assert left > 0 and left == len(waiting), (left, len(waiting))
    assert "did not answer" not in first.log, first.log[-3000:]
    assert f"{left} results are still pending in postgresql://sdi:***@" in first.log

    recover(sdi_server)
    workdir = tmp_path / "next"
    workdir.mkdir()
    nxt = run_crawl(workdir, {**settings, "SDI_CLOSE_TIMEOUT": 30}, {"n": 0})
    assert nxt.returncode == 0, nxt.log[-3000:]
    assert nxt.stats["sdi/pending_at_close"] == 0, nxt.log[-3000:]
    stored = Counter(r["url"] for r in sdi_server.results())
    assert len(stored) == RESULTS and max(stored.values()) == 1
