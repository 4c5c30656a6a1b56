"""The delivery loop over rows already buffered: the filters in force when a row is sent.

Loop logic over the SQLite buffer, mostly in dry-run mode (no client: every batch is answered
accepted at once); where an earlier send's outcome matters, the reference server over loopback.
The hand-off of rows stored already leased is tested through the Outbox (test_outbox.py);
delivery in whole crawls is proven in test_delivery_e2e.py and tests/reliability/.
"""

from __future__ import annotations

import logging

import pytest
import pytest_twisted
from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler
from twisted.internet import reactor, task

from scrapy_sdi.buffer import DELIVERED, FILTERED, STATES, BufferLocked, Row, SQLiteBuffer
from scrapy_sdi.client import SDIClient
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.mapping import encode_result
from scrapy_sdi.settings import SDISettings
from tests.support.filters import InForce


@pytest.fixture
def buffer(tmp_path):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def delivery(buffer, client: SDIClient | None = None, **kwargs) -> Delivery:
    values = {"SDI_BATCH_SIZE": 10, "SDI_CONCURRENT_REQUESTS": 2, "SDI_DRY_RUN": client is None}
    if client is not None:  # retry at once: the test waits on real time
        values.update(SDI_RETRY_BACKOFF_BASE=0.01, SDI_RETRY_BACKOFF_MAX=0.02)
    settings = SDISettings.from_settings(
        Settings(values), "c", environ={}, dotenv_path=None, require_api=False
    )
    return Delivery(buffer, client, settings, **kwargs)


def rows(n: int, start: int = 0) -> list[Row]:
    return [
        Row(f"id{i}", "c", f"https://e.x/{i}", b'{"id": "id%d"}' % i)
        for i in range(start, start + n)
    ]


# -- the filters in force when a row is sent ------------------------------------------------------


EXCLUDE_BAD = [{"id": 7, "field": "url", "kind": "domain", "pattern": "bad.x"}]


def result_rows(hosts: list[str], version: str | None = None) -> list[Row]:
    """Rows as the pipeline stores them: the result's JSON, and the key of the filters it passed."""
    return [
        Row(
            f"id{i}",
            "c",
            f"https://{host}/{i}",
            encode_result({"url": f"https://{host}/{i}", "filename": f"{i}"}, f"id{i}"),
            filters_version=version,
        )
        for i, host in enumerate(hosts)
    ]


def filtering_delivery(buffer, filters: InForce) -> tuple[Delivery, StatsCollector]:
    stats = StatsCollector(get_crawler())
    return delivery(buffer, filters=filters, stats=stats), stats


def states_by_url(buffer) -> dict[str, tuple[str, str | None]]:
    return {r["url"]: (state, r["reason"]) for state in STATES for r in buffer.export(state)}


@pytest_twisted.ensureDeferred
async def test_rows_buffered_before_the_filters_were_known_are_matched_when_claimed(buffer):
    buffer.enqueue(
        result_rows(["ok.x", "bad.x", "sub.bad.x", "ok.x"]), dedup=False
    )  # no filters known then
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(5) == 0
    reason = "filter 7 (url domain 'bad.x')"
    assert states_by_url(buffer) == {
        "https://ok.x/0": (DELIVERED, None),
        "https://bad.x/1": (FILTERED, reason),
        "https://sub.bad.x/2": (FILTERED, reason),
        "https://ok.x/3": (DELIVERED, None),
    }
    assert stats.get_value("sdi/items_filtered") == stats.get_value("sdi/items_filtered/url") == 2
    assert stats.get_value("sdi/dry_run/items") == 2  # only the two that passed were "sent"
    assert d.backlog == 0


@pytest_twisted.ensureDeferred
async def test_a_row_that_passed_the_filters_in_force_is_not_matched_again(buffer):
    """The key a row remembers is what spares the drain a decode and a match per row."""
    buffer.enqueue(
        result_rows(["bad.x"], version="v1"), dedup=False
    )  # passed v1 (say, before bad.x was in it)
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(5) == 0
    assert buffer.counts("c")[DELIVERED] == 1 and not stats.get_value("sdi/items_filtered")


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
    buffer.enqueue(
        result_rows(["bad.x"] * 300 + ["ok.x"]), dedup=False
    )  # 30 batches of excluded rows first
    d, stats = filtering_delivery(buffer, InForce(EXCLUDE_BAD, "v1"))
    d.start()
    assert await d.drain(3) == 0  # at a tick (1 s) per emptied claim this would take 30 s
    assert stats.get_value("sdi/items_filtered") == 300 and buffer.counts("c")[DELIVERED] == 1


