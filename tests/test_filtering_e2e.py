"""The API's filters in real crawls: loaded at open, cached, refreshed mid-crawl, enforced.

Every crawl runs in its own process against the reference server over loopback, with a real
SQLite buffer; assertions read the server's stored results, the crawl's final stats and log,
and the buffer file itself.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from tests.support.commands import sdi
from tests.support.crawl import crawl_command, run_crawl
from tests.support.filter_crawls import (
    FILTERS,
    cases,
    command_settings,
    describe,
    field_of,
    filter_requests,
    run_during,
    settings,
    wait_until,
    write_script,
)


def buffer_rows(tmp_path: Path, state: str | None = None) -> list[tuple[str, str, str | None]]:
    conn = sqlite3.connect(tmp_path / "buffer.db")
    try:
        rows = conn.execute("SELECT url, state, reason FROM results ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [r for r in rows if state is None or r[1] == state]


def log_lines(log: str, level: str) -> list[str]:
    return [line for line in log.splitlines() if f"] {level}: " in line]


def assert_filtered_as_expected(
    result, rows, expected: list[tuple[dict[str, str], int | None]]
) -> None:
    excluded = {item["url"]: fid for item, fid in expected if fid is not None}
    stats = result.stats
    assert stats.get("sdi/items_filtered") == len(excluded)
    by_field = {
        f: sum(1 for fid in excluded.values() if field_of(fid) == f) for f in ("url", "filename")
    }
    assert by_field["url"] and by_field["filename"]
    assert stats.get("sdi/items_filtered/url") == by_field["url"]
    assert stats.get("sdi/items_filtered/filename") == by_field["filename"]
    assert (
        stats["sdi/items_filtered/url"] + stats["sdi/items_filtered/filename"]
        == stats["sdi/items_filtered"]
    )
    assert stats.get("item_dropped_count") == len(excluded)
    kept = {url: reason for url, _state, reason in rows}
    assert kept == {url: describe(fid) for url, fid in excluded.items()}


# --- tests --------------------------------------------------------------------------------------


def test_filters_from_the_api_keep_matching_results_from_the_server(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    expected = cases()
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": [i for i, _ in expected]}]),
        spider="ScriptedSpider",
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] == "finished"

    passing = {item["url"] for item, fid in expected if fid is None}
    stored = {r["url"] for r in server.results()}
    assert stored == passing  # incl. badexample.org; none of the excluded ones
    assert "https://badexample.org/c.mp3" in stored
    assert result.stats["sdi/items_delivered"] == len(passing)
    assert result.stats["sdi/pending_at_close"] == 0

    assert result.stats["sdi/filters_source"] == "api"
    assert result.stats["sdi/filters_count"] == len(FILTERS)
    assert_filtered_as_expected(result, buffer_rows(tmp_path, "filtered"), expected)
    assert (
        "Dropped:" not in result.log
    )  # filtered results are dropped at DEBUG, not logged at INFO+
    assert not log_lines(result.log, "ERROR") and "Traceback" not in result.log


def test_filters_changed_on_the_server_apply_mid_crawl(sdi_server_factory, tmp_path):
    server = sdi_server_factory(
        filters={
            "version": "v1",
            "filters": [{"id": 1, "field": "url", "kind": "domain", "pattern": "old.test"}],
        }
    )
    new_filters = [{"id": 2, "field": "url", "kind": "domain", "pattern": "new.test"}]

    def items(numbers):
        return [
            {"url": f"https://{host}/{n}.mp3"}
            for n in numbers
            for host in ("old.test", "new.test", "keep.test")
        ]

    phase1_done = tmp_path / "phase1.done"
    script = write_script(
        tmp_path,
        [
            {"items": items(range(0, 4)), "done_file": str(phase1_done)},
            {"wait_for": {"sdi/filters_version": "v2"}, "items": items(range(4, 8))},
        ],
    )
    cmd, env = crawl_command(
        tmp_path,
        settings(server, tmp_path, SDI_FILTERS_REFRESH_INTERVAL=0.2),
        {**script, "timeout": "20"},
        "ScriptedSpider",
    )
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until(phase1_done.exists, "phase 1 to go through the pipeline", proc)
        # sent before v2: what is still unsent when v2 comes into force is matched against v2
        wait_until(lambda: server.stats()["accepted"] == 8, "phase 1 delivered", proc)
        # the refresh loop is running and asks with If-None-Match: unchanged filters answer 304
        wait_until(
            lambda: filter_requests(server).get("304", 0) >= 1, "a conditional refresh", proc
        )
        assert server.set_filters(new_filters, version="v2") == "v2"
        log = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log[-3000:]
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert "scripted/wait_timeout" not in stats, log[-3000:]

    stored = {r["url"] for r in server.results()}
    assert stored == (
        {f"https://new.test/{n}.mp3" for n in range(0, 4)}  # phase 1: only old.test excluded
        | {f"https://old.test/{n}.mp3" for n in range(4, 8)}  # phase 2: old filter gone
        | {f"https://keep.test/{n}.mp3" for n in range(0, 8)}
    )
    filtered = {url: reason for url, _state, reason in buffer_rows(tmp_path, "filtered")}
    assert filtered == {
        **{f"https://old.test/{n}.mp3": "filter 1 (url domain 'old.test')" for n in range(0, 4)},
        **{f"https://new.test/{n}.mp3": "filter 2 (url domain 'new.test')" for n in range(4, 8)},
    }
    assert stats["sdi/items_filtered"] == stats["sdi/items_filtered/url"] == 8
    assert stats["sdi/filters_source"] == "api"
    assert stats["sdi/filters_version"] == "v2"
    assert stats["sdi/filters_count"] == 1
    requests = filter_requests(server)
    assert requests.get("200") == 2  # the load and the one refresh that saw v2; the rest were 304s
    assert requests.get("304", 0) >= 1
    assert "refresh failed" not in log and "Traceback" not in log


def test_api_down_at_start_uses_the_cached_filters(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    first_cases = cases("1")
    first = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": [i for i, _ in first_cases]}]),
        spider="ScriptedSpider",
    )
    assert first.returncode == 0, first.log[-3000:]
    assert first.stats["sdi/filters_source"] == "api"
    stored_before = len(server.results())

    server.stop()
    second_cases = cases("2")
    second = run_crawl(
        tmp_path,
        settings(
            server, tmp_path, SDI_CLOSE_TIMEOUT=1, SDI_FILTERS_REQUIRED=True
        ),  # a cache satisfies REQUIRED
        write_script(tmp_path, [{"items": [i for i, _ in second_cases]}], "script2.json"),
        spider="ScriptedSpider",
    )
    assert second.returncode == 0, second.log[-3000:]
    assert second.stats["finish_reason"] == "finished"
    assert second.stats["sdi/filters_source"] == "cache"
    assert second.stats["sdi/filters_count"] == len(FILTERS)
    warnings = [line for line in log_lines(second.log, "WARNING") if "cached" in line]
    assert warnings, second.log[-3000:]
    assert re.search(r"\b\d+(\.\d+)?(s|min|h) old\b", warnings[0]), warnings[0]
    second_rows = [r for r in buffer_rows(tmp_path, "filtered") if r[0].endswith("?run=2")]
    assert_filtered_as_expected(second, second_rows, second_cases)
    passing = [item for item, fid in second_cases if fid is None]
    assert second.stats["sdi/items_buffered"] == len(passing)
    assert second.stats["sdi/pending_at_close"] == len(passing)
    assert sorted(url for url, _s, _r in buffer_rows(tmp_path, "pending")) == sorted(
        i["url"] for i in passing
    )

    server.start()  # the next run delivers what the outage left, and nothing it filtered
    third = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": []}], "script3.json"),
        spider="ScriptedSpider",
    )
    assert third.returncode == 0, third.log[-3000:]
    assert third.stats["sdi/filters_source"] == "api"
    stored = [r["url"] for r in server.results()]
    assert len(stored) == stored_before + len(passing)
    assert {i["url"] for i in passing} <= set(stored)


def run_in_background(
    tmp_path: Path, crawl_settings: dict[str, Any], phases: list[dict[str, Any]], during
) -> tuple[int, dict[str, Any], str]:
    """Run a ScriptedSpider crawl, call ``during(proc)`` while it runs, return (rc, stats, log)."""
    script = write_script(tmp_path, phases, "background.json")
    rc, stats, log = run_during(
        tmp_path, crawl_settings, {**script, "timeout": "20"}, "ScriptedSpider", during
    )
    assert "scripted/wait_timeout" not in stats, log[-3000:]
    return rc, stats, log


def test_api_back_mid_crawl_confirms_the_cached_filters_with_a_304(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    first = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": []}]),
        spider="ScriptedSpider",
    )
    assert first.returncode == 0 and first.stats["sdi/filters_source"] == "api", first.log[-3000:]
    server.stop()

    phase1_done = tmp_path / "phase1.done"
    phase1, phase2 = cases("1"), cases("2")

    def restart_server(proc):
        wait_until(phase1_done.exists, "phase 1 to go through the pipeline", proc)
        server.start()  # same port; its request counters start from zero

    rc, stats, log = run_in_background(
        tmp_path,
        settings(server, tmp_path, SDI_FILTERS_REFRESH_INTERVAL=0.2),
        [
            {"items": [i for i, _ in phase1], "done_file": str(phase1_done)},
            {"wait_for": {"sdi/filters_source": "api"}, "items": [i for i, _ in phase2]},
        ],
        restart_server,
    )
    assert rc == 0, log[-3000:]
    assert "cached filters" in log
    assert stats["sdi/filters_source"] == "api"  # confirmed by the API, no longer "cache"
    requests = filter_requests(server)
    assert requests.get("304", 0) >= 1 and "200" not in requests  # asked with the cached version
    assert stats["sdi/items_filtered"] == 2 * sum(1 for _, fid in phase1 if fid is not None)
    passing = {item["url"] for item, fid in phase1 + phase2 if fid is None}
    assert {r["url"] for r in server.results()} == passing
    assert stats["sdi/pending_at_close"] == 0


def test_a_failed_refresh_keeps_the_filters_in_use(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    phase1_done = tmp_path / "phase1.done"
    phase1, phase2 = cases("1"), cases("2")

    def stop_server(proc):
        wait_until(phase1_done.exists, "phase 1 to go through the pipeline", proc)
        wait_until(
            lambda: server.stats()["accepted"] == sum(1 for _, fid in phase1 if fid is None),
            "phase 1 delivered",
            proc,
        )
        server.stop()

    rc, stats, log = run_in_background(
        tmp_path,
        settings(server, tmp_path, SDI_FILTERS_REFRESH_INTERVAL=0.2, SDI_CLOSE_TIMEOUT=1),
        [
            {"items": [i for i, _ in phase1], "done_file": str(phase1_done)},
            {"wait_for": {"sdi/filters_refresh_failures": 2}, "items": [i for i, _ in phase2]},
        ],
        stop_server,
    )
    assert rc == 0, log[-3000:]
    assert stats["sdi/filters_refresh_failures"] >= 2
    assert any(
        "refresh failed" in line and f"keeping {len(FILTERS)} current filters" in line
        for line in log_lines(log, "WARNING")
    )
    assert stats["sdi/filters_source"] == "api" and stats["sdi/filters_count"] == len(FILTERS)
    phase2_rows = [r for r in buffer_rows(tmp_path, "filtered") if r[0].endswith("?run=2")]
    assert len(phase2_rows) == sum(1 for _, fid in phase2 if fid is not None)
    assert sorted(url for url, _s, _r in buffer_rows(tmp_path, "pending")) == sorted(
        i["url"] for i, fid in phase2 if fid is None
    )
    assert "Traceback" not in log


def test_api_down_without_cache_crawls_unfiltered_with_a_warning(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    server.stop()
    expected = cases()
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CLOSE_TIMEOUT=1),
        write_script(tmp_path, [{"items": [i for i, _ in expected]}]),
        spider="ScriptedSpider",
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] == "finished"
    assert result.stats["sdi/filters_source"] == "none"
    assert result.stats["sdi/filters_count"] == 0
    assert result.stats["sdi/items_filtered"] == 0
    assert result.stats["sdi/items_buffered"] == len(expected)
    assert not buffer_rows(tmp_path, "filtered")
    assert any("unfiltered" in line for line in log_lines(result.log, "WARNING")), result.log[
        -3000:
    ]


def test_api_down_without_cache_and_filters_required_closes_the_spider(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(filters=FILTERS)
    server.stop()
    expected = cases()
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CLOSE_TIMEOUT=1, SDI_FILTERS_REQUIRED=True),
        write_script(tmp_path, [{"items": [i for i, _ in expected]}]),
        spider="ScriptedSpider",
    )
    assert result.stats.get("finish_reason") == "sdi_filters_unavailable", result.log[-3000:]
    assert result.stats.get("sdi/filters_source") == "none"
    assert not result.stats.get("item_scraped_count")
    assert not result.stats.get("sdi/items_buffered")
    assert buffer_rows(tmp_path) == []  # nothing buffered, so nothing a later run could deliver
    assert any("SDI_FILTERS_REQUIRED" in line for line in log_lines(result.log, "ERROR")), (
        result.log[-3000:]
    )


def test_invalid_filters_are_skipped_with_a_warning_and_the_others_apply(
    sdi_server_factory, tmp_path
):
    bad = [
        {"id": "bad-regex", "field": "url", "kind": "regex", "pattern": "(unclosed"},
        {"id": "bad-kind", "field": "url", "kind": "wildcard", "pattern": "*"},
        {"id": "bad-field", "field": "referrer", "kind": "exact", "pattern": "x"},
        {
            "id": "domain-on-filename",
            "field": "filename",
            "kind": "domain",
            "pattern": "example.org",
        },
    ]
    server = sdi_server_factory(filters=[bad[0], bad[1], FILTERS[0], bad[2], bad[3]])
    items = [
        {"url": "https://example.org/a.mp3"},  # the valid domain filter
        {
            "url": "https://files.test/(unclosed/b.mp3"
        },  # bad-regex would have matched: it is ignored
        {"url": "https://files.test/x", "filename": "example.org"},
        {"url": "https://badexample.org/c.mp3"},
    ]
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": items}]),
        spider="ScriptedSpider",
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/filters_source"] == "api"
    assert result.stats["sdi/filters_count"] == 1
    warnings = log_lines(result.log, "WARNING")
    for entry in bad:
        assert any(entry["id"] in line for line in warnings), (entry["id"], warnings)
    assert result.stats["sdi/items_filtered"] == 1
    assert {r["url"] for r in server.results()} == {i["url"] for i in items[1:]}
    assert [(url, reason) for url, _s, reason in buffer_rows(tmp_path, "filtered")] == [
        ("https://example.org/a.mp3", describe(1))
    ]


def test_filters_disabled_filters_nothing(sdi_server_factory, tmp_path):
    server = sdi_server_factory(filters=FILTERS)
    expected = cases()
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_FILTERS_ENABLED=False),
        write_script(tmp_path, [{"items": [i for i, _ in expected]}]),
        spider="ScriptedSpider",
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/filters_source"] == "disabled"
    assert result.stats["sdi/items_filtered"] == 0
    assert {r["url"] for r in server.results()} == {item["url"] for item, _ in expected}
    assert result.stats["sdi/items_delivered"] == len(expected)
    assert not buffer_rows(tmp_path, "filtered")
    assert "/api/v1/filters" not in server.stats()["requests"]  # not even asked for


def test_filtered_and_invalid_results_do_not_count_against_back_pressure(
    sdi_server_factory, tmp_path
):
    """Rows kept as filtered or invalid are never sent, so they must not fill SDI_BUFFER_MAX_PENDING:
    a crawl whose results are mostly excluded would otherwise wait for room forever."""
    # every result whose number does not end in 0 is excluded; every 7th is not even a URL
    server = sdi_server_factory(
        filters=[{"id": 1, "field": "url", "kind": "regex", "pattern": r"/f/\d*[1-9]/"}]
    )
    result = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_BUFFER_MAX_PENDING=10),
        {"n": 400, "bad_every": 7},
        timeout=60,
    )
    assert result.returncode == 0, result.log[-3000:]
    sent = {f"https://files.example.com/f/{i}/file{i}.mp3" for i in range(0, 400, 10) if i % 7}
    assert {r["url"] for r in server.results()} == sent
    assert result.stats["sdi/items_delivered"] == len(sent)
    assert result.stats["sdi/items_invalid"] == len(range(0, 400, 7))
    assert result.stats["sdi/items_filtered"] == 400 - len(sent) - len(range(0, 400, 7))
    assert result.stats["sdi/pending_at_close"] == 0


# --- the filters in force when a result is sent -----------------------------------------------------


def buffer_unfiltered_while_the_api_is_down(
    server, tmp_path: Path
) -> list[tuple[dict[str, str], int | None]]:
    """A crawl with the API down and no cached filters: every case is buffered, pending."""
    server.stop()
    expected = cases()
    down = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CLOSE_TIMEOUT=0.5),
        write_script(tmp_path, [{"items": [i for i, _ in expected]}], "down.json"),
        spider="ScriptedSpider",
    )
    assert down.returncode == 0 and down.stats["sdi/filters_source"] == "none", down.log[-3000:]
    assert down.stats["sdi/pending_at_close"] == len(expected)
    server.start()
    return expected


def assert_excluded_kept_and_never_sent(server, tmp_path: Path, expected) -> None:
    """Only the results the filters let through were stored; the others are filtered rows with their filter."""
    excluded = {item["url"]: fid for item, fid in expected if fid is not None}
    assert {r["url"] for r in server.results()} == {
        item["url"] for item, fid in expected if fid is None
    }
    assert {url: reason for url, _s, reason in buffer_rows(tmp_path, "filtered")} == {
        url: describe(fid) for url, fid in excluded.items()
    }
    assert not buffer_rows(tmp_path, "pending") and not buffer_rows(tmp_path, "in_flight")


def test_filters_loaded_by_a_later_run_exclude_what_an_unfiltered_run_buffered(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(filters=FILTERS)
    expected = buffer_unfiltered_while_the_api_is_down(server, tmp_path)
    later = run_crawl(
        tmp_path,
        settings(server, tmp_path),
        write_script(tmp_path, [{"items": []}]),
        spider="ScriptedSpider",
    )
    assert later.returncode == 0 and later.stats["sdi/filters_source"] == "api", later.log[-3000:]
    assert_excluded_kept_and_never_sent(server, tmp_path, expected)
    excluded = [fid for _, fid in expected if fid is not None]
    assert later.stats["sdi/items_filtered"] == len(excluded)
    for field in ("url", "filename"):
        assert later.stats[f"sdi/items_filtered/{field}"] == sum(
            1 for fid in excluded if field_of(fid) == field
        )
    assert later.stats["sdi/items_delivered"] == sum(1 for _, fid in expected if fid is None)
    assert later.stats["sdi/pending_at_close"] == 0


def test_flush_applies_the_api_filters_to_what_an_unfiltered_run_buffered(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(filters=FILTERS)
    expected = buffer_unfiltered_while_the_api_is_down(server, tmp_path)
    proc = sdi(
        tmp_path,
        "flush",
        "--json",
        settings=command_settings(server, tmp_path),
        secret=server.password,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_excluded_kept_and_never_sent(server, tmp_path, expected)
    excluded = sum(1 for _, fid in expected if fid is not None)
    summary = json.loads(proc.stdout)
    assert (summary["delivered"], summary["filtered"]) == (len(expected) - excluded, excluded)
    text = sdi(
        tmp_path, "flush", settings=command_settings(server, tmp_path), secret=server.password
    )
    assert text.returncode == 0 and "0 delivered" in text.stdout, text.stdout + text.stderr


def test_flush_uses_the_cached_filters_when_the_api_is_down(sdi_server_factory, tmp_path):
    """With the API down the cached filters decide what may be sent; whether an excluded row was
    stored by an earlier attempt only the API can say, so it stays pending until it answers."""
    server = sdi_server_factory(filters=FILTERS)
    expected = buffer_unfiltered_while_the_api_is_down(server, tmp_path)
    # another crawler's run caches the API's filters in the same buffer, and leaves these rows alone
    cache = run_crawl(
        tmp_path,
        settings(server, tmp_path, SDI_CRAWLER_NAME="other"),
        write_script(tmp_path, [{"items": []}]),
        spider="ScriptedSpider",
    )
    assert cache.stats["sdi/filters_source"] == "api" and not server.results(), cache.log[-3000:]
    server.stop()
    proc = sdi(
        tmp_path,
        "flush",
        "--json",
        "--timeout",
        "1",
        settings=command_settings(server, tmp_path),
        secret=server.password,
    )
    assert proc.returncode == 1 and "cached filters" in proc.stderr, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["filtered"] == 0 and not buffer_rows(tmp_path, "filtered")
    assert len(buffer_rows(tmp_path, "pending")) == len(expected)
    server.start()  # the API answers again: the excluded rows end filtered, never sent
    proc = sdi(
        tmp_path, "flush", settings=command_settings(server, tmp_path), secret=server.password
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_excluded_kept_and_never_sent(server, tmp_path, expected)


def test_flush_refuses_in_one_line_when_filters_are_required_and_none_can_be_loaded(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(filters=FILTERS)
    buffer_unfiltered_while_the_api_is_down(server, tmp_path)
    server.stop()
    before = buffer_rows(tmp_path)
    proc = sdi(
        tmp_path,
        "flush",
        settings=command_settings(server, tmp_path, SDI_FILTERS_REQUIRED="True"),
        secret=server.password,
    )
    assert proc.returncode == 1 and proc.stdout == "", proc.stdout + proc.stderr
    (line,) = proc.stderr.splitlines()
    assert (
        line.startswith("scrapy sdi flush: SDI_FILTERS_REQUIRED: API unavailable")
        and "no cached filters" in line
    ), line
    assert buffer_rows(tmp_path) == before


def test_a_refresh_excludes_results_buffered_before_it_and_not_yet_sent(
    sdi_server_factory, tmp_path
):
    server = sdi_server_factory(
        filters={
            "version": "v1",
            "filters": [{"id": 1, "field": "url", "kind": "domain", "pattern": "old.test"}],
        },
        fail_rate=1.0,
    )
    items = [
        {"url": f"https://{host}/{n}.mp3"}
        for n in range(6)
        for host in ("old.test", "new.test", "keep.test")
    ]
    buffered, refreshed = tmp_path / "buffered.done", tmp_path / "refreshed.done"

    def refresh_then_heal(proc):
        wait_until(buffered.exists, "the results to be buffered", proc)
        wait_until(
            lambda: server.stats()["requests"].get("/api/v1/crawler-results"),
            "a failed submission",
            proc,
        )
        server.set_filters(
            [{"id": 2, "field": "url", "kind": "domain", "pattern": "new.test"}], version="v2"
        )
        wait_until(refreshed.exists, "the crawl to refresh its filters", proc)
        server.set_faults(fail_rate=0.0)

    rc, stats, log = run_in_background(
        tmp_path,
        settings(server, tmp_path, SDI_FILTERS_REFRESH_INTERVAL=0.2, SDI_CLOSE_TIMEOUT=30),
        [
            {"items": items, "done_file": str(buffered)},
            {"wait_for": {"sdi/filters_version": "v2"}, "done_file": str(refreshed)},
        ],
        refresh_then_heal,
    )
    assert rc == 0, log[-3000:]
    assert {r["url"] for r in server.results()} == {f"https://keep.test/{n}.mp3" for n in range(6)}
    filtered = {url: reason for url, _s, reason in buffer_rows(tmp_path, "filtered")}
    assert filtered == {
        **{
            f"https://old.test/{n}.mp3": "filter 1 (url domain 'old.test')" for n in range(6)
        },  # by the pipeline
        **{
            f"https://new.test/{n}.mp3": "filter 2 (url domain 'new.test')" for n in range(6)
        },  # when they were sent
    }
    assert stats["sdi/items_filtered"] == stats["sdi/items_filtered/url"] == 12
    assert stats["sdi/pending_at_close"] == 0 and "Traceback" not in log
