"""Promise: a refresh that brings a long changed filter list never blocks the crawl's loop.

The attack: mid-crawl, the API's filters change from one to 100,000 domain filters, which take
far more than 100 ms of CPU to compile. A call due every 10 ms (``tests.support.lag.LagProbe``)
must never run 100 ms late while the refresh fetches and compiles them; the new list is in force
afterwards (a result matching only one of the new filters is not sent) and nothing is lost. The
asyncio reactor runs by default, the plain Twisted reactor and the reactorless mode with --long.
"""

from __future__ import annotations

import json

import pytest

from tests.support.crawl import REACTOR_MODES
from tests.support.filter_crawls import (
    filter_requests,
    run_during,
    settings,
    wait_until,
    write_script,
)

MAX_LAG_MS = 100
N_FILTERS = 100_000
OLD = [{"id": 1, "field": "url", "kind": "domain", "pattern": "old.test"}]
NEW = [
    {"id": i, "field": "url", "kind": "domain", "pattern": f"new-{i}.test"}
    for i in range(1, N_FILTERS + 1)
]


def items(tag: str) -> list[dict[str, str]]:
    hosts = ("old.test", f"new-{N_FILTERS}.test", "new-7.test", "keep.test", "other.test")
    return [{"url": f"https://{host}/{tag}-{n}.mp3"} for n in range(5) for host in hosts]


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param(mode, marks=() if mode == "asyncio" else pytest.mark.slow)
        for mode in REACTOR_MODES
    ],
)
def test_a_long_changed_filter_list_is_compiled_without_blocking_the_loop(
    sdi_server_factory, tmp_path, mode
):
    server = sdi_server_factory(filters={"version": "v1", "filters": OLD})
    before, after = items("before"), items("after")
    sent_first = [i for i in before if "old.test" not in i["url"]]
    phase1_done = tmp_path / "phase1.done"
    script = write_script(
        tmp_path,
        [
            {"items": before, "done_file": str(phase1_done)},
            {"wait_for": {"sdi/filters_version": "v2"}, "items": after},
        ],
    )
    crawl_settings = settings(
        server,
        tmp_path,
        SDI_FILTERS_REFRESH_INTERVAL=0.2,
        EXTENSIONS=json.dumps(
            {
                "tests.support.statsdump.StatsDump": 0,
                "scrapy_sdi.SDIStatus": 500,
                "tests.support.lag.LagProbe": 0,
            }
        ),
        **REACTOR_MODES[mode],
    )

    def change_filters(proc):
        wait_until(phase1_done.exists, "the first results to go through the pipeline", proc)
        # sent before the change: what is unsent when v2 comes into force is matched against v2
        wait_until(lambda: server.stats()["accepted"] == len(sent_first), "them sent", proc)
        wait_until(lambda: filter_requests(server).get("304", 0) >= 1, "a refresh", proc)
        assert server.set_filters(NEW, version="v2") == "v2"

    rc, stats, log = run_during(
        tmp_path, crawl_settings, {**script, "timeout": "30"}, "ScriptedSpider", change_filters
    )
    assert rc == 0, log[-3000:]
    assert "scripted/wait_timeout" not in stats, log[-3000:]
    assert stats["sdi/filters_version"] == "v2" and stats["sdi/filters_count"] == N_FILTERS
    assert stats["lag/max_ms"] < MAX_LAG_MS, (
        f"the loop ran {stats['lag/max_ms']:.0f} ms late while the refresh compiled "
        f"{N_FILTERS} filters (beside the collector: {stats['lag/max_ms_beside_gc']:.0f} ms)"
    )

    stored = {r["url"] for r in server.results()}
    expected = {i["url"] for i in sent_first} | {i["url"] for i in after if "new-" not in i["url"]}
    assert stored == expected  # the new filters in force afterwards, the old one gone
    assert stats["sdi/items_delivered"] == len(expected)
    assert stats["sdi/pending_at_close"] == 0
    assert stats["sdi/items_filtered"] == len(before) + len(after) - len(expected)
    assert "refresh failed" not in log and "Traceback" not in log
