"""The result buffer: one behavioural suite over both built-ins, SQLite specifics, and processes
sharing one SQLite file.

Time is moved with the ``clock`` fixture (it replaces ``scrapy_sdi.buffer.time``), so lease
expiry, release delays and retention are tested without sleeping.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import scrapy_sdi.buffer as buffer_mod
from scrapy_sdi.buffer import (
    DELIVERED,
    FILTERED,
    IN_FLIGHT,
    INVALID,
    PENDING,
    REJECTED,
    SCHEMA_VERSION,
    STATES,
    BufferFileError,
    BufferWriteError,
    Claimed,
    Lease,
    MemoryBuffer,
    Row,
    SQLiteBuffer,
)
from tests.support.buffers import schema_1_buffer, schema_2_buffer

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "support" / "buffer_worker.py"
LEASE = 0.05  # seconds; expiry is reached by moving the clock, never by sleeping


# -- fixtures and helpers ---------------------------------------------------------------------


class Clock:
    """Stands in for the ``time`` module inside scrapy_sdi.buffer (only ``time()`` is used)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(buffer_mod, "time", c)
    return c


@pytest.fixture(params=["sqlite", "memory"])
def buf(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock):
    b = SQLiteBuffer(tmp_path / "b.db") if request.param == "sqlite" else MemoryBuffer()
    yield b
    b.close()


@pytest.fixture
def sqlite_buf(tmp_path: Path, clock: Clock):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def row(id_: str, url: str | None = None, crawler: str = "c1", state: str = PENDING, reason: str | None = None) -> Row:
    return Row(id_, crawler, url or f"https://example.com/{id_}", f'{{"id": "{id_}"}}'.encode(), state, reason)


def ids(claimed: list[Claimed]) -> list[str]:
    return [c.id for c in claimed]


def by_id(b, state: str, crawler: str | None = None) -> dict[str, dict]:
    return {r["id"]: r for r in b.export(state, crawler)}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


# -- enqueue and dedup ------------------------------------------------------------------------


def test_enqueue_returns_one_stored_flag_per_row(buf):
    assert buf.enqueue([row("a"), row("b"), row("c")], dedup=True) == [True, True, True]
    assert buf.enqueue([], dedup=True) == []
    assert nonzero(buf.counts()) == {PENDING: 3}
    assert [r["id"] for r in buf.export(PENDING)] == ["a", "b", "c"]


@pytest.mark.parametrize("seen_state", [PENDING, IN_FLIGHT, DELIVERED, REJECTED])
def test_dedup_skips_url_already_seen_in_state(buf, seen_state):
    url = "https://example.com/page"
    assert buf.enqueue([row("first", url)], dedup=True) == [True]
    if seen_state != PENDING:
        assert ids(buf.claim("c1", "o", 10, 60)) == ["first"]
    if seen_state == DELIVERED:
        buf.ack({"first": "accepted"}, {})
    elif seen_state == REJECTED:
        buf.ack({}, {"first": "schema"})
    assert buf.counts()[seen_state] == 1

    assert buf.enqueue([row("again", url), row("other")], dedup=True) == [False, True]
    assert "again" not in {r["id"] for s in STATES for r in buf.export(s)}
    assert sum(buf.counts().values()) == 2


def test_dedup_within_one_call(buf):
    url = "https://example.com/twice"
    assert buf.enqueue([row("a", url), row("b"), row("c", url)], dedup=True) == [True, True, False]
    assert sorted(r["id"] for r in buf.export(PENDING)) == ["a", "b"]


def test_dedup_is_per_crawler(buf):
    url = "https://example.com/shared"
    assert buf.enqueue([row("a", url, crawler="c1"), row("b", url, crawler="c2")], dedup=True) == [True, True]
    assert buf.enqueue([row("c", url, crawler="c3")], dedup=True) == [True]
    assert buf.enqueue([row("d", url, crawler="c2")], dedup=True) == [False]
    assert buf.counts("c1")[PENDING] == buf.counts("c2")[PENDING] == buf.counts("c3")[PENDING] == 1


def test_no_dedup_when_disabled(buf):
    url = "https://example.com/same"
    assert buf.enqueue([row("a", url)], dedup=False) == [True]
    assert buf.enqueue([row("b", url), row("c", url)], dedup=False) == [True, True]
    assert buf.counts()[PENDING] == 3


def test_filtered_and_invalid_rows_do_not_count_as_seen(buf):
    url = "https://example.com/f"
    flags = buf.enqueue(
        [row("f1", url, state=FILTERED, reason="f"), row("f2", url, state=FILTERED, reason="f"), row("i1", url, state=INVALID, reason="i")],
        dedup=True,
    )
    assert flags == [True, True, True]
    assert buf.enqueue([row("p", url)], dedup=True) == [True]
    assert nonzero(buf.counts()) == {PENDING: 1, FILTERED: 2, INVALID: 1}


