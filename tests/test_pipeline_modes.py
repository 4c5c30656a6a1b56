"""Buffer modes, dry run, dedup across runs and back-pressure, in real crawls."""

from __future__ import annotations

import sqlite3

from tests.support.backlog import waiting_peak, watch_waiting_rows
from tests.support.crawl import FAST_RETRIES, assert_stored_once, run_crawl


def _settings(server, tmp_path, **extra):
    return {
        **server.settings,
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        **FAST_RETRIES,
        **extra,
    }


def test_memory_buffer_delivers_everything(sdi_server, tmp_path):
    result = run_crawl(tmp_path, _settings(sdi_server, tmp_path, SDI_BUFFER="memory"), {"n": 300})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_delivered"] == 300
    assert "sdi/items_lost" not in result.stats
    assert not (tmp_path / "buffer.db").exists()
    assert_stored_once(sdi_server, 300)


def test_memory_buffer_counts_and_logs_what_is_lost(sdi_server, tmp_path):
    sdi_server.stop()
    result = run_crawl(
        tmp_path,
        _settings(sdi_server, tmp_path, SDI_BUFFER="memory", SDI_CLOSE_TIMEOUT=0.5),
        {"n": 120},
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_lost"] == 120
    assert "ERROR: SDI: 120 results were not delivered and are lost" in result.log


def test_a_buffer_class_by_dotted_path(sdi_server, tmp_path):
    result = run_crawl(
        tmp_path,
        _settings(sdi_server, tmp_path, SDI_BUFFER="tests.support.buffers.RecordingBuffer"),
        {"n": 50},
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_delivered"] == 50
    bad = run_crawl(
        tmp_path, _settings(sdi_server, tmp_path, SDI_BUFFER="tests.support.nothing.Here"), {"n": 5}
    )
    assert bad.returncode == 1
    assert (
        "SDI_BUFFER: 'tests.support.nothing.Here' is neither 'sqlite', 'memory', 'postgres' nor an importable class"
        in bad.log
    )


def test_dry_run_sends_nothing_claims_no_delivery_and_leaves_the_buffer_alone(sdi_server, tmp_path):
    result = run_crawl(tmp_path, _settings(sdi_server, tmp_path, SDI_DRY_RUN=True), {"n": 80})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/dry_run/items"] == 80
    assert 1 <= result.stats["sdi/dry_run/batches"] <= 80
    # nothing was sent, so nothing is counted as sent or delivered
    assert (
        result.stats.get("sdi/items_delivered", 0) == 0
        and result.stats.get("sdi/batches_sent", 0) == 0
    )
    assert result.stats.get("sdi/pending_at_close", 0) == 0 and "sdi/items_lost" not in result.stats
    assert sdi_server.results() == []
    assert sdi_server.stats()["requests"].get("/api/v1/crawler-results") is None
    assert not (tmp_path / "buffer.db").exists()
    start_line = next(line for line in result.log.splitlines() if "SDI delivery to " in line)
    assert "dry run" in start_line and "buffer.db" not in start_line


def test_the_same_urls_are_not_submitted_again_by_a_later_run(sdi_server, tmp_path):
    first = run_crawl(tmp_path, _settings(sdi_server, tmp_path), {"n": 100})
    second = run_crawl(tmp_path, _settings(sdi_server, tmp_path), {"n": 150})
    assert first.returncode == second.returncode == 0
    assert second.stats["sdi/items_deduplicated"] == 100
    assert second.stats["sdi/items_buffered"] == 50
    assert_stored_once(sdi_server, 150)
    off = run_crawl(tmp_path, _settings(sdi_server, tmp_path, SDI_DEDUP=False), {"n": 10})
    assert off.stats["sdi/items_buffered"] == 10 and off.stats["sdi/items_deduplicated"] == 0
    # new ids for the same URLs: the API stores them again, which is what SDI_DEDUP=False asks for
    assert len(sdi_server.results()) == 160


def test_back_pressure_holds_the_crawl_until_delivery_catches_up(sdi_server_factory, tmp_path):
    server = sdi_server_factory(latency=0.05)
    watch_waiting_rows(tmp_path / "buffer.db")
    result = run_crawl(
        tmp_path,
        _settings(server, tmp_path, SDI_BUFFER_MAX_PENDING=50, SDI_BATCH_SIZE=20),
        {"n": 400},
    )
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/backpressure_waits"] > 0
    assert waiting_peak(tmp_path / "buffer.db") == 50  # reached, never exceeded
    assert result.stats["sdi/items_delivered"] == 400
    assert_stored_once(server, 400)


def test_invalid_results_are_refused_with_a_reason_and_the_crawl_goes_on(sdi_server, tmp_path):
    result = run_crawl(tmp_path, _settings(sdi_server, tmp_path), {"n": 100, "bad_every": 10})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_invalid"] == 10
    assert result.stats["sdi/items_delivered"] == 90
    assert_stored_once(sdi_server, 90)
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        reasons = [r for (r,) in db.execute("SELECT reason FROM results WHERE state = 'invalid'")]
    assert len(reasons) == 10 and all("not an absolute http(s) URL" in r for r in reasons)


def test_ids_derive_from_crawler_and_url_so_separate_buffers_do_not_store_twice(
    sdi_server, tmp_path
):
    first = run_crawl(
        tmp_path, _settings(sdi_server, tmp_path, SDI_BUFFER_PATH=str(tmp_path / "a.db")), {"n": 60}
    )
    second = run_crawl(
        tmp_path, _settings(sdi_server, tmp_path, SDI_BUFFER_PATH=str(tmp_path / "b.db")), {"n": 60}
    )
    assert first.returncode == second.returncode == 0
    assert (
        second.stats["sdi/items_buffered"] == 60
    )  # a fresh buffer knows nothing of the first run...
    assert second.stats["sdi/items_duplicate"] == 60  # ...but the API recognises every id
    assert_stored_once(sdi_server, 60)
