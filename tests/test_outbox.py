"""The Outbox's sequence and timing, in-process: its clock is ``twisted.internet.task.Clock``.

Rows go in with ``put`` (back-pressure, group commit, the hand-off of leased rows to delivery);
the loop's timing (group window, linger, backoff, the close deadline) moves only when the test
advances the clock. Delivery over real HTTP is proven in test_delivery_e2e.py and tests/reliability/.
"""

from __future__ import annotations

import gc

import orjson
import pytest
import pytest_twisted
from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler
from twisted.internet import defer, task

from scrapy_sdi.buffer import (
    DELIVERED,
    FILTERED,
    IN_FLIGHT,
    PENDING,
    BufferWriteError,
    Enqueued,
    MemoryBuffer,
    Row,
    SQLiteBuffer,
)
from scrapy_sdi.client import Outcome
from scrapy_sdi.delivery import LINGER, TICK, Delivery
from scrapy_sdi.errors import SDIRateLimited
from scrapy_sdi.mapping import encode_result
from scrapy_sdi.outbox import Outbox
from scrapy_sdi.settings import SDISettings
from scrapy_sdi.writer import GROUP_WINDOW, GroupWriter
from tests.support.filters import InForce
from tests.support.outbox import put_all, turns


@pytest.fixture
def buffer(tmp_path):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


@pytest.fixture
def clock():
    return task.Clock()


def sdi_settings(**extra) -> SDISettings:
    values = {"SDI_BATCH_SIZE": 10, "SDI_CONCURRENT_REQUESTS": 2, "SDI_DRY_RUN": True, **extra}
    return SDISettings.from_settings(
        Settings(values), "c", environ={}, dotenv_path=None, require_api=False
    )


def rows(n: int, start: int = 0) -> list[Row]:
    return [
        Row(f"id{i}", "c", f"https://e.x/{i}", b'{"id": "id%d"}' % i)
        for i in range(start, start + n)
    ]


def outbox(buffer, clock, client=None, **kwargs) -> Outbox:
    settings = kwargs.pop("settings", None) or sdi_settings()
    stats = kwargs.pop("stats", None) or StatsCollector(get_crawler())
    box = Outbox(
        Delivery(buffer, client, settings, stats=stats, clock=clock, **kwargs),
        dedup=settings.dedup,
        stats=stats,
    )
    box.start()
    return box


async def put(box: Outbox, clock: task.Clock, group: list[Row]) -> list[bool]:
    """Put a callback's worth of rows and commit them (the writer's turn, on the test's clock)."""
    stored = put_all(box, group)
    await turns()
    clock.advance(0)
    return await stored


# -- the hand-off: rows stored already leased skip the claim ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_while_delivery_keeps_up_rows_are_sent_from_memory_as_many_as_fit_in_flight(
    buffer, clock
):
    box = outbox(buffer, clock)
    assert await put(box, clock, rows(35)) == [True] * 35
    # (SDI_CONCURRENT_REQUESTS + 1) x SDI_BATCH_SIZE were stored leased and went at once (a dry
    # run answers at once); five rows wait, pending
    assert buffer.counts("c")[DELIVERED] == 30 and buffer.counts("c")[PENDING] == 5
    await put(box, clock, rows(1, 35))  # older rows wait: a new one queues behind them, pending
    assert buffer.counts("c")[PENDING] == 6 and buffer.counts("c")[IN_FLIGHT] == 0
    clock.advance(LINGER)  # the partial batch goes after LINGER
    assert buffer.counts("c")[DELIVERED] == 36 and box.backlog == 0
    await put(box, clock, rows(3, 36))  # caught up: the next rows skip the claim again
    assert buffer.counts("c")[IN_FLIGHT] == 3
    assert await box.close(5) == 0


@pytest_twisted.ensureDeferred
async def test_rows_held_in_memory_go_back_to_the_buffer_when_the_outbox_stops(buffer, clock):
    box = outbox(buffer, clock)
    await put(box, clock, rows(4))  # fewer than a batch: held for LINGER
    assert buffer.counts("c")[IN_FLIGHT] == 4
    await box.stop()
    assert buffer.counts("c")[PENDING] == 4  # the next run claims them at once, not after the lease
    assert [(c.id, c.attempts) for c in buffer.claim("c", "next", 10, 60)] == [
        (f"id{i}", 1) for i in range(4)
    ]