@pytest.mark.parametrize("seen_state", [PENDING, DELIVERED])
def test_a_filtered_row_for_a_url_already_buffered_is_skipped_like_a_duplicate(buf, seen_state):
    """Else a pending row and a filtered row would say opposite things of one URL."""
    url = "https://example.com/f"
    buf.enqueue([row("p", url)], dedup=True)
    if seen_state == DELIVERED:
        buf.claim("c1", "o", 10, 60)
        buf.ack({"p": "accepted"}, {})
    assert buf.enqueue([row("f", url, state=FILTERED, reason="f"), row("g", state=FILTERED, reason="f")], dedup=True) == [False, True]
    assert buf.enqueue([row("f2", url, state=FILTERED, reason="f")], dedup=False) == [True]  # dedup off: kept
    assert nonzero(buf.counts()) == {seen_state: 1, FILTERED: 2}


def test_filtered_and_invalid_rows_are_kept_counted_and_never_claimed(buf, clock):
    buf.enqueue(
        [
            row("f", state=FILTERED, reason="drop: robots"),
            row("i", state=INVALID, reason="missing field 'title'"),
            row("p"),
        ],
        dedup=True,
    )
    assert nonzero(buf.counts()) == {PENDING: 1, FILTERED: 1, INVALID: 1}
    assert ids(buf.claim("c1", "o", 10, 60, ignore_ready_at=True)) == ["p"]
    buf.ack({"p": "accepted"}, {})
    clock.advance(3600)
    assert buf.claim("c1", "o", 10, 60, ignore_ready_at=True) == []
    assert buf.requeue(PENDING) == 0
    assert by_id(buf, FILTERED)["f"]["reason"] == "drop: robots"
    assert by_id(buf, INVALID)["i"]["reason"] == "missing field 'title'"
    assert buf.counts()[FILTERED] == buf.counts()[INVALID] == 1


# -- claim ------------------------------------------------------------------------------------


def test_claim_returns_oldest_first_at_most_limit(buf):
    buf.enqueue([row(f"r{i}") for i in range(7)], dedup=True)
    first = buf.claim("c1", "o", 3, 60)
    assert ids(first) == ["r0", "r1", "r2"]
    assert all(isinstance(c, Claimed) and c.attempts == 0 for c in first)
    assert first[0].payload == b'{"id": "r0"}'
    assert ids(buf.claim("c1", "o", 3, 60)) == ["r3", "r4", "r5"]
    assert ids(buf.claim("c1", "o", 3, 60)) == ["r6"]
    assert buf.claim("c1", "o", 3, 60) == []


def test_claim_keeps_enqueue_order_across_calls_and_interleaved_crawlers(buf):
    buf.enqueue([row("a1"), row("b1", crawler="c2"), row("a2")], dedup=True)
    buf.enqueue([row("b2", crawler="c2"), row("a3")], dedup=True)
    assert ids(buf.claim("c1", "o", 10, 60)) == ["a1", "a2", "a3"]
    assert ids(buf.claim("c2", "o", 10, 60)) == ["b1", "b2"]


def test_claim_only_the_given_crawler(buf):
    buf.enqueue([row("a", crawler="c1"), row("b", crawler="c2")], dedup=True)
    assert buf.claim("nobody", "o", 10, 60) == []
    assert ids(buf.claim("c2", "o", 10, 60)) == ["b"]
    assert buf.counts("c1") == {**dict.fromkeys(STATES, 0), PENDING: 1}
    assert buf.counts("c2") == {**dict.fromkeys(STATES, 0), IN_FLIGHT: 1}


def test_claimed_rows_are_in_flight_and_not_claimed_again_until_lease_expires(buf, clock):
    buf.enqueue([row("a"), row("b")], dedup=True)
    assert ids(buf.claim("c1", "o1", 1, LEASE)) == ["a"]
    assert nonzero(buf.counts()) == {PENDING: 1, IN_FLIGHT: 1}
    assert [r["id"] for r in buf.export(IN_FLIGHT)] == ["a"]
    assert ids(buf.claim("c1", "o2", 10, LEASE)) == ["b"]
    clock.advance(LEASE / 2)
    assert buf.claim("c1", "o3", 10, LEASE) == []
    assert buf.claim("c1", "o3", 10, LEASE, ignore_ready_at=True) == []  # a lease is not a ready_at
    assert buf.counts()[IN_FLIGHT] == 2


def test_expired_lease_is_reclaimed_with_same_id_payload_and_attempts(buf, clock):
    buf.enqueue([row("a")], dedup=True)
    (first,) = buf.claim("c1", "dead-worker", 10, LEASE)
    clock.advance(LEASE * 2)
    (again,) = buf.claim("c1", "next-worker", 10, 60)
    assert again == first == Claimed("a", b'{"id": "a"}', 0)
    assert nonzero(buf.counts()) == {IN_FLIGHT: 1}
    clock.advance(LEASE * 2)
    assert buf.claim("c1", "third", 10, 60) == []  # the new lease is 60 s


def test_expired_leases_come_back_oldest_first(buf, clock):
    buf.enqueue([row("a"), row("b"), row("c")], dedup=True)
    assert ids(buf.claim("c1", "dead", 1, LEASE)) == ["a"]
    clock.advance(1)
    assert ids(buf.claim("c1", "o", 3, 60)) == ["a", "b", "c"]


