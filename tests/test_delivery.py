"""The delivery loop's hand-off: rows stored already leased to this run skip the claim.

Pure loop logic over the SQLite buffer, in dry-run mode (no client: every batch is answered
accepted at once); delivery over real HTTP is proven in test_delivery_e2e.py and tests/reliability/.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler

from scrapy_sdi.buffer import DELIVERED, FILTERED, IN_FLIGHT, PENDING, STATES, Row, SQLiteBuffer
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.filters import FilterSet, compile_filters
from scrapy_sdi.mapping import encode_result
from scrapy_sdi.settings import SDISettings


@pytest.fixture
def buffer(tmp_path):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def delivery(buffer, **kwargs) -> Delivery:
    settings = SDISettings.from_settings(
        Settings({"SDI_BATCH_SIZE": 10, "SDI_CONCURRENT_REQUESTS": 2, "SDI_DRY_RUN": True}),
        "c", environ={}, dotenv_path=None, require_api=False,
    )
    return Delivery(buffer, None, settings, **kwargs)


def rows(n: int, start: int = 0) -> list[Row]:
    return [Row(f"id{i}", "c", f"https://e.x/{i}", b'{"id": "id%d"}' % i) for i in range(start, start + n)]


def commit(d: Delivery, buffer: SQLiteBuffer, group: list[Row]) -> list[Row]:
    """What the group writer does: ask for a lease, store, tell delivery what it was handed."""
    buffer.enqueue(group, True, d.lease(len(group)))
    d.wake(len(group), [r for r in group if r.state == IN_FLIGHT])
    return [r for r in group if r.state == IN_FLIGHT]


@pytest_twisted.ensureDeferred
async def test_while_delivery_keeps_up_rows_are_sent_from_memory_as_many_as_fit_in_flight(buffer):
    d = delivery(buffer)
    d.start()
    handed = commit(d, buffer, rows(25))
    assert len(handed) == 20  # SDI_CONCURRENT_REQUESTS x SDI_BATCH_SIZE
    # two full batches went at once (answered at once in a dry run); five rows wait, pending
    assert buffer.counts("c")[DELIVERED] == 20 and buffer.counts("c")[PENDING] == 5
    # older rows wait in the buffer: new ones queue behind them instead of skipping the claim
    assert d.lease(10) is None
    assert await d.drain(5) == 0
    assert buffer.counts("c")[DELIVERED] == 25
    assert d.lease(10) is not None  # caught up: the next rows may skip the claim again
    await d.stop()


@pytest_twisted.ensureDeferred
async def test_rows_held_in_memory_go_back_to_the_buffer_when_delivery_stops(buffer):
    d = delivery(buffer)
    d.start()
    assert len(commit(d, buffer, rows(4))) == 4  # fewer than a batch: held for LINGER
    assert buffer.counts("c")[IN_FLIGHT] == 4
    await d.stop()
    assert buffer.counts("c")[PENDING] == 4  # the next run claims them at once, not after the lease
    assert d.lease(1) is None  # a stopped loop hands nothing over
    assert [(c.id, c.attempts) for c in buffer.claim("c", "next", 10, 60)] == [(f"id{i}", 1) for i in range(4)]


# -- the filters in force when a row is sent ------------------------------------------------------


class InForce:
    """The filters delivery applies (a FilterSource's ``in_force``), changed by the test."""

    def __init__(self, raw: list[dict], version: str) -> None:
        self.set(raw, version)

    def set(self, raw: list[dict], version: str) -> None:
        self.current = compile_filters(raw, version)

    def in_force(self) -> FilterSet:
        return self.current


EXCLUDE_BAD = [{"id": 7, "field": "url", "kind": "domain", "pattern": "bad.x"}]


def result_rows(hosts: list[str], version: str | None = None) -> list[Row]:
    """Rows as the pipeline stores them: the result's JSON, and the key of the filters it passed."""
    return [
        Row(f"id{i}", "c", f"https://{host}/{i}", encode_result({"url": f"https://{host}/{i}", "filename": f"{i}"}, f"id{i}"),
            filters_version=version)
        for i, host in enumerate(hosts)
    ]


def filtering_delivery(buffer, filters: InForce) -> tuple[Delivery, StatsCollector]:
    stats = StatsCollector(get_crawler())
    return delivery(buffer, filters=filters, stats=stats), stats


def states_by_url(buffer) -> dict[str, tuple[str, str | None]]:
    return {r["url"]: (state, r["reason"]) for state in STATES for r in buffer.export(state)}


@pytest_twisted.ensureDeferred
async def test_rows_buffered_before_the_filters_were_known_are_matched_when_claimed(buffer):
    buffer.enqueue(result_rows(["ok.x", "bad.x", "sub.bad.x", "ok.x"]), dedup=False)  # no filters known then
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(5) == 0
    reason = "filter 7 (url domain 'bad.x')"
    assert states_by_url(buffer) == {
        "https://ok.x/0": (DELIVERED, None), "https://bad.x/1": (FILTERED, reason),
        "https://sub.bad.x/2": (FILTERED, reason), "https://ok.x/3": (DELIVERED, None),
    }
    assert stats.get_value("sdi/items_filtered") == stats.get_value("sdi/items_filtered/url") == 2
    assert stats.get_value("sdi/dry_run/items") == 2  # only the two that passed were "sent"
    assert d.backlog == 0


@pytest_twisted.ensureDeferred
async def test_a_row_that_passed_the_filters_in_force_is_not_matched_again(buffer):
    """The key a row remembers is what spares the drain a decode and a match per row."""
    buffer.enqueue(result_rows(["bad.x"], version="v1"), dedup=False)  # passed v1 (say, before bad.x was in it)
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(5) == 0
    assert buffer.counts("c")[DELIVERED] == 1 and not stats.get_value("sdi/items_filtered")


@pytest_twisted.ensureDeferred
async def test_rows_held_in_memory_are_matched_again_when_other_filters_come_into_force(buffer):
    filters = InForce([], "v0")
    d, stats = filtering_delivery(buffer, filters)
    d.start()
    group = result_rows(["ok.x", "bad.x", "ok.x"], version="v0")  # fewer than a batch: held for LINGER
    buffer.enqueue(group, True, d.lease(len(group)))
    d.wake(len(group), [r for r in group if r.state == IN_FLIGHT])
    assert buffer.counts("c")[IN_FLIGHT] == 3
    filters.set(EXCLUDE_BAD, "v1")  # a refresh before they are sent
    assert await d.drain(5) == 0
    assert states_by_url(buffer)["https://bad.x/1"] == (FILTERED, "filter 7 (url domain 'bad.x')")
    assert buffer.counts("c")[DELIVERED] == 2 and stats.get_value("sdi/items_filtered") == 1


@pytest_twisted.ensureDeferred
async def test_a_requeued_filtered_row_is_matched_again(buffer):
    buffer.enqueue(result_rows(["bad.x"]), dedup=False)
    filters = InForce(EXCLUDE_BAD, "v1")
    for _run in range(2):  # the second run after `scrapy sdi requeue --state filtered`
        d, stats = filtering_delivery(buffer, filters)
        d.start()
        assert await d.drain(5) == 0
        assert stats.get_value("sdi/items_filtered") == 1
        assert buffer.requeue(FILTERED) == 1
    assert buffer.counts("c")[DELIVERED] == 0


@pytest_twisted.ensureDeferred
async def test_a_backlog_the_filters_exclude_is_cleared_without_waiting_a_tick_per_batch(buffer):
    buffer.enqueue(result_rows(["bad.x"] * 300 + ["ok.x"]), dedup=False)  # 30 batches of excluded rows first
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(3) == 0  # at a tick (1 s) per emptied claim this would take 30 s
    assert stats.get_value("sdi/items_filtered") == 300 and buffer.counts("c")[DELIVERED] == 1
