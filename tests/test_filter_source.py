"""FilterSource's refresh: a changed list is compiled off the loop thread and put in force on it
once compiled; until then, and when compiling fails, the filters in use stay in force.

The API here is a stand-in answering in memory: what is checked is where the
compile runs and what is in force, not the HTTP exchange (tests/test_filtering_e2e.py)."""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
import pytest_twisted
from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from scrapy.utils.test import get_crawler

from scrapy_sdi import filter_source
from scrapy_sdi.buffer import MemoryBuffer
from scrapy_sdi.buffer_calls import BufferCalls
from scrapy_sdi.client import filters_answer
from scrapy_sdi.filter_source import FilterSource
from scrapy_sdi.settings import SDISettings
from scrapy_sdi.transport import Reply

V1 = {"version": "v1", "filters": [{"id": 1, "field": "url", "kind": "domain", "pattern": "a.x"}]}
V2 = {"version": "v2", "filters": [{"id": 2, "field": "url", "kind": "domain", "pattern": "b.x"}]}


class Answers:
    """The API's filters, as the client gives them: the next answer, or None (304) when current."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    async def filters_reply(self, version: str | None = None) -> Reply | None:
        if version == self.answer["version"]:
            return None
        return Reply(200, {}, orjson.dumps(self.answer))

    async def filters(self, version: str | None = None) -> dict[str, Any] | None:
        reply = await self.filters_reply(version)
        return None if reply is None else filters_answer(reply)


def source(client: Answers) -> tuple[FilterSource, StatsCollector]:
    settings = SDISettings.from_settings(
        Settings({"SDI_FILTERS_REFRESH_INTERVAL": 0}),
        "c",
        environ={},
        dotenv_path=None,
        require_api=False,
    )
    stats = StatsCollector(get_crawler())
    return FilterSource(settings, BufferCalls(MemoryBuffer()), client, stats=stats), stats  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_a_refreshed_list_is_compiled_off_the_loop_thread_and_swapped_in_on_it(
    monkeypatch,
):
    client = Answers(V1)
    filters, stats = source(client)
    await filters.load()
    assert filters.match("https://a.x/1", "1") is not None
    loop_thread = threading.current_thread()
    compiled_on: list[threading.Thread] = []
    compile = filter_source._compile

    def recording(raw, version):
        compiled_on.append(threading.current_thread())
        # while it compiles, the old filters are still in force
        assert filters.current.version == "v1"
        return compile(raw, version)

    monkeypatch.setattr(filter_source, "_compile", recording)
    client.answer = V2
    filters._refresh()
    assert filters.current.version == "v1"  # not before the thread is done
    await filters.close()
    assert compiled_on and compiled_on[0] is not loop_thread
    assert filters.current.version == "v2" and stats.get_value("sdi/filters_version") == "v2"
    assert filters.match("https://b.x/1", "1") is not None
    assert filters.match("https://a.x/1", "1") is None


@pytest_twisted.ensureDeferred
async def test_a_failure_while_compiling_keeps_the_filters_in_use(monkeypatch, caplog):
    client = Answers(V1)
    filters, stats = source(client)
    await filters.load()

    def broken(raw, version):
        raise MemoryError("no room for the new filters")

    monkeypatch.setattr(filter_source, "_compile", broken)
    client.answer = V2
    with caplog.at_level(logging.WARNING, logger="scrapy_sdi.filter_source"):
        filters._refresh()
        await filters.close()
    assert filters.current.version == "v1" and filters.match("https://a.x/1", "1") is not None
    assert stats.get_value("sdi/filters_refresh_failures") == 1
    assert stats.get_value("sdi/filters_version") == "v1"
    assert any("keeping 1 current filters" in r.getMessage() for r in caplog.records)


@pytest_twisted.ensureDeferred
async def test_an_unreadable_refreshed_answer_keeps_the_filters_in_use(caplog):
    client = Answers(V1)
    filters, stats = source(client)
    await filters.load()

    async def garbled(version: str | None = None) -> Reply:
        return Reply(200, {}, b'{"version": "v2", "filters": [')

    client.filters_reply = garbled  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="scrapy_sdi.filter_source"):
        filters._refresh()
        await filters.close()
    assert filters.current.version == "v1" and filters.match("https://a.x/1", "1") is not None
    assert stats.get_value("sdi/filters_refresh_failures") == 1
    assert any("is not JSON" in r.getMessage() for r in caplog.records)