def test_acked_row_is_not_claimed_again_after_its_lease_had_expired(buf, clock):
    """A slow request outlives its lease; a claim (any crawler) puts the row back; the ack then
    arrives. The row is delivered and must not be sent again."""
    buf.enqueue([row("a"), row("z", crawler="c2")], dedup=True)
    assert ids(buf.claim("c1", "slow", 10, LEASE)) == ["a"]
    clock.advance(1)
    assert ids(buf.claim("c2", "other", 10, 60)) == ["z"]  # expiry pass puts "a" back to pending
    buf.ack({"a": "accepted"}, {})
    assert buf.counts("c1") == {**dict.fromkeys(STATES, 0), DELIVERED: 1}
    assert buf.claim("c1", "o", 10, 60) == []
    assert buf.counts("c1")[DELIVERED] == 1
    assert buf.outstanding("c1", clock.now + 1) == 0


# -- rows stored already leased (the delivery loop's hand-off) ----------------------------------


def test_a_lease_stores_the_first_rows_in_flight_and_marks_them(buf, clock):
    rows = [row("f", state=FILTERED, reason="filter 1"), row("a"), row("dup", url="https://example.com/a"), row("b"), row("c")]
    assert buf.enqueue(rows, dedup=True, lease=Lease("me", clock.now + 60, 2)) == [True, True, False, True, True]
    assert [r.state for r in rows] == [FILTERED, IN_FLIGHT, PENDING, IN_FLIGHT, PENDING]  # filtered, dedup'd: never leased
    assert nonzero(buf.counts()) == {FILTERED: 1, IN_FLIGHT: 2, PENDING: 1}
    assert ids(buf.claim("c1", "other", 10, 60)) == ["c"]  # leased rows are not claimed again
    assert buf.outstanding("c1", clock.now + 1) == 3
    buf.ack({"a": "accepted"}, {"b": "bad"})
    assert {r["id"]: r["attempts"] for r in buf.export(DELIVERED)} == {"a": 1}
    assert nonzero(buf.counts()) == {FILTERED: 1, DELIVERED: 1, REJECTED: 1, IN_FLIGHT: 1}


def test_a_leased_row_of_a_dead_process_comes_back_when_its_lease_ends(buf, clock):
    buf.enqueue([row("a"), row("b")], dedup=True, lease=Lease("dead", clock.now + LEASE, 5))
    assert buf.claim("c1", "next", 10, 60) == []
    clock.advance(LEASE * 2)
    assert buf.claim("c1", "next", 10, 60) == [Claimed("a", b'{"id": "a"}', 0), Claimed("b", b'{"id": "b"}', 0)]


def test_a_released_leased_row_is_pending_again_with_one_attempt(buf, clock):
    buf.enqueue([row("a")], dedup=True, lease=Lease("me", clock.now + 60, 1))
    buf.release(["a"], "503", delay=0)
    assert [(c.id, c.attempts) for c in buf.claim("c1", "o", 10, 60)] == [("a", 1)]


def test_a_lease_of_no_rows_and_no_lease_store_pending(buf, clock):
    rows = [row("a"), row("b")]
    buf.enqueue(rows[:1], dedup=True, lease=Lease("me", clock.now + 60, 0))
    buf.enqueue(rows[1:], dedup=True)
    assert [r.state for r in rows] == [PENDING, PENDING]
    assert ids(buf.claim("c1", "o", 10, 60)) == ["a", "b"]


def test_sqlite_leased_rows_follow_earlier_rows_in_order(sqlite_buf, clock):
    """Rowids are given by enqueue: they must keep counting from what the file already holds."""
    sqlite_buf.enqueue([row("a"), row("b")], dedup=True)
    sqlite_buf.enqueue([row("c"), row("d")], dedup=True, lease=Lease("me", clock.now + LEASE, 2))
    clock.advance(LEASE * 2)
    assert ids(sqlite_buf.claim("c1", "o", 10, 60)) == ["a", "b", "c", "d"]


# -- ack and release --------------------------------------------------------------------------


def test_ack_records_delivered_and_rejected(buf):
    buf.enqueue([row("a"), row("b"), row("c"), row("d")], dedup=True)
    assert len(buf.claim("c1", "o", 10, 60)) == 4
    buf.ack({"a": "accepted", "b": "duplicate"}, {"c": "422: title missing", "d": None})
    assert nonzero(buf.counts()) == {DELIVERED: 2, REJECTED: 2}
    delivered = by_id(buf, DELIVERED)
    assert {k: v["outcome"] for k, v in delivered.items()} == {"a": "accepted", "b": "duplicate"}
    assert all(v["attempts"] == 1 and v["delivered_at"] is not None for v in delivered.values())
    rejected = by_id(buf, REJECTED)
    assert {k: v["reason"] for k, v in rejected.items()} == {"c": "422: title missing", "d": None}
    assert all(v["attempts"] == 1 for v in rejected.values())
    assert buf.claim("c1", "o", 10, 60, ignore_ready_at=True) == []


