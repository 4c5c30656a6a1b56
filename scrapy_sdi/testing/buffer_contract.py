"""The behaviour every buffer backend must show, as a pytest suite a backend's own tests can run.

scrapy_sdi runs it over its built-in backends (memory, SQLite); a third-party ``SDI_BUFFER`` class
runs it over itself by subclassing :class:`BufferContract` with a ``buffer`` fixture that builds a
fresh, empty buffer (see docs/testing.md)::

    from scrapy_sdi.testing.buffer_contract import BufferContract

    class TestMyBuffer(BufferContract):
        @pytest.fixture
        def buffer(self, tmp_path):
            b = MyBuffer.from_settings(...)
            yield b
            b.close()

Time is moved with the ``clock`` fixture, never by sleeping: it replaces the ``time`` module in
the modules of the backend's classes (where they ``import time`` and call ``time.time()``). A
backend that reads the time otherwise overrides ``clock`` with a fixture returning a
:class:`Clock` it follows.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from scrapy_sdi.buffer import (
    DELIVERED,
    FILTERED,
    IN_FLIGHT,
    INVALID,
    PENDING,
    REJECTED,
    STATES,
    Buffer,
    Claimed,
    Lease,
    Row,
)

__all__ = ["LEASE", "BufferContract", "Clock", "by_id", "ids", "nonzero", "row"]

LEASE = 0.05  # seconds; expiry is reached by moving the clock, never by sleeping


class Clock:
    """Stands in for the ``time`` module inside a backend's modules (only ``time()`` is used)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def row(
    id_: str,
    url: str | None = None,
    crawler: str = "c1",
    state: str = PENDING,
    reason: str | None = None,
) -> Row:
    """A row whose payload names its id, its URL by default derived from the id too."""
    return Row(
        id_,
        crawler,
        url or f"https://example.com/{id_}",
        f'{{"id": "{id_}"}}'.encode(),
        state,
        reason,
    )


def ids(claimed: list[Claimed]) -> list[str]:
    return [c.id for c in claimed]


def by_id(b: Buffer, state: str, crawler: str | None = None) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in b.export(state, crawler)}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def _two_crawlers_rejected(buffer: Buffer) -> None:
    buffer.enqueue([row("a1"), row("a2"), row("b1", crawler="c2")], dedup=True)
    buffer.claim("c1", "o", 10, 60)
    buffer.claim("c2", "o", 10, 60)
    buffer.ack({}, {"a1": "r", "a2": "r", "b1": "r"})


