"""A fleet whose disks do not last, on one PostgreSQL buffer (issue #21): scrapy-redis workers
share a Redis frontier and the buffer; one is killed with kill -9 mid-crawl and its directory
deleted, the others finish, another is killed after them, and `scrapy sdi flush` runs from a
fresh directory.

Real processes only: a private PostgreSQL cluster (tests/support/postgres.py), a private
redis-server, the demo site and the reference API server with filters, all on loopback; each
worker runs from a copy of the example project in a directory of its own. The buffer's tables,
read with a connection of the test's own, and what the reference server stored are the judges.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.support.commands import sdi
from tests.support.pg_fleet import (
    FILTERS,
    Relay,
    buffer_settings,
    excluded,
    pg_owners,
    pg_rows,
)
from tests.support.postgres import PASSWORD
from tests.support.scaleout import (
    FAST_DELIVERY,
    DemoSite,
    RedisServer,
    Worker,
    assert_each_url_once,
    copy_example_project,
    kill_9,
    require,
    started,
    wait_for,
)

START_KEY = "redis_files:start_urls"
QUEUE_KEY = "redis_files:requests"
#: Far beyond the test's length: a row that waited for its lease to run out would never come back.
LEASE_TIMEOUT = "3600"


def _worker(name: str, tmp_path: Path, settings: dict[str, str]) -> Worker:
    """A worker running in a working directory of its own (a copy of the example project);
    its log and stats are kept beside it, so that deleting the directory leaves them."""
    cwd = copy_example_project(tmp_path / name)
    return Worker(name, tmp_path / "logs" / name, settings, cwd=cwd)


@pytest.mark.parametrize(
    ("survivors", "categories"),
    [
        pytest.param(2, 16, id="short", marks=pytest.mark.short_form),
        pytest.param(5, 48, id="long", marks=pytest.mark.slow),
    ],
)
def test_a_fleet_on_one_postgres_buffer_loses_no_result_of_a_worker_killed_with_its_disk(
    sdi_server_factory,
    postgres_db,
    tmp_path: Path,
    cleanup: list,
    survivors: int,
    categories: int,
) -> None:
    """Every result any worker passed on is stored once, the killed workers' included, without
    waiting for SDI_LEASE_TIMEOUT; no result the API's filters exclude is ever submitted.

    Two workers reach the API through relays the test freezes mid-crawl: their requests then
    hang, so rows are in flight, leased to them. The first is killed mid-crawl: only its dead
    session's advisory lock, freed by PostgreSQL as the connection drops, lets the others take
    its rows back before an hour has passed (SDI_LEASE_TIMEOUT). The second lives on until the
    others have finished: they must not take its rows (its owner lives), so they close with
    those left; then it is killed too, and the flush from a fresh directory takes them back at
    once. The API never saw the frozen requests, so anything sent twice shows as a duplicate.
    """
    require(modules=["scrapy_redis", "redis"], executables=["redis-server"])
    server = sdi_server_factory(filters=FILTERS)
    redis = started(cleanup, RedisServer(tmp_path / "redis"))
    site = started(cleanup, DemoSite(categories=categories, files=120))
    relays = [Relay(server.url), Relay(server.url)]
    cleanup.extend(relays)
    common = {
        "REDIS_URL": redis.url,
        **server.settings,
        **buffer_settings(postgres_db.url),
        "SDI_BATCH_SIZE": "20",
        "MAX_IDLE_TIME_BEFORE_CLOSE": "1",
        "CONCURRENT_REQUESTS": "4",
        "DOWNLOAD_DELAY": "0.1",
        **FAST_DELIVERY,
        "SDI_LEASE_TIMEOUT": LEASE_TIMEOUT,
        # the others wait this long at close for the rows the living second victim holds
        "SDI_CLOSE_TIMEOUT": "3",
    }
    # the second victim's close would give its rows back: it must still hold them when killed
    frozen = {"SDI_TIMEOUT": "300", "SDI_CLOSE_TIMEOUT": "120"}
    first, second = (
        _worker(name, tmp_path, {**common, **frozen, "SDI_API_URL": relay.api_url})
        for name, relay in zip(("first-victim", "second-victim"), relays, strict=True)
    )
    others = [_worker(f"w{i}", tmp_path, common) for i in range(1, survivors + 1)]
    cleanup.extend([first, second, *others])
    db = postgres_db.url

    def leased_to(owner: str) -> set[str]:
        return {
            r["id"] for r in pg_rows(db) if r["state"] == "in_flight" and r["lease_owner"] == owner
        }

    redis.client().lpush(START_KEY, json.dumps({"url": site.url}))
    first.start()
    (first_owner,) = wait_for(lambda: pg_owners(db), 60, "the first victim to register")
    queue = redis.client()
    wait_for(
        lambda: queue.zcard(QUEUE_KEY) >= 8 and len(pg_rows(db)) >= 20,
        60,
        "the first victim to queue 8 pages and buffer 20 results",
    )
    # the others start while the first victim waits (SIGSTOP), so that they find work
    os.kill(first.proc.pid, signal.SIGSTOP)
    try:
        before = len(pg_rows(db))
        second.start()
        (second_owner,) = wait_for(
            lambda: [o for o in pg_owners(db) if o != first_owner], 60, "the second to register"
        )
        for worker in others:
            worker.start()
        wait_for(
            lambda: len(pg_owners(db)) == 2 + survivors,
            60,
            "the others to register as lease owners",
        )
        wait_for(lambda: len(pg_rows(db)) >= before + 40, 60, "the others to buffer 40 results")
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    # what the victims send from now on never reaches the API: requests hang, rows in flight
    for relay in relays:
        relay.freeze()
    wait_for(
        lambda: len(leased_to(first_owner)) >= 20 and len(leased_to(second_owner)) >= 10,
        60,
        "the victims to hold rows in flight",
    )
    os.kill(first.proc.pid, signal.SIGSTOP)  # its leases stand still while they are read
    stranded = leased_to(first_owner)
    at_kill = pg_rows(db)
    kill_9(first.proc)
    killed_at = time.monotonic()
    shutil.rmtree(first.cwd)  # its disk does not outlive it
    assert all(w.running for w in others), "a worker ended before the kill"

    wait_for(
        lambda: not any(w.running for w in others), 90 * categories / 16, "the others to finish"
    )
    assert second.running, second.log()[-3000:]
    for worker in others:
        log = worker.log()
        assert worker.proc.returncode == 0, log[-3000:]
        stats = worker.stats()
        assert stats.get("finish_reason") == "finished", log[-3000:]
        assert stats.get("response_received_count", 0) > 0, f"{worker.name} crawled nothing"
        assert "Traceback" not in log, log[-3000:]
        assert PASSWORD not in log  # the database's, in SDI_BUFFER_URL
    # the first victim's rows were taken back at once, the living second victim's never
    done = {r["id"] for r in pg_rows(db) if r["state"] in ("delivered", "filtered")}
    assert stranded <= done, f"{len(stranded - done)} of the dead worker's rows not taken back"
    held = leased_to(second_owner)
    assert held, "the living worker's rows were taken from it"
    assert all(w.stats()["sdi/pending_at_close"] >= len(held) for w in others)

    os.kill(second.proc.pid, signal.SIGSTOP)
    held = leased_to(second_owner)
    kill_9(second.proc)
    second_killed_at = time.monotonic()
    shutil.rmtree(second.cwd)

    fresh = tmp_path / "elsewhere"
    fresh.mkdir()
    flushed = sdi(
        fresh,
        "flush",
        "--timeout",
        "60",
        settings={
            **server.settings,
            **buffer_settings(db),
            **FAST_DELIVERY,
            "SDI_LEASE_TIMEOUT": LEASE_TIMEOUT,
        },
        secret=server.password,
    )
    assert flushed.returncode == 0, flushed.stdout + flushed.stderr
    assert PASSWORD not in flushed.stdout + flushed.stderr
    took = time.monotonic() - killed_at
    assert took < 120, f"{took:.0f}s from the first kill to the end of the flush"
    assert time.monotonic() - second_killed_at < 60
    flushed_n = int(flushed.stdout.split("flush: ", 1)[1].split(" delivered", 1)[0])
    assert flushed_n >= len(held), flushed.stdout

    rows = pg_rows(db)
    assert len(rows) > len(at_kill), "the crawl was over at the kill"
    left = [r for r in rows if r["state"] not in ("delivered", "filtered")]
    assert not left, f"{len(left)} rows not delivered, e.g. {left[:3]}"
    assert {r["id"] for r in at_kill} <= {r["id"] for r in rows}
    stored = server.results()
    urls = assert_each_url_once(stored)
    delivered = {r["url"] for r in rows if r["state"] == "delivered"}
    assert urls == delivered, "what the server stored is not what the buffer says it delivered"
    assert held <= {r["id"] for r in rows if r["state"] == "delivered"}
    # nothing was sent twice: no live worker's lease was taken, and the frozen requests never arrived
    assert server.stats()["duplicates"] == 0
    # the filters excluded some results, and none of those was ever submitted
    filtered = {r["url"] for r in rows if r["state"] == "filtered"}
    assert filtered and all(excluded(u) for u in filtered), sorted(filtered)[:5]
    assert not [u for u in urls if excluded(u)], "a result the filters exclude was submitted"
    assert {r["url"] for r in rows} <= site.expected_urls()
    print(
        f"\nfleet on PostgreSQL: {len(rows)} results passed on, {len(stranded)} in flight to the "
        f"first victim at its kill, {len(held)} to the second, {flushed_n} delivered by the flush, "
        f"{len(filtered)} filtered; {took:.1f}s from the first kill to the flush's end"
    )
