"""The delivery loop over rows already buffered: the filters in force when a row is sent.

Pure loop logic over the SQLite buffer, in dry-run mode (no client: every batch is answered
accepted at once); the hand-off of rows stored already leased is tested through the Outbox
(test_outbox.py); delivery over real HTTP is proven in test_delivery_e2e.py and tests/reliability/.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler

from scrapy_sdi.buffer import DELIVERED, FILTERED, STATES, Row, SQLiteBuffer
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.mapping import encode_result
from scrapy_sdi.settings import SDISettings
from tests.support.filters import InForce


@pytest.fixture
def buffer(tmp_path):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def delivery(buffer, **kwargs) -> Delivery:
    settings = SDISettings.from_settings(
        Settings({"SDI_BATCH_SIZE": 10, "SDI_CONCURRENT_REQUESTS": 2, "SDI_DRY_RUN": True}),
        "c",
        environ={},
        dotenv_path=None,
        require_api=False,
    )
    return Delivery(buffer, None, settings, **kwargs)


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
