"""Local faults: an unusable or corrupt buffer file, a plain-http API, secrets in every output."""

from __future__ import annotations

import os

from tests.support.crawl import FAST_RETRIES, assert_stored_once, run_crawl


def _settings(server, path, **extra):
    return {**server.settings, **FAST_RETRIES, "SDI_BUFFER_PATH": str(path), **extra}


def test_a_corrupt_buffer_closes_the_spider_with_one_clear_line_and_is_kept(sdi_server, tmp_path):
    path = tmp_path / "buffer.db"
    path.write_bytes(b"this is not a database" * 100)
    result = run_crawl(tmp_path, _settings(sdi_server, path), {"n": 20})
    assert result.returncode == 0
    assert result.stats["finish_reason"] == "sdi_buffer_unavailable"
    assert result.stats.get("item_scraped_count", 0) == 0  # nothing crawled, nothing lost
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1 and str(path) in errors[0] and "SDI_BUFFER_RECOVER" in errors[0], (
        result.log[-3000:]
    )
    assert path.read_bytes().startswith(b"this is not a database")
    assert "Traceback" not in result.log


def test_recover_moves_the_corrupt_file_aside_and_delivers(sdi_server, tmp_path):
    path = tmp_path / "buffer.db"
    path.write_bytes(b"garbage" * 100)
    result = run_crawl(tmp_path, _settings(sdi_server, path, SDI_BUFFER_RECOVER=True), {"n": 30})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_delivered"] == 30
    aside = [p for p in os.listdir(tmp_path) if p.startswith("buffer.db.corrupt-")]
    assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes() == b"garbage" * 100
    assert "moved aside" in result.log
    assert_stored_once(sdi_server, 30)


def test_an_unwritable_buffer_path_is_named(sdi_server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "sub" / "buffer.db"  # a directory cannot be made under a file
    result = run_crawl(tmp_path, _settings(sdi_server, path), {"n": 5})
    assert result.stats["finish_reason"] == "sdi_buffer_unavailable"
    assert f"SDI buffer {path} cannot be used" in result.log and "writable" in result.log


def test_buffer_file_is_owner_only_and_no_secret_leaks_anywhere(sdi_server, tmp_path):
    path = tmp_path / "buffer.db"
    sdi_server.set_faults(token_max_uses=3, fail_rate=0.2)
    result = run_crawl(
        tmp_path,
        _settings(sdi_server, path, SDI_AUDIT_LOG=str(tmp_path / "audit.jsonl"), LOG_LEVEL="DEBUG"),
        {"n": 200},
    )
    assert result.returncode == 0, result.log[-3000:]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    outputs = result.log + (tmp_path / "audit.jsonl").read_text() + str(result.stats)
    assert sdi_server.password not in outputs
    assert (
        "Bearer" not in outputs and "access_token" not in outputs and "refresh_token" not in outputs
    )


def test_plain_http_to_another_host_warns(caplog):
    # checked without a connection: the tests send traffic to loopback only
    from scrapy_sdi.session import _warn_plain_http

    with caplog.at_level("WARNING", logger="scrapy_sdi.session"):
        _warn_plain_http("http://sdi.example.com/api/v1")
        _warn_plain_http("http://127.0.0.1:8750/api/v1")
        _warn_plain_http("https://sdi.example.com/api/v1")
        _warn_plain_http("http://localhost/api/v1")
    assert [r.getMessage() for r in caplog.records] == [
        "SDI_API_URL uses plain http to sdi.example.com: credentials and results travel unencrypted; use https"
    ]


def test_a_full_disk_stops_the_crawl_with_one_error_and_counts_what_was_not_buffered(
    sdi_server, tmp_path
):
    """SQLITE_FULL from a file capped at a few pages: one ERROR, no traceback per item, no hang.

    The items come from start(), the case where Scrapy itself needs help to close (scrapy#7029).
    """
    path = tmp_path / "buffer.db"
    settings = _settings(
        sdi_server, path, SDI_BUFFER="tests.support.buffers.NearlyFullSQLiteBuffer"
    )
    result = run_crawl(tmp_path, settings, {"n": 3000}, timeout=60)
    assert result.returncode == 0, result.log[-3000:]
    stats = result.stats
    assert stats["finish_reason"] == "sdi_buffer_failed"
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert (
        len(errors) == 1 and str(path) in errors[0] and "database or disk is full" in errors[0]
    ), errors[:3]
    assert "Traceback" not in result.log
    buffered, unbuffered = stats["sdi/items_buffered"], stats["sdi/items_unbuffered"]
    assert (
        buffered > 0
        and unbuffered > 0
        and buffered + unbuffered == stats["item_scraped_count"] + stats["item_dropped_count"]
    )
    assert f"{unbuffered} results were not buffered" in result.log
    assert stats["sdi/items_delivered"] == buffered  # what was stored still went out
    assert_stored_once(sdi_server, buffered)
