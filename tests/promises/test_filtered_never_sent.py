"""Promise: a result the API's filters exclude is never submitted (contract, "Filters").

The filters that count are the ones in force when a result is sent, not when it was found: each
test lets results into the buffer while other filters (or none) were known, then changes the
filters and tries to get those results out — a later run that finds them again, a refresh in the
middle of a throttled crawl, ``scrapy sdi flush``, a kill -9 that leaves them leased, a requeue.
What the reference server received is the judge.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.commands import sdi
from tests.support.crawl import crawl_command, run_crawl
from tests.support.filter_crawls import FILTERS as EXCLUDING
from tests.support.filter_crawls import (
    cases,
    command_settings,
    describe,
    run_during,
    settings,
    wait_until,
    write_script,
)

NOTHING_RELEVANT = [{"id": 90, "field": "url", "kind": "domain", "pattern": "elsewhere.invalid"}]
EVEN = {
    "id": 91,
    "field": "url",
    "kind": "regex",
    "pattern": r"/f/\d*[02468]/",
}  # SyntheticSpider's even results
EVEN_REASON = f"filter 91 (url regex {EVEN['pattern']!r})"


def url(i: int) -> str:
    """SyntheticSpider's (and GatedSpider's) i-th result."""
    return f"https://files.example.com/f/{i}/file{i}.mp3"


def submitted(server) -> dict[str, int]:
    """URL -> how many times the server stored it."""
    counts: dict[str, int] = {}
    for result in server.results():
        counts[result["url"]] = counts.get(result["url"], 0) + 1
    return counts


def rows(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        return db.execute("SELECT url, state, reason FROM results ORDER BY rowid").fetchall()


def filters_version_in_force(tmp_path: Path) -> str | None:
    """The version of the filters the crawl has put in force: it caches them in the buffer's
    meta table right after (the server answering a refresh is earlier: the crawl still has to
    parse and compile the list on a thread)."""
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'filters'").fetchone()
    return None if row is None else orjson.loads(row[0]).get("version")


def rows_once_created(tmp_path: Path) -> list[tuple[str, str, str | None]]:
    """``rows``, or none while the crawl has not yet created the buffer's tables."""
    try:
        return rows(tmp_path)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return []
        raise


def test_results_buffered_unfiltered_stay_unsent_through_a_restart_that_finds_them_again_and_a_flush(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(filters=EXCLUDING)
    server.stop()
    expected = cases()
    items = [item for item, _ in expected]
    down = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CLOSE_TIMEOUT=0.5),
        write_script(tmp_path, [{"items": items}]),
        spider="ScriptedSpider",
    )
    assert down.stats["sdi/pending_at_close"] == len(items), down.log[
        -3000:
    ]  # unfiltered: the API was down
    server.start()
    server.set_faults(
        fail_rate=1.0
    )  # the restart finds everything again, and cannot send before it closes
    again = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CLOSE_TIMEOUT=0.5, SDI_BATCH_SIZE=1),
        write_script(tmp_path, [{"items": items}], "again.json"),
        spider="ScriptedSpider",
    )
    assert again.returncode == 0 and again.stats["sdi/filters_source"] == "api", again.log[-3000:]
    states: dict[str, set[str]] = {}
    for u, state, _r in rows(tmp_path):
        states.setdefault(u, set()).add(state)
    assert not {
        u for u, seen in states.items() if "filtered" in seen and seen & {"pending", "in_flight"}
    }  # no row says "send" beside one that says "never"
    server.set_faults(fail_rate=0.0)
    flush = sdi(
        tmp_path, "flush", settings=command_settings(server, tmp_path), secret=server.password
    )
    assert flush.returncode == 0, flush.stdout + flush.stderr

    excluded = {item["url"]: fid for item, fid in expected if fid is not None}
    assert submitted(server) == {item["url"]: 1 for item, fid in expected if fid is None}
    # no excluded URL is left waiting beside its filtered row, for a later run to send
    left = {(u, state) for u, state, _r in rows(tmp_path) if u in excluded}
    assert {state for _u, state in left} == {"filtered"}
    assert {(u, r) for u, _s, r in rows(tmp_path) if u in excluded} == {
        (u, describe(fid)) for u, fid in excluded.items()
    }