def test_release_returns_rows_to_pending_with_one_more_attempt_and_a_delay(buf, clock):
    buf.enqueue([row("a"), row("b"), row("c")], dedup=True)
    assert ids(buf.claim("c1", "o", 2, 60)) == ["a", "b"]
    buf.release(["a", "b"], "503 Service Unavailable", delay=30)
    assert nonzero(buf.counts()) == {PENDING: 3}
    pending = by_id(buf, PENDING)
    assert pending["a"]["attempts"] == pending["b"]["attempts"] == 1
    assert pending["a"]["last_error"] == "503 Service Unavailable"
    assert pending["c"]["attempts"] == 0

    assert ids(buf.claim("c1", "o", 10, 60)) == ["c"]  # a and b wait for their delay
    clock.advance(29)
    assert buf.claim("c1", "o", 10, 60) == []
    clock.advance(2)
    again = buf.claim("c1", "o", 10, 60)
    assert [(c.id, c.attempts) for c in again] == [("a", 1), ("b", 1)]


def test_ignore_ready_at_claims_delayed_rows(buf):
    buf.enqueue([row("a")], dedup=True)
    buf.claim("c1", "o", 10, 60)
    buf.release(["a"], "timeout", delay=3600)
    assert buf.claim("c1", "o", 10, 60) == []
    assert [(c.id, c.attempts) for c in buf.claim("c1", "o", 10, 60, ignore_ready_at=True)] == [("a", 1)]


def test_release_zero_delay_is_claimable_at_once(buf):
    buf.enqueue([row("a")], dedup=True)
    buf.claim("c1", "o", 10, 60)
    buf.release(["a"], "boom", delay=0)
    assert ids(buf.claim("c1", "o", 10, 60)) == ["a"]


def test_release_ignores_rows_not_in_flight(buf):
    buf.enqueue([row("a"), row("b")], dedup=True)
    buf.claim("c1", "o", 1, 60)
    buf.ack({"a": "accepted"}, {})
    buf.release(["a", "b"], "late", delay=0)
    assert nonzero(buf.counts()) == {PENDING: 1, DELIVERED: 1}
    assert by_id(buf, DELIVERED)["a"]["attempts"] == 1
    assert by_id(buf, PENDING)["b"]["attempts"] == 0


# -- counts, export, requeue ------------------------------------------------------------------


def test_counts_has_every_state_key(buf):
    assert buf.counts() == dict.fromkeys(STATES, 0)
    assert buf.counts("nobody") == dict.fromkeys(STATES, 0)
    buf.enqueue([row("a"), row("b", crawler="c2"), row("f", state=FILTERED, reason="x")], dedup=True)
    assert set(buf.counts()) == set(STATES)
    assert buf.counts() == {**dict.fromkeys(STATES, 0), PENDING: 2, FILTERED: 1}
    assert buf.counts("c2") == {**dict.fromkeys(STATES, 0), PENDING: 1}


def test_export_yields_rows_of_one_state(buf):
    buf.enqueue(
        [row("a"), row("b", crawler="c2"), row("i", state=INVALID, reason="bad price")],
        dedup=True,
    )
    exported = list(buf.export(PENDING))
    assert [r["id"] for r in exported] == ["a", "b"]
    first = exported[0]
    for key in ("id", "crawler", "url", "state", "attempts", "reason", "payload"):
        assert key in first
    assert (first["crawler"], first["url"], first["state"], first["attempts"], first["reason"]) == (
        "c1",
        "https://example.com/a",
        PENDING,
        0,
        None,
    )
    assert bytes(first["payload"]) == b'{"id": "a"}'
    assert [r["id"] for r in buf.export(PENDING, "c2")] == ["b"]
    (invalid,) = buf.export(INVALID)
    assert (invalid["id"], invalid["reason"], invalid["state"]) == ("i", "bad price", INVALID)
    assert list(buf.export(DELIVERED)) == []


def _two_crawlers_rejected(buf):
    buf.enqueue([row("a1"), row("a2"), row("b1", crawler="c2")], dedup=True)
    buf.claim("c1", "o", 10, 60)
    buf.claim("c2", "o", 10, 60)
    buf.ack({}, {"a1": "r", "a2": "r", "b1": "r"})


def test_requeue_rejected_by_crawler(buf):
    _two_crawlers_rejected(buf)
    assert buf.requeue(REJECTED, crawler="c1") == 2
    assert buf.counts("c1") == {**dict.fromkeys(STATES, 0), PENDING: 2}
    assert buf.counts("c2")[REJECTED] == 1
    pending = by_id(buf, PENDING)
    assert pending["a1"]["reason"] is None and pending["a1"]["attempts"] == 1
    assert ids(buf.claim("c1", "o", 10, 60)) == ["a1", "a2"]
    assert buf.requeue(REJECTED, crawler="c1") == 0


def test_requeue_by_ids(buf):
    _two_crawlers_rejected(buf)
    assert buf.requeue(REJECTED, ids=["a2", "b1", "unknown"]) == 2
    assert sorted(by_id(buf, PENDING)) == ["a2", "b1"]
    assert list(by_id(buf, REJECTED)) == ["a1"]
    assert buf.requeue(REJECTED) == 1
    assert buf.counts()[REJECTED] == 0


