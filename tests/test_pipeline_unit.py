"""SDIPipeline's branches in-process: map, filter, hand the row to the outbox (here a fake one).

The subprocess crawls (test_delivery_e2e.py, test_pipeline_modes.py, test_local_faults.py)
prove delivery end to end; these pin what the pipeline decides for each item, and what it counts.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from scrapy.exceptions import DropItem
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.test import get_crawler
from twisted.internet import defer

from scrapy_sdi.buffer import FILTERED, INVALID, PENDING, BufferWriteError, Row
from scrapy_sdi.filters import compile_filters
from scrapy_sdi.mapping import stable_result_id
from scrapy_sdi.pipeline import SDIPipeline
from tests.support.outbox import turns

SETTINGS = {
    "SDI_API_URL": "http://127.0.0.1:9/api/v1",
    "SDI_USERNAME": "u",
    "SDI_PASSWORD": "p",
    "SDI_CRAWLER_NAME": "c",
}
EXCLUDE_ZIP = [{"id": 3, "field": "filename", "kind": "glob", "pattern": "*.zip"}]


class FakeOutbox:
    """Records what the pipeline puts; ``stored`` is put's answer, ``error`` what it raises."""

    def __init__(
        self,
        *,
        stored: bool = True,
        error: Exception | None = None,
        gate: defer.Deferred[None] | None = None,
    ) -> None:
        self.rows: list[Row] = []
        self.stored, self.error, self.gate = stored, error, gate

    async def put(self, row: Row) -> bool:
        self.rows.append(row)
        if self.gate is not None:
            await self.gate  # back-pressure: put waits until there is room
        if self.error is not None:
            raise self.error
        return self.stored


class FakeFilters:
    """The filters in force, as a FilterSource gives them."""

    def __init__(self, raw: list[dict[str, Any]]) -> None:
        self.current = compile_filters(raw, "v1")

    def in_force(self) -> Any:
        return self.current

    def match(self, url: str, filename: str) -> Any:
        return self.current.match(url, filename)


class FakeEngine:
    """Records the crawl's close (``crawler.engine``, as Scrapy's engine offers it)."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.scraper = object()

    async def close_spider_async(self, *, reason: str) -> None:
        self.reasons.append(reason)


def pipeline(
    outbox: FakeOutbox, filters: list[dict[str, Any]] | None = None, **settings: Any
) -> SDIPipeline:
    crawler = get_crawler(settings_dict={**SETTINGS, **settings})
    p = SDIPipeline.from_crawler(crawler)
    p.outbox = outbox  # type: ignore[assignment]
    p.filters = FakeFilters(filters or [])  # type: ignore[assignment]
    return p


@pytest_twisted.ensureDeferred
async def test_a_valid_item_is_put_pending_with_its_stable_id_and_passed_on():
    outbox = FakeOutbox()
    p = pipeline(outbox)
    item = {"url": "https://e.x/a.mp3", "uploader": "me"}
    assert await p.process_item(item) is item
    (row,) = outbox.rows
    assert (row.id, row.state, row.url, row.filters_version) == (
        stable_result_id("c", "https://e.x/a.mp3"),
        PENDING,
        "https://e.x/a.mp3",
        "v1",
    )


@pytest_twisted.ensureDeferred
async def test_a_deduplicated_item_is_still_passed_on():
    outbox = FakeOutbox(stored=False)  # its URL is buffered already: delivered or on its way
    item = {"url": "https://e.x/a.mp3"}
    assert await pipeline(outbox).process_item(item) is item


@pytest_twisted.ensureDeferred
async def test_an_invalid_item_is_kept_as_invalid_counted_and_dropped():
    outbox = FakeOutbox()
    p = pipeline(outbox)
    with pytest.raises(DropItem, match="invalid result"):
        await p.process_item({"description": "no url"})
    (row,) = outbox.rows
    assert row.state == INVALID and row.reason
    assert p.stats.get_value("sdi/items_invalid") == 1


@pytest_twisted.ensureDeferred
async def test_a_filtered_item_is_kept_with_the_filter_counted_and_dropped():
    outbox = FakeOutbox()
    p = pipeline(outbox, EXCLUDE_ZIP)
    with pytest.raises(DropItem, match="excluded by filter 3"):
        await p.process_item({"url": "https://e.x/a.zip"})
    (row,) = outbox.rows
    assert row.state == FILTERED and row.reason == "filter 3 (filename glob '*.zip')"
    assert row.id != stable_result_id(
        "c", "https://e.x/a.zip"
    )  # a random id: sent later if the filters change
    assert p.stats.get_value("sdi/items_filtered") == 1


@pytest_twisted.ensureDeferred
async def test_a_filtered_item_whose_url_is_buffered_is_dropped_uncounted():
    p = pipeline(FakeOutbox(stored=False), EXCLUDE_ZIP)
    with pytest.raises(DropItem):
        await p.process_item({"url": "https://e.x/a.zip"})
    assert not p.stats.get_value("sdi/items_filtered")  # counted when the buffered row is sent


@pytest_twisted.ensureDeferred
async def test_back_pressure_holds_the_item_until_the_outbox_takes_it():
    gate: defer.Deferred[None] = defer.Deferred()
    item = {"url": "https://e.x/a.mp3"}
    processing = defer.Deferred.fromCoroutine(pipeline(FakeOutbox(gate=gate)).process_item(item))
    assert not processing.called
    gate.callback(None)
    assert await processing is item


@pytest_twisted.ensureDeferred
async def test_after_a_buffer_failure_items_are_dropped_counted_and_the_crawl_closes_once():
    p = pipeline(
        FakeOutbox(error=BufferWriteError("SDI buffer b.db cannot store results (disk full)"))
    )
    engine = FakeEngine()
    assert p.crawler is not None
    p.crawler.engine = engine  # type: ignore[assignment]
    for url in ("https://e.x/1", "https://e.x/2"):
        with pytest.raises(DropItem, match="not buffered"):
            await p.process_item({"url": url})
    await turns()  # the close is started as a task
    assert p.stats.get_value("sdi/items_unbuffered") == 2
    assert engine.reasons == ["sdi_buffer_failed"]
    await p.close_spider()  # stops helping Scrapy close


@pytest_twisted.ensureDeferred
async def test_a_dry_run_counts_what_would_be_sent_and_keeps_no_buffer_file(tmp_path):
    crawler = get_crawler(
        settings_dict={
            **SETTINGS,
            "SDI_DRY_RUN": True,
            "SDI_FILTERS_ENABLED": False,
            "SDI_BUFFER_PATH": str(tmp_path / "b.db"),
            "SDI_BATCH_SIZE": 2,
        }
    )
    p = SDIPipeline.from_crawler(crawler)
    await deferred_from_coro(p.open_spider())
    await defer.gatherResults(
        [deferred_from_coro(p.process_item({"url": f"https://e.x/{i}"})) for i in range(3)]
    )
    await deferred_from_coro(p.close_spider())
    stats = crawler.stats
    assert stats.get_value("sdi/dry_run/items") == 3 and stats.get_value("sdi/items_delivered") == 0
    assert stats.get_value("sdi/pending_at_close") == 0
    assert not (tmp_path / "b.db").exists()