@pytest_twisted.ensureDeferred
async def test_a_row_the_api_stored_before_the_filters_excluded_it_is_kept_as_delivered(
    buffer, sdi_server
):
    """The API stored a row but its answer was lost; then filters that exclude the row came into
    force. The API has it: kept as filtered, the buffer would contradict the API's count. A row
    never sent before is still filtered, never submitted."""
    sdi_server.set_faults(drop_after_rate=1.0)  # stored, then the connection dropped
    client = SDIClient(sdi_server.url, sdi_server.username, sdi_server.password, timeout=5)
    filters = InForce([], "v0")
    buffer.enqueue(result_rows(["bad.x"]), dedup=False)
    d = delivery(buffer, client, filters=filters, stats=StatsCollector(get_crawler()))
    d.start()
    while not sdi_server.results():
        await task.deferLater(reactor, 0.02, lambda: None)
    filters.set(EXCLUDE_BAD, "v1")
    sdi_server.set_faults(drop_after_rate=0.0)
    late = result_rows(["ok.x", "bad.x"])[1]
    late.id, late.url = "late", "https://bad.x/late"
    buffer.enqueue([late], dedup=False)  # buffered while no filters were known, never sent
    try:
        assert await d.drain(10) == 0
        await d.stop()
    finally:
        await client.close()
    assert [r["url"] for r in sdi_server.results()] == ["https://bad.x/0"]
    states = states_by_url(buffer)
    assert states["https://bad.x/0"][0] == DELIVERED
    assert states["https://bad.x/late"][0] == FILTERED


class _UnreachableClaims(SQLiteBuffer):
    """Claims fail while ``down``, as a database server gone would make them (BufferLocked)."""

    down = True

    def claim(self, *args, **kwargs):
        if self.down:
            raise BufferLocked("the server does not answer")
        return super().claim(*args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_claims_failing_are_retried_every_tick_said_once_and_nothing_is_lost(
    tmp_path, caplog
):
    from twisted.internet import task

    from scrapy_sdi.delivery import TICK

    buffer = _UnreachableClaims(tmp_path / "b.db")
    buffer.enqueue(result_rows(["ok.x"] * 3), dedup=False)
    clock = task.Clock()
    d = delivery(buffer, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="scrapy_sdi.delivery"):
        d.start()
        for _ in range(5):
            clock.advance(TICK)
        assert buffer.counts("c")[DELIVERED] == 0
        buffer.down = False
        clock.advance(TICK)
    assert buffer.counts("c")[DELIVERED] == 3
    said = [r for r in caplog.records if "claiming results failed" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING] + [logging.DEBUG] * (len(said) - 1)
    assert len(said) >= 5
    assert "answers again" in caplog.text
    await d.stop()
    buffer.close()


class _UnreachableAcks(SQLiteBuffer):
    """Acks fail while ``down``, as a database server gone would make them."""

    down = True

    def ack(self, delivered, rejected):
        if self.down:
            raise BufferLocked("the server does not answer")
        return super().ack(delivered, rejected)


@pytest_twisted.ensureDeferred
async def test_outcomes_the_buffer_cannot_record_are_no_internal_error_and_the_rows_are_sent_again(
    tmp_path, caplog
):
    buffer = _UnreachableAcks(tmp_path / "b.db")
    buffer.enqueue(result_rows(["ok.x"] * 3), dedup=False)
    d = delivery(buffer)
    with caplog.at_level(logging.DEBUG, logger="scrapy_sdi.delivery"):
        d.start()
        left = await d.drain(0.2)
    assert left == 3 and buffer.counts("c")[DELIVERED] == 0
    assert "could not record a batch's outcomes (the server does not answer)" in caplog.text
    assert "unexpectedly" not in caplog.text and "Traceback" not in caplog.text
    buffer.down = False
    again = delivery(buffer)
    again.start()
    assert await again.drain(5) == 0
    await again.stop()
    assert buffer.counts("c")[DELIVERED] == 3
    buffer.close()