def test_invalid_rows_are_not_requeued_as_stored(buf):
    buf.enqueue([row("i", state=INVALID, reason="bad")], dedup=True)
    with pytest.raises(ValueError, match="mapped again"):
        buf.requeue(INVALID)
    assert nonzero(buf.counts()) == {INVALID: 1}


def test_replace_invalid_rewrites_only_rows_still_invalid(buf):
    buf.enqueue([row("i", state=INVALID, reason="bad"), row("j", state=INVALID, reason="bad"),
                 row("f", state=FILTERED, reason="skip")], dedup=True)
    fixed = Row("new-i", "c1", "https://example.com/fixed", b'{"id": "new-i"}')
    still = Row("j", "c1", "https://example.com/j", b"ignored", INVALID, "still bad")
    assert buf.replace_invalid({"i": fixed, "j": still, "f": fixed, "gone": fixed}, dedup=True) == {PENDING: 1, INVALID: 1}
    assert nonzero(buf.counts()) == {PENDING: 1, INVALID: 1, FILTERED: 1}
    assert by_id(buf, INVALID)["j"]["reason"] == "still bad"
    assert bytes(by_id(buf, INVALID)["j"]["payload"]) == b'{"id": "j"}'  # the item's fields stay
    (claimed,) = buf.claim("c1", "o", 10, 60)
    assert claimed == Claimed("new-i", b'{"id": "new-i"}', 0)
    assert buf.replace_invalid({"i": fixed}, dedup=True) == {}  # no longer invalid
    assert [r["id"] for r in buf.export(INVALID, ids=["j", "i"])] == ["j"]


def test_replaced_row_counts_as_seen_for_dedup(buf):
    url = "https://example.com/fixed"
    buf.enqueue([row("i", state=INVALID, reason="bad"), row("k", state=INVALID, reason="bad")], dedup=True)
    assert buf.replace_invalid({"i": row("new-i", url), "k": row("new-k", url)}, dedup=True) == {PENDING: 1, INVALID: 1}
    assert "already buffered" in by_id(buf, INVALID)["k"]["reason"]
    assert buf.enqueue([row("again", url)], dedup=True) == [False]
    assert buf.counts()[PENDING] == 1


# -- outstanding, crawlers, meta, prune -------------------------------------------------------


def test_outstanding_counts_pending_and_in_flight_of_one_crawler(buf, clock):
    buf.enqueue([row("a"), row("b"), row("c"), row("d"), row("x", crawler="c2"), row("f", state=FILTERED, reason="f")], dedup=True)
    later = clock.now + 1
    assert buf.outstanding("c1", later) == 4
    buf.claim("c1", "o", 2, 60)
    assert buf.outstanding("c1", later) == 4
    buf.ack({"a": "accepted"}, {"b": "no"})
    assert buf.outstanding("c1", later) == 2
    assert buf.outstanding("c2", later) == 1
    assert buf.outstanding("nobody", later) == 0


def test_crawlers_with_pending(buf):
    assert buf.crawlers_with_pending() == []
    buf.enqueue([row("a", crawler="c1"), row("b", crawler="c2"), row("f", crawler="c3", state=FILTERED, reason="x")], dedup=True)
    assert sorted(buf.crawlers_with_pending()) == ["c1", "c2"]
    buf.claim("c2", "o", 10, 60)
    assert sorted(buf.crawlers_with_pending()) == ["c1", "c2"]  # in flight still counts
    buf.ack({"b": "accepted"}, {})
    assert buf.crawlers_with_pending() == ["c1"]


def test_meta_round_trip(buf):
    assert buf.get_meta("k") is None
    buf.set_meta("k", "v1")
    buf.set_meta("other", "x")
    assert buf.get_meta("k") == "v1"
    buf.set_meta("k", "v2")
    assert (buf.get_meta("k"), buf.get_meta("other")) == ("v2", "x")


def test_oldest_pending_age(buf, clock):
    assert buf.oldest_pending_age() is None
    buf.enqueue([row("a")], dedup=True)
    clock.advance(10)
    buf.enqueue([row("b", crawler="c2")], dedup=True)
    clock.advance(5)
    assert buf.oldest_pending_age() == pytest.approx(15)
    assert buf.oldest_pending_age("c2") == pytest.approx(5)


def test_prune_forgets_only_delivered_rows_older_than_retention(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("old"), row("old-rejected"), row("new"), row("pending")], dedup=True)
    b.claim("c1", "o", 2, 3600)
    b.ack({"old": "accepted"}, {"old-rejected": "r"})
    clock.advance(5 * 86400)
    b.claim("c1", "o", 1, 3600)
    b.ack({"new": "accepted"}, {})
    clock.advance(1 * 86400)  # "old" delivered 6 days ago, "new" 1 day ago

    assert b.prune(7) == 0
    assert b.prune(2) == 1
    assert sorted(r["id"] for s in STATES for r in b.export(s)) == ["new", "old-rejected", "pending"]
    assert b.prune(2) == 0
    assert b.prune(0.5) == 1
    assert nonzero(b.counts()) == {PENDING: 1, REJECTED: 1}
    # a pruned URL is forgotten: it may be buffered again
    assert b.enqueue([row("old-again", "https://example.com/old")], dedup=True) == [True]