def test_a_refresh_during_throttling_stops_results_already_buffered(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters={"version": "v1", "filters": NOTHING_RELEVANT})
    gates = tmp_path / "gates"
    gates.mkdir()

    def throttle_refresh_heal(proc):
        wait_until(lambda: server.stats()["accepted"] == 20, "the first third delivered", proc)
        server.set_faults(rate_limit_rate=1.0, retry_after=0.3)
        (gates / "gate-1").touch()
        wait_until(
            lambda: (
                sum(1 for _u, state, _r in rows(tmp_path) if state in ("pending", "in_flight"))
                == 20
            ),
            "the second third buffered",
            proc,
        )
        wait_until(
            lambda: server.stats()["batches"].get("429", 0) >= 2, "throttled submissions", proc
        )
        server.set_filters([EVEN], version="v2")
        wait_until(lambda: filters_version_in_force(tmp_path) == "v2", "the crawl to use v2", proc)
        server.set_faults(rate_limit_rate=0.0)
        (gates / "gate-2").touch()

    rc, _stats, log = run_during(
        tmp_path,
        settings(
            server,
            tmp_path,
            SDI_FILTERS_REFRESH_INTERVAL=0.2,
            SDI_CLOSE_TIMEOUT=30,
            SDI_BATCH_SIZE=5,
        ),
        {"n": 60, "phases": 3, "gates": str(gates), "timeout": "60"},
        "GatedSpider",
        throttle_refresh_heal,
    )
    assert rc == 0, log[-3000:]
    sent_before_v2 = {url(i): 1 for i in range(20)}
    assert submitted(server) == sent_before_v2 | {url(i): 1 for i in range(21, 60, 2)}
    assert {u for u, state, r in rows(tmp_path) if state == "filtered" and r == EVEN_REASON} == {
        url(i) for i in range(20, 60, 2)
    }


def test_rows_a_killed_run_left_leased_are_matched_when_the_next_run_takes_them_back(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(
        filters={"version": "v1", "filters": NOTHING_RELEVANT}, latency=2.0, drop_before_rate=1.0
    )
    cmd, env = crawl_command(
        tmp_path,
        settings(server, tmp_path, SDI_BATCH_SIZE=5),
        {"n": 30, "offset": 0},
        "SyntheticSpider",
    )

    def all_buffered_some_in_flight() -> bool:
        states = [state for _u, state, _r in rows_once_created(tmp_path)]
        return len(states) == 30 and "in_flight" in states

    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            all_buffered_some_in_flight,
            "every result buffered, some in flight (each request hangs, then is dropped unstored)",
            proc,
        )
    finally:
        proc.kill()
        proc.wait()
    assert any(state == "in_flight" for _u, state, _r in rows(tmp_path))
    server.set_faults(latency=0.0, drop_before_rate=0.0)
    server.set_filters([EVEN], version="v2")
    restart = run_crawl(tmp_path, settings(server, tmp_path, SDI_CLOSE_TIMEOUT=30), {"n": 0})
    assert restart.returncode == 0 and restart.stats["sdi/pending_at_close"] == 0, restart.log[
        -3000:
    ]
    assert submitted(server) == {url(i): 1 for i in range(1, 30, 2)}
    assert {u for u, state, _r in rows(tmp_path) if state == "filtered"} == {
        url(i) for i in range(0, 30, 2)
    }
    assert restart.stats["sdi/items_filtered"] == 15


@pytest.mark.parametrize("resend", ["flush", "restart"])
def test_a_requeued_rejected_result_the_filters_now_exclude_is_not_resent(
    sdi_server_factory, tmp_path, resend
):
    server = sdi_server_factory(
        filters={"version": "v1", "filters": NOTHING_RELEVANT}, reject_url_pattern=r"/f/\d*[02468]/"
    )
    crawl = run_crawl(tmp_path, settings(server, tmp_path), {"n": 20})
    assert crawl.stats["sdi/items_rejected"] == 10, crawl.log[-3000:]
    server.set_faults(reject_url_pattern="")
    server.set_filters([EVEN], version="v2")
    requeue = sdi(
        tmp_path,
        "requeue",
        "--state",
        "rejected",
        settings=command_settings(server, tmp_path),
        secret=server.password,
    )
    assert requeue.returncode == 0, requeue.stdout + requeue.stderr
    if resend == "flush":
        done = sdi(
            tmp_path, "flush", settings=command_settings(server, tmp_path), secret=server.password
        )
        assert done.returncode == 0, done.stdout + done.stderr
    else:
        restart = run_crawl(tmp_path, settings(server, tmp_path), {"n": 0})
        assert restart.returncode == 0, restart.log[-3000:]
    assert (
        server.stats()["rejected"] == 10
    )  # the excluded results were submitted only before v2 existed
    assert submitted(server) == {url(i): 1 for i in range(1, 20, 2)}
    assert {(u, r) for u, state, r in rows(tmp_path) if state == "filtered"} == {
        (url(i), EVEN_REASON) for i in range(0, 20, 2)
    }