@pytest_twisted.ensureDeferred
async def test_rows_held_in_memory_are_matched_again_when_other_filters_come_into_force(
    buffer, clock
):
    filters = InForce([], "v0")
    stats = StatsCollector(get_crawler())
    box = outbox(buffer, clock, filters=filters, stats=stats)
    group = [
        Row(
            f"id{i}",
            "c",
            f"https://{host}/{i}",
            encode_result({"url": f"https://{host}/{i}", "filename": f"{i}"}, f"id{i}"),
            filters_version="v0",
        )
        for i, host in enumerate(["ok.x", "bad.x", "ok.x"])
    ]
    await put(box, clock, group)  # fewer than a batch: held for LINGER
    assert buffer.counts("c")[IN_FLIGHT] == 3
    filters.set(
        [{"id": 7, "field": "url", "kind": "domain", "pattern": "bad.x"}], "v1"
    )  # a refresh before they are sent
    clock.advance(LINGER)
    assert [r["url"] for r in buffer.export(FILTERED)] == ["https://bad.x/1"]
    assert buffer.counts("c")[DELIVERED] == 2 and stats.get_value("sdi/items_filtered") == 1


# -- what put counts ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_put_counts_buffered_and_deduplicated_rows_once_per_commit(buffer, clock):
    stats = StatsCollector(get_crawler())
    box = outbox(buffer, clock, stats=stats)
    again = Row("again", "c", "https://e.x/0", b"{}")
    kept = Row("f", "c", "https://e.x/f", b"{}", FILTERED, "filter 1")
    assert await put(box, clock, [*rows(2), again, kept]) == [True, True, False, True]
    assert (
        stats.get_value("sdi/items_buffered") == 2
    )  # the filtered row is kept, not buffered for delivery
    assert stats.get_value("sdi/items_deduplicated") == 1
    assert buffer.counts("c")[FILTERED] == 1


@pytest_twisted.ensureDeferred
async def test_a_memory_buffer_keeps_no_filtered_rows(clock):
    buffer = MemoryBuffer()
    box = outbox(buffer, clock)
    assert await put(box, clock, [Row("f", "c", "https://e.x/f", b"{}", FILTERED, "filter 1")]) == [
        True
    ]
    assert buffer.counts("c")[FILTERED] == 0


@pytest_twisted.ensureDeferred
async def test_back_pressure_holds_rows_until_delivery_frees_room_and_counts_the_waits(
    buffer, clock
):
    stats = StatsCollector(get_crawler())
    box = outbox(
        buffer,
        clock,
        stats=stats,
        settings=sdi_settings(SDI_BUFFER_MAX_PENDING=3, SDI_CONCURRENT_REQUESTS=1),
    )
    stored = put_all(box, rows(5))
    await turns()
    assert stats.get_value("sdi/backpressure_waits") == 2  # three let in, two wait their turn
    clock.advance(0)  # the three commit, held in memory for LINGER (a partial batch)
    await turns()
    assert buffer.counts("c")[IN_FLIGHT] == 3 and not stored.called
    clock.advance(LINGER)  # sent: room for the two that waited
    await turns()
    clock.advance(0)
    assert await stored == [True] * 5


class BrokenBuffer(MemoryBuffer):
    def enqueue(self, rows, dedup, lease=None) -> Enqueued:
        raise OSError("disk full")


@pytest_twisted.ensureDeferred
async def test_a_row_the_buffer_cannot_store_fails_its_put_and_frees_its_room(clock):
    box = outbox(BrokenBuffer(), clock, settings=sdi_settings(SDI_BUFFER_MAX_PENDING=1))
    for _ in range(2):  # the second gets in only if the first gave its room back
        failed = put_all(box, rows(1))
        await turns()
        clock.advance(0)
        with pytest.raises(defer.FirstError) as info:
            await failed
        assert isinstance(info.value.subFailure.value, BufferWriteError)


# -- timing, on the injected clock ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_rows_another_process_buffers_for_this_crawler_are_sent_at_the_next_tick(
    buffer, clock
):
    box = outbox(buffer, clock)
    clock.advance(0)  # the first look found nothing
    buffer.enqueue(rows(3), dedup=True)  # a scrapy-redis sibling, or a requeue
    clock.advance(TICK - 0.01)
    assert buffer.counts("c")[DELIVERED] == 0
    clock.advance(0.01)
    assert buffer.counts("c")[DELIVERED] == 3
    await box.stop()


def test_rows_arriving_one_per_turn_join_a_group_until_the_window_closes(clock):
    groups: list[list[str]] = []

    def commit(group: list[Row]) -> Enqueued:
        groups.append([row.id for row in group])
        return Enqueued([True] * len(group))

    writer = GroupWriter(commit, where="test", clock=clock)
    writer.add(rows(1)[0])
    clock.callLater(0, writer.add, rows(1, 1)[0])  # the next turn brings one more: it joins
    clock.advance(0)
    assert groups == [["id0", "id1"]]
    writer.add(rows(1, 2)[0])
    clock.callLater(
        GROUP_WINDOW, writer.add, rows(1, 3)[0]
    )  # one arriving after the window: a group of its own
    clock.advance(GROUP_WINDOW)
    assert groups == [["id0", "id1"], ["id2"], ["id3"]]