def test_sqlite_prune_takes_the_payloads_along_and_rowids_can_come_back(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("a"), row("b")], dedup=True)
    b.claim("c1", "o", 2, 3600)
    b.ack({"a": "accepted", "b": "accepted"}, {})
    clock.advance(2 * 86400)
    assert b.prune(1) == 2
    assert b._conn.execute("SELECT count(*) FROM payloads").fetchone() == (0,)
    # the next rows take the freed rowids again, with their own payloads
    b.enqueue([row("c", "https://example.com/a")], dedup=True)
    assert [(c.id, c.payload) for c in b.claim("c1", "o", 5, 60)] == [("c", b'{"id": "c"}')]


def test_memory_prune_is_a_no_op(clock):
    b = MemoryBuffer()
    b.enqueue([row("a")], dedup=True)
    b.claim("c1", "o", 1, 60)
    b.ack({"a": "accepted"}, {})
    clock.advance(30 * 86400)
    assert b.prune(1) == 0
    assert b.counts()[DELIVERED] == 1
    assert b.durable is False


# -- SQLite specifics -------------------------------------------------------------------------


def test_sqlite_rows_survive_close_and_reopen(tmp_path, clock):
    path = tmp_path / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue([row("a"), row("b"), row("c"), row("i", state=INVALID, reason="bad")], dedup=True)
    b.claim("c1", "o", 1, 60)
    b.ack({"a": "accepted"}, {})
    b.set_meta("k", "v")
    b.close()

    b2 = SQLiteBuffer(path)
    try:
        assert b2.durable is True
        assert nonzero(b2.counts()) == {PENDING: 2, DELIVERED: 1, INVALID: 1}
        assert by_id(b2, INVALID)["i"]["reason"] == "bad"
        assert by_id(b2, DELIVERED)["a"]["outcome"] == "accepted"
        assert b2.get_meta("k") == "v"
        assert b2.enqueue([row("dup", "https://example.com/a")], dedup=True) == [False]
        assert [(c.id, c.payload) for c in b2.claim("c1", "o", 10, 60)] == [("b", b'{"id": "b"}'), ("c", b'{"id": "c"}')]
    finally:
        b2.close()


def test_sqlite_in_flight_rows_of_a_dead_process_come_back_after_reopen(tmp_path, clock):
    path = tmp_path / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue([row("a")], dedup=True)
    b.claim("c1", "dead", 10, LEASE)
    b.close()
    clock.advance(1)
    b2 = SQLiteBuffer(path)
    try:
        assert [(c.id, c.attempts) for c in b2.claim("c1", "next", 10, 60)] == [("a", 0)]
    finally:
        b2.close()


def test_sqlite_schema_version_is_recorded(sqlite_buf):
    (version,) = sqlite_buf._conn.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION >= 1
    (mode,) = sqlite_buf._conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_sqlite_schema_1_buffer_is_upgraded_with_every_row_and_payload(tmp_path):
    path = tmp_path / "old.db"
    schema_1_buffer(path, [("p1", PENDING, None), ("d", DELIVERED, None), ("r", REJECTED, "bad"), ("p2", PENDING, None)])
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "payload" not in {column for (_, column, *_) in b._conn.execute("PRAGMA table_info(results)")}
        assert [(r["id"], r["payload"]) for r in b.export(REJECTED)] == [("r", b'{"id": "r"}')]
        assert [(c.id, c.payload) for c in b.claim("c1", "o", 10, 60)] == [("p1", b'{"id": "p1"}'), ("p2", b'{"id": "p2"}')]
        assert b.enqueue([row("p1")], dedup=True) == [False]  # what the old file had seen, still seen
    finally:
        b.close()


def test_sqlite_schema_2_buffer_is_upgraded_and_its_rows_count_as_matched_against_no_filters(tmp_path):
    path = tmp_path / "old.db"
    schema_2_buffer(path, [("p1", PENDING, None), ("d", DELIVERED, None), ("f", FILTERED, "filter 1 (url exact 'x')")])
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        assert [r["reason"] for r in b.export(FILTERED)] == ["filter 1 (url exact 'x')"]
        # an older scrapy_sdi matched its rows against nothing delivery can know: they are matched when sent
        assert b.claim("c1", "o", 10, 60) == [Claimed("p1", b'{"id": "p1"}', 0, None)]
        assert b.enqueue([row("p1")], dedup=True) == [False]
    finally:
        b.close()


def test_claim_gives_the_key_of_the_filters_each_row_passed(buf):
    buf.enqueue([Row("a", "c1", "https://e.x/a", b"{}", filters_version="v1"), row("b")], dedup=False)
    assert [(c.id, c.filters_version) for c in buf.claim("c1", "o", 10, 60)] == [("a", "v1"), ("b", None)]