class BufferContract:
    """The contract, one test per promise; subclasses provide the ``buffer`` fixture."""

    @pytest.fixture
    def buffer(self) -> Iterator[Buffer]:
        raise NotImplementedError(
            "a BufferContract subclass provides a `buffer` fixture building an empty buffer"
        )

    @pytest.fixture
    def clock(self, buffer: Buffer, monkeypatch: pytest.MonkeyPatch) -> Clock:
        """Moves the time the backend reads, in every module of its classes that imports ``time``."""
        c = Clock()
        for klass in type(buffer).__mro__:
            module = sys.modules.get(klass.__module__)
            if module is not None and vars(module).get("time") is time:
                monkeypatch.setattr(module, "time", c)
        return c

    # -- enqueue and dedup ------------------------------------------------------------------------

    def test_enqueue_returns_one_stored_flag_per_row(self, buffer: Buffer) -> None:
        assert buffer.enqueue([row("a"), row("b"), row("c")], dedup=True) == [True, True, True]
        assert buffer.enqueue([], dedup=True) == []
        assert nonzero(buffer.counts()) == {PENDING: 3}
        assert [r["id"] for r in buffer.export(PENDING)] == ["a", "b", "c"]

    @pytest.mark.parametrize("seen_state", [PENDING, IN_FLIGHT, DELIVERED, REJECTED])
    def test_dedup_skips_url_already_seen_in_state(self, buffer: Buffer, seen_state: str) -> None:
        url = "https://example.com/page"
        assert buffer.enqueue([row("first", url)], dedup=True) == [True]
        if seen_state != PENDING:
            assert ids(buffer.claim("c1", "o", 10, 60)) == ["first"]
        if seen_state == DELIVERED:
            buffer.ack({"first": "accepted"}, {})
        elif seen_state == REJECTED:
            buffer.ack({}, {"first": "schema"})
        assert buffer.counts()[seen_state] == 1

        assert buffer.enqueue([row("again", url), row("other")], dedup=True) == [False, True]
        assert "again" not in {r["id"] for s in STATES for r in buffer.export(s)}
        assert sum(buffer.counts().values()) == 2

    def test_dedup_within_one_call(self, buffer: Buffer) -> None:
        url = "https://example.com/twice"
        assert buffer.enqueue([row("a", url), row("b"), row("c", url)], dedup=True) == [
            True,
            True,
            False,
        ]
        assert sorted(r["id"] for r in buffer.export(PENDING)) == ["a", "b"]

    def test_dedup_is_per_crawler(self, buffer: Buffer) -> None:
        url = "https://example.com/shared"
        assert buffer.enqueue(
            [row("a", url, crawler="c1"), row("b", url, crawler="c2")], dedup=True
        ) == [True, True]
        assert buffer.enqueue([row("c", url, crawler="c3")], dedup=True) == [True]
        assert buffer.enqueue([row("d", url, crawler="c2")], dedup=True) == [False]
        assert (
            buffer.counts("c1")[PENDING]
            == buffer.counts("c2")[PENDING]
            == buffer.counts("c3")[PENDING]
            == 1
        )

    def test_no_dedup_when_disabled(self, buffer: Buffer) -> None:
        url = "https://example.com/same"
        assert buffer.enqueue([row("a", url)], dedup=False) == [True]
        assert buffer.enqueue([row("b", url), row("c", url)], dedup=False) == [True, True]
        assert buffer.counts()[PENDING] == 3

    def test_filtered_and_invalid_rows_do_not_count_as_seen(self, buffer: Buffer) -> None:
        url = "https://example.com/f"
        flags = buffer.enqueue(
            [
                row("f1", url, state=FILTERED, reason="f"),
                row("f2", url, state=FILTERED, reason="f"),
                row("i1", url, state=INVALID, reason="i"),
            ],
            dedup=True,
        )
        assert flags == [True, True, True]
        assert buffer.enqueue([row("p", url)], dedup=True) == [True]
        assert nonzero(buffer.counts()) == {PENDING: 1, FILTERED: 2, INVALID: 1}

    @pytest.mark.parametrize("seen_state", [PENDING, DELIVERED])
    def test_a_filtered_row_for_a_url_already_buffered_is_skipped_like_a_duplicate(
        self, buffer: Buffer, seen_state: str
    ) -> None:
        """Else a pending row and a filtered row would say opposite things of one URL."""
        url = "https://example.com/f"
        buffer.enqueue([row("p", url)], dedup=True)
        if seen_state == DELIVERED:
            buffer.claim("c1", "o", 10, 60)
            buffer.ack({"p": "accepted"}, {})
        assert buffer.enqueue(
            [row("f", url, state=FILTERED, reason="f"), row("g", state=FILTERED, reason="f")],
            dedup=True,
        ) == [False, True]
        assert buffer.enqueue([row("f2", url, state=FILTERED, reason="f")], dedup=False) == [
            True
        ]  # dedup off: kept
        assert nonzero(buffer.counts()) == {seen_state: 1, FILTERED: 2}

    def test_filtered_and_invalid_rows_are_kept_counted_and_never_claimed(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue(
            [
                row("f", state=FILTERED, reason="drop: robots"),
                row("i", state=INVALID, reason="missing field 'title'"),
                row("p"),
            ],
            dedup=True,
        )
        assert nonzero(buffer.counts()) == {PENDING: 1, FILTERED: 1, INVALID: 1}
        assert ids(buffer.claim("c1", "o", 10, 60, ignore_ready_at=True)) == ["p"]
        buffer.ack({"p": "accepted"}, {})
        clock.advance(3600)
        assert buffer.claim("c1", "o", 10, 60, ignore_ready_at=True) == []
        assert buffer.requeue(PENDING) == 0
        assert by_id(buffer, FILTERED)["f"]["reason"] == "drop: robots"
        assert by_id(buffer, INVALID)["i"]["reason"] == "missing field 'title'"
        assert buffer.counts()[FILTERED] == buffer.counts()[INVALID] == 1

    # -- claim ------------------------------------------------------------------------------------

    def test_claim_returns_oldest_first_at_most_limit(self, buffer: Buffer) -> None:
        buffer.enqueue([row(f"r{i}") for i in range(7)], dedup=True)
        first = buffer.claim("c1", "o", 3, 60)
        assert ids(first) == ["r0", "r1", "r2"]
        assert all(isinstance(c, Claimed) and c.attempts == 0 for c in first)
        assert first[0].payload == b'{"id": "r0"}'
        assert ids(buffer.claim("c1", "o", 3, 60)) == ["r3", "r4", "r5"]
        assert ids(buffer.claim("c1", "o", 3, 60)) == ["r6"]
        assert buffer.claim("c1", "o", 3, 60) == []

    def test_claim_keeps_enqueue_order_across_calls_and_interleaved_crawlers(
        self, buffer: Buffer
    ) -> None:
        buffer.enqueue([row("a1"), row("b1", crawler="c2"), row("a2")], dedup=True)
        buffer.enqueue([row("b2", crawler="c2"), row("a3")], dedup=True)
        assert ids(buffer.claim("c1", "o", 10, 60)) == ["a1", "a2", "a3"]
        assert ids(buffer.claim("c2", "o", 10, 60)) == ["b1", "b2"]

    def test_claim_only_the_given_crawler(self, buffer: Buffer) -> None:
        buffer.enqueue([row("a", crawler="c1"), row("b", crawler="c2")], dedup=True)
        assert buffer.claim("nobody", "o", 10, 60) == []
        assert ids(buffer.claim("c2", "o", 10, 60)) == ["b"]
        assert buffer.counts("c1") == {**dict.fromkeys(STATES, 0), PENDING: 1}
        assert buffer.counts("c2") == {**dict.fromkeys(STATES, 0), IN_FLIGHT: 1}

    def test_claimed_rows_are_in_flight_and_not_claimed_again_until_lease_expires(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a"), row("b")], dedup=True)
        assert ids(buffer.claim("c1", "o1", 1, LEASE)) == ["a"]
        assert nonzero(buffer.counts()) == {PENDING: 1, IN_FLIGHT: 1}
        assert [r["id"] for r in buffer.export(IN_FLIGHT)] == ["a"]
        assert ids(buffer.claim("c1", "o2", 10, LEASE)) == ["b"]
        clock.advance(LEASE / 2)
        assert buffer.claim("c1", "o3", 10, LEASE) == []
        assert (
            buffer.claim("c1", "o3", 10, LEASE, ignore_ready_at=True) == []
        )  # a lease is not a ready_at
        assert buffer.counts()[IN_FLIGHT] == 2

    def test_expired_lease_is_reclaimed_with_same_id_payload_and_attempts(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a")], dedup=True)
        (first,) = buffer.claim("c1", "dead-worker", 10, LEASE)
        clock.advance(LEASE * 2)
        (again,) = buffer.claim("c1", "next-worker", 10, 60)
        assert again == first == Claimed("a", b'{"id": "a"}', 0)
        assert nonzero(buffer.counts()) == {IN_FLIGHT: 1}
        clock.advance(LEASE * 2)
        assert buffer.claim("c1", "third", 10, 60) == []  # the new lease is 60 s

    def test_expired_leases_come_back_oldest_first(self, buffer: Buffer, clock: Clock) -> None:
        buffer.enqueue([row("a"), row("b"), row("c")], dedup=True)
        assert ids(buffer.claim("c1", "dead", 1, LEASE)) == ["a"]
        clock.advance(1)
        assert ids(buffer.claim("c1", "o", 3, 60)) == ["a", "b", "c"]

    def test_acked_row_is_not_claimed_again_after_its_lease_had_expired(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        """A slow request outlives its lease; a claim (any crawler) puts the row back; the ack then
        arrives. The row is delivered and must not be sent again."""
        buffer.enqueue([row("a"), row("z", crawler="c2")], dedup=True)
        assert ids(buffer.claim("c1", "slow", 10, LEASE)) == ["a"]
        clock.advance(1)
        assert ids(buffer.claim("c2", "other", 10, 60)) == [
            "z"
        ]  # expiry pass puts "a" back to pending
        buffer.ack({"a": "accepted"}, {})
        assert buffer.counts("c1") == {**dict.fromkeys(STATES, 0), DELIVERED: 1}
        assert buffer.claim("c1", "o", 10, 60) == []
        assert buffer.counts("c1")[DELIVERED] == 1
        assert buffer.outstanding("c1", clock.now + 1) == 0

    # -- rows stored already leased (the delivery loop's hand-off) ----------------------------------

    def test_a_lease_stores_the_first_rows_in_flight_and_returns_them(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        rows = [
            row("f", state=FILTERED, reason="filter 1"),
            row("a"),
            row("dup", url="https://example.com/a"),
            row("b"),
            row("c"),
        ]
        enqueued = buffer.enqueue(rows, dedup=True, lease=Lease("me", clock.now + 60, 2))
        assert enqueued == [True, True, False, True, True]
        assert [r.id for r in enqueued.leased] == ["a", "b"]  # filtered, dedup'd: never leased
        assert sorted(by_id(buffer, IN_FLIGHT)) == ["a", "b"]
        assert [r.state for r in rows] == [
            FILTERED,
            PENDING,
            PENDING,
            PENDING,
            PENDING,
        ]  # the rows passed in are left as they came
        assert nonzero(buffer.counts()) == {FILTERED: 1, IN_FLIGHT: 2, PENDING: 1}
        assert ids(buffer.claim("c1", "other", 10, 60)) == [
            "c"
        ]  # leased rows are not claimed again
        assert buffer.outstanding("c1", clock.now + 1) == 3
        buffer.ack({"a": "accepted"}, {"b": "bad"})
        assert {r["id"]: r["attempts"] for r in buffer.export(DELIVERED)} == {"a": 1}
        assert nonzero(buffer.counts()) == {FILTERED: 1, DELIVERED: 1, REJECTED: 1, IN_FLIGHT: 1}

    def test_a_leased_row_of_a_dead_process_comes_back_when_its_lease_ends(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a"), row("b")], dedup=True, lease=Lease("dead", clock.now + LEASE, 5))
        assert buffer.claim("c1", "next", 10, 60) == []
        clock.advance(LEASE * 2)
        assert buffer.claim("c1", "next", 10, 60) == [
            Claimed("a", b'{"id": "a"}', 0),
            Claimed("b", b'{"id": "b"}', 0),
        ]

    def test_a_released_leased_row_is_pending_again_with_one_attempt(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a")], dedup=True, lease=Lease("me", clock.now + 60, 1))
        buffer.release(["a"], "503", delay=0)
        assert [(c.id, c.attempts) for c in buffer.claim("c1", "o", 10, 60)] == [("a", 1)]

    def test_a_lease_of_no_rows_and_no_lease_store_pending(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        rows = [row("a"), row("b")]
        assert (
            buffer.enqueue(rows[:1], dedup=True, lease=Lease("me", clock.now + 60, 0)).leased == []
        )
        assert buffer.enqueue(rows[1:], dedup=True).leased == []
        assert buffer.counts()[IN_FLIGHT] == 0
        assert ids(buffer.claim("c1", "o", 10, 60)) == ["a", "b"]

    # -- ack and release --------------------------------------------------------------------------

    def test_ack_records_delivered_and_rejected(self, buffer: Buffer) -> None:
        buffer.enqueue([row("a"), row("b"), row("c"), row("d")], dedup=True)
        assert len(buffer.claim("c1", "o", 10, 60)) == 4
        buffer.ack({"a": "accepted", "b": "duplicate"}, {"c": "422: title missing", "d": None})
        assert nonzero(buffer.counts()) == {DELIVERED: 2, REJECTED: 2}
        delivered = by_id(buffer, DELIVERED)
        assert {k: v["outcome"] for k, v in delivered.items()} == {
            "a": "accepted",
            "b": "duplicate",
        }
        assert all(v["attempts"] == 1 and v["delivered_at"] is not None for v in delivered.values())
        rejected = by_id(buffer, REJECTED)
        assert {k: v["reason"] for k, v in rejected.items()} == {
            "c": "422: title missing",
            "d": None,
        }
        assert all(v["attempts"] == 1 for v in rejected.values())
        assert buffer.claim("c1", "o", 10, 60, ignore_ready_at=True) == []

    def test_release_returns_rows_to_pending_with_one_more_attempt_and_a_delay(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a"), row("b"), row("c")], dedup=True)
        assert ids(buffer.claim("c1", "o", 2, 60)) == ["a", "b"]
        buffer.release(["a", "b"], "503 Service Unavailable", delay=30)
        assert nonzero(buffer.counts()) == {PENDING: 3}
        pending = by_id(buffer, PENDING)
        assert pending["a"]["attempts"] == pending["b"]["attempts"] == 1
        assert pending["a"]["last_error"] == "503 Service Unavailable"
        assert pending["c"]["attempts"] == 0

        assert ids(buffer.claim("c1", "o", 10, 60)) == ["c"]  # a and b wait for their delay
        clock.advance(29)
        assert buffer.claim("c1", "o", 10, 60) == []
        clock.advance(2)
        again = buffer.claim("c1", "o", 10, 60)
        assert [(c.id, c.attempts) for c in again] == [("a", 1), ("b", 1)]

    def test_ignore_ready_at_claims_delayed_rows(self, buffer: Buffer) -> None:
        buffer.enqueue([row("a")], dedup=True)
        buffer.claim("c1", "o", 10, 60)
        buffer.release(["a"], "timeout", delay=3600)
        assert buffer.claim("c1", "o", 10, 60) == []
        assert [
            (c.id, c.attempts) for c in buffer.claim("c1", "o", 10, 60, ignore_ready_at=True)
        ] == [("a", 1)]

    def test_release_zero_delay_is_claimable_at_once(self, buffer: Buffer) -> None:
        buffer.enqueue([row("a")], dedup=True)
        buffer.claim("c1", "o", 10, 60)
        buffer.release(["a"], "boom", delay=0)
        assert ids(buffer.claim("c1", "o", 10, 60)) == ["a"]

    def test_release_ignores_rows_not_in_flight(self, buffer: Buffer) -> None:
        buffer.enqueue([row("a"), row("b")], dedup=True)
        buffer.claim("c1", "o", 1, 60)
        buffer.ack({"a": "accepted"}, {})
        buffer.release(["a", "b"], "late", delay=0)
        assert nonzero(buffer.counts()) == {PENDING: 1, DELIVERED: 1}
        assert by_id(buffer, DELIVERED)["a"]["attempts"] == 1
        assert by_id(buffer, PENDING)["b"]["attempts"] == 0

    # -- counts, export, requeue ------------------------------------------------------------------

    def test_counts_has_every_state_key(self, buffer: Buffer) -> None:
        assert buffer.counts() == dict.fromkeys(STATES, 0)
        assert buffer.counts("nobody") == dict.fromkeys(STATES, 0)
        buffer.enqueue(
            [row("a"), row("b", crawler="c2"), row("f", state=FILTERED, reason="x")], dedup=True
        )
        assert set(buffer.counts()) == set(STATES)
        assert buffer.counts() == {**dict.fromkeys(STATES, 0), PENDING: 2, FILTERED: 1}
        assert buffer.counts("c2") == {**dict.fromkeys(STATES, 0), PENDING: 1}

    def test_export_yields_rows_of_one_state(self, buffer: Buffer) -> None:
        buffer.enqueue(
            [row("a"), row("b", crawler="c2"), row("i", state=INVALID, reason="bad price")],
            dedup=True,
        )
        exported = list(buffer.export(PENDING))
        assert [r["id"] for r in exported] == ["a", "b"]
        first = exported[0]
        for key in ("id", "crawler", "url", "state", "attempts", "reason", "payload"):
            assert key in first
        assert (
            first["crawler"],
            first["url"],
            first["state"],
            first["attempts"],
            first["reason"],
        ) == (
            "c1",
            "https://example.com/a",
            PENDING,
            0,
            None,
        )
        assert bytes(first["payload"]) == b'{"id": "a"}'
        assert [r["id"] for r in buffer.export(PENDING, "c2")] == ["b"]
        (invalid,) = buffer.export(INVALID)
        assert (invalid["id"], invalid["reason"], invalid["state"]) == ("i", "bad price", INVALID)
        assert list(buffer.export(DELIVERED)) == []

    def test_requeue_rejected_by_crawler(self, buffer: Buffer) -> None:
        _two_crawlers_rejected(buffer)
        assert buffer.requeue(REJECTED, crawler="c1") == 2
        assert buffer.counts("c1") == {**dict.fromkeys(STATES, 0), PENDING: 2}
        assert buffer.counts("c2")[REJECTED] == 1
        pending = by_id(buffer, PENDING)
        assert pending["a1"]["reason"] is None and pending["a1"]["attempts"] == 1
        assert ids(buffer.claim("c1", "o", 10, 60)) == ["a1", "a2"]
        assert buffer.requeue(REJECTED, crawler="c1") == 0

    def test_requeue_by_ids(self, buffer: Buffer) -> None:
        _two_crawlers_rejected(buffer)
        assert buffer.requeue(REJECTED, ids=["a2", "b1", "unknown"]) == 2
        assert sorted(by_id(buffer, PENDING)) == ["a2", "b1"]
        assert list(by_id(buffer, REJECTED)) == ["a1"]
        assert buffer.requeue(REJECTED) == 1
        assert buffer.counts()[REJECTED] == 0

    def test_invalid_rows_are_not_requeued_as_stored(self, buffer: Buffer) -> None:
        buffer.enqueue([row("i", state=INVALID, reason="bad")], dedup=True)
        with pytest.raises(ValueError, match="mapped again"):
            buffer.requeue(INVALID)
        assert nonzero(buffer.counts()) == {INVALID: 1}

    def test_replace_invalid_rewrites_only_rows_still_invalid(self, buffer: Buffer) -> None:
        buffer.enqueue(
            [
                row("i", state=INVALID, reason="bad"),
                row("j", state=INVALID, reason="bad"),
                row("f", state=FILTERED, reason="skip"),
            ],
            dedup=True,
        )
        fixed = Row("new-i", "c1", "https://example.com/fixed", b'{"id": "new-i"}')
        still = Row("j", "c1", "https://example.com/j", b"ignored", INVALID, "still bad")
        assert buffer.replace_invalid(
            {"i": fixed, "j": still, "f": fixed, "gone": fixed}, dedup=True
        ) == {PENDING: 1, INVALID: 1}
        assert nonzero(buffer.counts()) == {PENDING: 1, INVALID: 1, FILTERED: 1}
        assert by_id(buffer, INVALID)["j"]["reason"] == "still bad"
        assert (
            bytes(by_id(buffer, INVALID)["j"]["payload"]) == b'{"id": "j"}'
        )  # the item's fields stay
        (claimed,) = buffer.claim("c1", "o", 10, 60)
        assert claimed == Claimed("new-i", b'{"id": "new-i"}', 0)
        assert buffer.replace_invalid({"i": fixed}, dedup=True) == {}  # no longer invalid
        assert [r["id"] for r in buffer.export(INVALID, ids=["j", "i"])] == ["j"]

    def test_replaced_row_counts_as_seen_for_dedup(self, buffer: Buffer) -> None:
        url = "https://example.com/fixed"
        buffer.enqueue(
            [row("i", state=INVALID, reason="bad"), row("k", state=INVALID, reason="bad")],
            dedup=True,
        )
        assert buffer.replace_invalid(
            {"i": row("new-i", url), "k": row("new-k", url)}, dedup=True
        ) == {PENDING: 1, INVALID: 1}
        assert "already buffered" in by_id(buffer, INVALID)["k"]["reason"]
        assert buffer.enqueue([row("again", url)], dedup=True) == [False]
        assert buffer.counts()[PENDING] == 1

    # -- outstanding, crawlers, meta, prune -------------------------------------------------------

    def test_outstanding_counts_pending_and_in_flight_of_one_crawler(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue(
            [
                row("a"),
                row("b"),
                row("c"),
                row("d"),
                row("x", crawler="c2"),
                row("f", state=FILTERED, reason="f"),
            ],
            dedup=True,
        )
        later = clock.now + 1
        assert buffer.outstanding("c1", later) == 4
        buffer.claim("c1", "o", 2, 60)
        assert buffer.outstanding("c1", later) == 4
        buffer.ack({"a": "accepted"}, {"b": "no"})
        assert buffer.outstanding("c1", later) == 2
        assert buffer.outstanding("c2", later) == 1
        assert buffer.outstanding("nobody", later) == 0

    def test_crawlers_with_pending(self, buffer: Buffer) -> None:
        assert buffer.crawlers_with_pending() == []
        buffer.enqueue(
            [
                row("a", crawler="c1"),
                row("b", crawler="c2"),
                row("f", crawler="c3", state=FILTERED, reason="x"),
            ],
            dedup=True,
        )
        assert sorted(buffer.crawlers_with_pending()) == ["c1", "c2"]
        buffer.claim("c2", "o", 10, 60)
        assert sorted(buffer.crawlers_with_pending()) == ["c1", "c2"]  # in flight still counts
        buffer.ack({"b": "accepted"}, {})
        assert buffer.crawlers_with_pending() == ["c1"]

    def test_meta_round_trip(self, buffer: Buffer) -> None:
        assert buffer.get_meta("k") is None
        buffer.set_meta("k", "v1")
        buffer.set_meta("other", "x")
        assert buffer.get_meta("k") == "v1"
        buffer.set_meta("k", "v2")
        assert (buffer.get_meta("k"), buffer.get_meta("other")) == ("v2", "x")

    def test_oldest_pending_age(self, buffer: Buffer, clock: Clock) -> None:
        assert buffer.oldest_pending_age() is None
        buffer.enqueue([row("a")], dedup=True)
        clock.advance(10)
        buffer.enqueue([row("b", crawler="c2")], dedup=True)
        clock.advance(5)
        assert buffer.oldest_pending_age() == pytest.approx(15)
        assert buffer.oldest_pending_age("c2") == pytest.approx(5)

    # -- the filters a row passed ------------------------------------------------------------

    def test_claim_gives_the_key_of_the_filters_each_row_passed(self, buffer: Buffer) -> None:
        buffer.enqueue(
            [Row("a", "c1", "https://e.x/a", b"{}", filters_version="v1"), row("b")], dedup=False
        )
        assert [(c.id, c.filters_version) for c in buffer.claim("c1", "o", 10, 60)] == [
            ("a", "v1"),
            ("b", None),
        ]

    def test_mark_filtered_keeps_waiting_rows_as_filtered_with_the_reason_and_nothing_else(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.enqueue([row("a"), row("b"), row("c"), row("d")], dedup=True)
        buffer.claim("c1", "o", 2, 60)  # a, b in flight; c, d pending
        buffer.ack({"b": "accepted"}, {})
        buffer.mark_filtered(
            {
                "a": "filter 1 (url exact 'x')",
                "b": "filter 1 (url exact 'x')",
                "c": "filter 2 (url glob '*')",
            }
        )
        assert {r["id"]: r["reason"] for r in buffer.export(FILTERED)} == {
            "a": "filter 1 (url exact 'x')",
            "c": "filter 2 (url glob '*')",
        }
        assert nonzero(buffer.counts()) == {
            FILTERED: 2,
            DELIVERED: 1,
            PENDING: 1,
        }  # a delivered row stays delivered
        clock.advance(120)  # a's lease would have run out: a filtered row is never claimed again
        assert ids(buffer.claim("c1", "o", 10, 60)) == ["d"]
        assert buffer.outstanding("c1", clock.now) == 1
        assert buffer.enqueue([row("a2", url="https://example.com/a")], dedup=True) == [
            True
        ]  # filtered is not seen

    def test_a_requeued_row_has_passed_no_filters(self, buffer: Buffer) -> None:
        buffer.enqueue([Row("a", "c1", "https://e.x/a", b"{}", filters_version="v1")], dedup=False)
        buffer.claim("c1", "o", 10, 60)
        buffer.mark_filtered({"a": "filter 1 (url exact 'x')"})
        assert buffer.requeue(FILTERED) == 1
        assert [(c.id, c.filters_version) for c in buffer.claim("c1", "o", 10, 60)] == [("a", None)]

    def test_prune_forgets_delivered_rows_only(self, buffer: Buffer, clock: Clock) -> None:
        """A backend may keep delivered rows forever (0 pruned), never forget any other."""
        buffer.enqueue(
            [row("d"), row("r"), row("p"), row("f", state=FILTERED, reason="f")], dedup=True
        )
        buffer.claim("c1", "o", 2, 60)
        buffer.ack({"d": "accepted"}, {"r": "bad"})
        clock.advance(10 * 86400)
        pruned = buffer.prune(1)
        assert pruned in (0, 1)
        assert buffer.counts() == {
            **dict.fromkeys(STATES, 0),
            DELIVERED: 1 - pruned,
            REJECTED: 1,
            PENDING: 1,
            FILTERED: 1,
        }
        assert buffer.prune(1) == 0

    # -- owners, location, the rest of the interface -----------------------------------------------

    def test_a_held_owner_keeps_its_leases_and_reclaim_dead_counts_what_it_took(
        self, buffer: Buffer, clock: Clock
    ) -> None:
        buffer.hold_owner("me")
        buffer.enqueue([row("a"), row("b")], dedup=True)
        assert ids(buffer.claim("c1", "me", 1, 60)) == ["a"]
        assert buffer.reclaim_dead() == 0  # "me" lives: nothing comes back before the lease ends
        assert ids(buffer.claim("c1", "other", 10, 60)) == ["b"]
        assert buffer.counts()[IN_FLIGHT] == 2

    def test_it_says_where_it_keeps_rows_and_what_it_knows_of_them(self, buffer: Buffer) -> None:
        assert isinstance(buffer.location, str) and buffer.location
        assert buffer.check_integrity() is None
        size = buffer.size_bytes()
        assert size is None or size >= 0
        assert isinstance(buffer.durable, bool)
        buffer.enqueue([row("a"), row("b", crawler="c2")], dedup=True)
        by_crawler = buffer.counts_by_crawler()
        assert {name: nonzero(counts) for name, counts in by_crawler.items()} == {
            "c1": {PENDING: 1},
            "c2": {PENDING: 1},
        }