class ThrottlingClient:
    """Answers on the clock's next turn, as HTTP does: 429 with Retry-After as long as
    ``throttled``, then accepted for every result."""

    def __init__(self, clock: task.Clock) -> None:
        self.clock = clock
        self.throttled = True
        self.posts = 0

    def submit(self, body: bytes) -> defer.Deferred[list[Outcome]]:
        self.posts += 1
        return task.deferLater(self.clock, 0, self._answer, body)

    def _answer(self, body: bytes) -> list[Outcome]:
        if self.throttled:
            raise SDIRateLimited("429", status=429, retry_after=5.0)
        return [Outcome(result["id"], "accepted") for result in orjson.loads(body)["results"]]


@pytest_twisted.ensureDeferred
async def test_a_throttled_loop_waits_what_the_api_asks_before_it_sends_again(buffer, clock):
    client = ThrottlingClient(clock)
    settings = sdi_settings(SDI_DRY_RUN=False, SDI_RETRY_BACKOFF_MAX=1)
    box = outbox(buffer, clock, client, settings=settings)
    await put(box, clock, rows(10))  # a full batch goes at once, and is throttled
    assert client.posts == 1 and buffer.counts("c")[PENDING] == 10
    client.throttled = False
    clock.advance(4.9)
    assert client.posts == 1
    clock.advance(0.2)
    assert client.posts == 2 and buffer.counts("c")[DELIVERED] == 10


class SilentClient:
    """Never answers: the close deadline has to give the request up."""

    def submit(self, body: bytes) -> defer.Deferred[list[Outcome]]:
        return defer.Deferred()


@pytest_twisted.ensureDeferred
async def test_close_gives_up_unanswered_batches_at_its_deadline_and_says_what_is_left(
    buffer, clock
):
    box = outbox(buffer, clock, SilentClient(), settings=sdi_settings(SDI_DRY_RUN=False))
    await put(box, clock, rows(15))
    closing = defer.Deferred.fromCoroutine(box.close(30))
    clock.advance(29)
    assert not closing.called
    clock.advance(1)
    assert await closing == 15
    assert buffer.counts("c")[PENDING] == 15  # resent by the next run, with the same ids


@pytest_twisted.ensureDeferred
async def test_while_every_slot_is_busy_the_next_batch_waits_in_memory_and_no_more(buffer, clock):
    """Rows arriving while both requests are unanswered are held leased for the next free slot,
    not written pending to be claimed (read back and rewritten) later; what the run holds stays
    bounded by (SDI_CONCURRENT_REQUESTS + 1) x SDI_BATCH_SIZE."""
    box = outbox(buffer, clock, SilentClient(), settings=sdi_settings(SDI_DRY_RUN=False))
    await put(box, clock, rows(20))  # two batches of 10, sent, unanswered
    await put(box, clock, rows(10, 20))
    assert buffer.counts("c")[IN_FLIGHT] == 30 and buffer.counts("c")[PENDING] == 0
    await put(box, clock, rows(1, 30))
    assert buffer.counts("c")[IN_FLIGHT] == 30 and buffer.counts("c")[PENDING] == 1
    closing = defer.Deferred.fromCoroutine(box.close(1))
    clock.advance(1)
    assert await closing == 31 and buffer.counts("c")[PENDING] == 31  # for the next run


@pytest.fixture
def thawed():
    """No frozen heap around the test (another test's unclosed outbox may have left one)."""
    import scrapy_sdi.outbox as outbox_module

    held, outbox_module._heap.holders = outbox_module._heap.holders, 0
    gc.unfreeze()
    yield
    gc.unfreeze()
    outbox_module._heap.holders = held


@pytest_twisted.ensureDeferred
async def test_the_heap_before_the_crawl_is_frozen_while_the_outbox_runs(buffer, clock, thawed):
    """What exists at start (Scrapy, the crawler) is not scanned again by every full collection
    while the crawl runs; close gives it back to the collector, also with another outbox open."""
    first = outbox(buffer, clock)
    assert gc.get_freeze_count() > 0
    second = outbox(buffer, clock)
    await first.close(0)
    assert gc.get_freeze_count() > 0, "the other outbox still runs"
    await second.close(0)
    assert gc.get_freeze_count() == 0


@pytest_twisted.ensureDeferred
async def test_a_heap_the_host_froze_is_left_as_the_host_froze_it(buffer, clock, thawed):
    import scrapy_sdi.outbox as outbox_module

    gc.freeze()
    box = outbox(buffer, clock)
    assert outbox_module._heap.holders == 0, "the host's freeze is the host's"
    await box.close(0)
    assert gc.get_freeze_count() > 0, "close does not thaw what the host froze"