def test_mark_filtered_keeps_waiting_rows_as_filtered_with_the_reason_and_nothing_else(buf, clock):
    buf.enqueue([row("a"), row("b"), row("c"), row("d")], dedup=True)
    buf.claim("c1", "o", 2, 60)  # a, b in flight; c, d pending
    buf.ack({"b": "accepted"}, {})
    buf.mark_filtered({"a": "filter 1 (url exact 'x')", "b": "filter 1 (url exact 'x')", "c": "filter 2 (url glob '*')"})
    assert {r["id"]: r["reason"] for r in buf.export(FILTERED)} == {"a": "filter 1 (url exact 'x')", "c": "filter 2 (url glob '*')"}
    assert nonzero(buf.counts()) == {FILTERED: 2, DELIVERED: 1, PENDING: 1}  # a delivered row stays delivered
    clock.advance(120)  # a's lease would have run out: a filtered row is never claimed again
    assert ids(buf.claim("c1", "o", 10, 60)) == ["d"]
    assert buf.outstanding("c1", clock.now) == 1
    assert buf.enqueue([row("a2", url="https://example.com/a")], dedup=True) == [True]  # filtered is not seen


def test_a_requeued_row_has_passed_no_filters(buf):
    buf.enqueue([Row("a", "c1", "https://e.x/a", b"{}", filters_version="v1")], dedup=False)
    buf.claim("c1", "o", 10, 60)
    buf.mark_filtered({"a": "filter 1 (url exact 'x')"})
    assert buf.requeue(FILTERED) == 1
    assert [(c.id, c.filters_version) for c in buf.claim("c1", "o", 10, 60)] == [("a", None)]


def test_a_buffer_without_mark_filtered_still_never_sends_an_excluded_row(clock):
    class Minimal(MemoryBuffer):
        mark_filtered = buffer_mod.Buffer.mark_filtered  # what a third-party buffer inherits

    b = Minimal()
    b.enqueue([row("a")], dedup=False)
    b.claim("c1", "o", 10, 60)
    b.mark_filtered({"a": "filter 1 (url exact 'x')"})
    assert [(r["id"], r["reason"]) for r in b.export(REJECTED)] == [("a", "excluded by filter 1 (url exact 'x')")]
    assert b.claim("c1", "o", 10, 60, ignore_ready_at=True) == []


def test_sqlite_newer_schema_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "future.db"
    SQLiteBuffer(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert "upgrade" in str(info.value)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1  # left untouched
    conn.close()


def test_sqlite_file_is_owner_only(tmp_path):
    path = tmp_path / "sub" / "dir" / "b.db"
    old = os.umask(0o022)
    try:
        b = SQLiteBuffer(path)
    finally:
        os.umask(old)
    try:
        b.enqueue([row("a")], dedup=True)  # the WAL file exists once something was written
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        b.close()


def test_sqlite_path_that_cannot_be_created_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "b.db"
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert blocker.read_text() == "not a directory"


def test_sqlite_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.db"
    garbage = bytes(range(256)) * 16
    path.write_bytes(garbage)
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_sqlite_outstanding_ignores_rows_created_after_the_cutoff(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("early")], dedup=True)
    cutoff = clock.now
    clock.advance(10)
    b.enqueue([row("late")], dedup=True)
    assert b.outstanding("c1", cutoff) == 1
    assert b.outstanding("c1", clock.now) == 2
    assert b.outstanding("c1", cutoff - 1) == 0


def test_sqlite_enqueue_is_one_transaction(sqlite_buf):
    sqlite_buf.enqueue([row("a")], dedup=False)
    broken = row("c")
    broken.payload = None  # NOT NULL: the whole group fails, nothing of it is stored
    with pytest.raises(BufferWriteError, match="NOT NULL"):
        sqlite_buf.enqueue([row("b"), broken], dedup=False)
    assert [r["id"] for r in sqlite_buf.export(PENDING)] == ["a"]
    assert sqlite_buf.enqueue([row("b")], dedup=False) == [True]  # and the connection still works


def test_sqlite_dedup_large_groups(sqlite_buf):
    n = 1_200  # more than one dedup chunk
    sqlite_buf.enqueue([row(f"a{i}", f"https://example.com/{i}") for i in range(0, n, 2)], dedup=True)
    flags = sqlite_buf.enqueue([row(f"b{i}", f"https://example.com/{i}") for i in range(n)], dedup=True)
    assert flags == [i % 2 == 1 for i in range(n)]
    assert sqlite_buf.counts()[PENDING] == n


# -- the claim query on a big buffer ----------------------------------------------------------


@pytest.fixture(scope="module")
def big_buffer(tmp_path_factory):
    """200,000 pending rows (two crawlers), some already delivered; the claim's query as run."""
    path = tmp_path_factory.mktemp("big") / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue([Row(f"id{i}", "big" if i % 10 else "small", f"u{i}", b"{}") for i in range(200_000)], dedup=False)
    delivered = b.claim("big", "o", 5_000, 60)
    b.ack({c.id: "accepted" for c in delivered}, {})
    statements: list[str] = []
    b._conn.set_trace_callback(statements.append)
    claimed = b.claim("big", "o", 50, 60)
    b._conn.set_trace_callback(None)
    (query,) = [s for s in statements if "'pending'" in s and "LIMIT" in s]  # the rows to lease, oldest first
    plan = [detail for *_, detail in b._conn.execute("EXPLAIN QUERY PLAN " + query)]
    yield b, claimed, plan
    b.close()


def test_claim_on_a_big_buffer_returns_the_oldest(big_buffer):
    b, claimed, _ = big_buffer
    assert len(claimed) == 50
    assert claimed[0].id == "id5556"  # the first 5,000 "big" rows were delivered
    assert b.counts("big")[IN_FLIGHT] == 50


def test_claim_query_is_an_index_search_without_sort(big_buffer):
    _, _, plan = big_buffer
    text = "\n".join(plan)
    assert not any(d.startswith("SCAN results") for d in plan), text
    assert "TEMP B-TREE" not in text, text
    assert any(d.startswith("SEARCH results USING INDEX") for d in plan), text


# -- several processes on one file ------------------------------------------------------------


def _run_workers(argvs: list[list[str]], go: Path, timeout: float = 60) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), *argv], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    go.touch()
    results = []
    try:
        for p, argv in zip(procs, argvs, strict=True):
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        assert "database is locked" not in r.stderr, r.stderr
        assert r.returncode == 0, r.stderr
    return results


def test_processes_claim_each_row_exactly_once(tmp_path):
    path = tmp_path / "shared.db"
    n_rows, n_workers = 3_000, 3
    b = SQLiteBuffer(path)
    b.enqueue([row(f"r{i}") for i in range(n_rows)], dedup=True)
    b.close()

    outs = [tmp_path / f"claimed-{w}.txt" for w in range(n_workers)]
    _run_workers([["claim", str(path), str(out), str(tmp_path / "go"), "c1", f"worker-{w}", "50"] for w, out in enumerate(outs)], tmp_path / "go")

    per_worker = [out.read_text().split() for out in outs]
    every = Counter(i for claimed in per_worker for i in claimed)
    assert set(every) == {f"r{i}" for i in range(n_rows)}
    assert [i for i, n in every.items() if n > 1] == []
    assert sum(len(c) for c in per_worker) == n_rows
    b = SQLiteBuffer(path)
    try:
        assert nonzero(b.counts()) == {DELIVERED: n_rows}
        assert {r["attempts"] for r in b.export(DELIVERED)} == {1}
    finally:
        b.close()


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-file", "fresh-file"])
def test_processes_enqueue_same_urls_with_dedup_store_each_once(tmp_path, fresh):
    """Three processes buffer the same 600 URLs concurrently; each URL is stored once. With
    ``fresh`` the file does not exist yet: the processes also race to create and migrate it."""
    path = tmp_path / "shared.db"
    n_urls, n_workers = 600, 3
    if not fresh:
        SQLiteBuffer(path).close()
    outs = [tmp_path / f"stored-{w}.txt" for w in range(n_workers)]
    _run_workers([["enqueue", str(path), str(out), str(tmp_path / "go"), "c1", f"w{w}", str(n_urls), "20"] for w, out in enumerate(outs)], tmp_path / "go")

    stored = [i for out in outs for i in out.read_text().split()]
    assert len(stored) == n_urls
    b = SQLiteBuffer(path)
    try:
        rows = list(b.export(PENDING))
        assert sorted(r["id"] for r in rows) == sorted(stored)
        assert Counter(r["url"] for r in rows) == Counter({f"https://example.com/u{k}": 1 for k in range(n_urls)})
        assert sum(b.counts().values()) == n_urls
    finally:
        b.close()


def test_a_read_only_buffer_reads_without_the_write_lock_and_never_writes(tmp_path):
    path = tmp_path / "buffer.db"
    writer = SQLiteBuffer(path)
    writer.enqueue([row("a"), row("b", crawler="c2", state=FILTERED)], dedup=False)
    writer.set_meta("k", "v")
    writer._conn.execute("BEGIN IMMEDIATE")  # a crawl's commit in progress
    try:
        reader = SQLiteBuffer(path, readonly=True, busy_timeout=0.1)
        assert reader.counts_by_crawler() == {"c1": {**dict.fromkeys(STATES, 0), PENDING: 1},
                                              "c2": {**dict.fromkeys(STATES, 0), FILTERED: 1}}
        assert reader.get_meta("k") == "v" and reader.oldest_pending_age("c1") is not None
        with pytest.raises(BufferWriteError, match="readonly"):
            reader.set_meta("k", "w")
        reader.close()
    finally:
        writer._conn.execute("ROLLBACK")
        writer.close()
    missing = tmp_path / "missing.db"
    with pytest.raises(BufferFileError):
        SQLiteBuffer(missing, readonly=True)
    assert not missing.exists()


def test_a_read_only_buffer_refuses_a_schema_it_cannot_upgrade(tmp_path):
    path = tmp_path / "old.db"
    schema_1_buffer(path, [("a", PENDING, None)])
    with pytest.raises(BufferFileError, match="schema 1.*scrapy sdi buffer"):
        SQLiteBuffer(path, readonly=True)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
