"""Stats that add up, a quiet periodic line, the audit log, status lookups at close and from scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.crawl import FAST_RETRIES, ROOT, run_crawl
from tests.support.postgres import PASSWORD

KEYS = (
    "sdi/items_buffered",
    "sdi/items_delivered",
    "sdi/items_duplicate",
    "sdi/items_rejected",
    "sdi/items_filtered",
    "sdi/items_invalid",
    "sdi/items_deduplicated",
    "sdi/batches_sent",
    "sdi/batches_failed",
    "sdi/retries",
    "sdi/auth/logins",
    "sdi/pending_at_close",
    "sdi/filters_source",
    "sdi/filters_count",
    "sdi/response_status_count/200",
)


@pytest.fixture(params=["sqlite", "postgres"])
def buffer_settings(request, tmp_path) -> dict[str, str]:
    """The crawl's buffer: a SQLite file, then a database of the private PostgreSQL server."""
    if request.param == "sqlite":
        return {"SDI_BUFFER_PATH": str(tmp_path / "b.db")}
    url = request.getfixturevalue("postgres_db").url
    return {"SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}


def test_stats_add_up_after_a_real_crawl_and_the_audit_log_holds_no_secret(
    sdi_server_factory, tmp_path, buffer_settings
):
    server = sdi_server_factory(
        reject_url_pattern="/f/1[0-9]/",
        fail_rate=0.2,
        seed=5,
        filters=[{"id": 9, "field": "url", "kind": "regex", "pattern": "/f/2[0-9]/"}],
    )
    audit = tmp_path / "logs" / "audit.jsonl"
    settings = {
        **server.settings,
        **FAST_RETRIES,
        **buffer_settings,
        "SDI_AUDIT_LOG": str(audit),
        "SDI_BATCH_SIZE": 25,
        "SDI_STATUS_ON_CLOSE": True,
    }
    result = run_crawl(tmp_path, settings, {"n": 200, "bad_every": 50})
    assert result.returncode == 0, result.log[-3000:]
    stats = result.stats
    for key in KEYS:
        assert key in stats, key
    assert stats["sdi/items_invalid"] == 4
    assert stats["sdi/items_filtered"] == stats["sdi/items_filtered/url"] == 10
    assert stats["sdi/items_rejected"] == 10
    assert stats["sdi/items_buffered"] == 200 - 4 - 10
    assert (
        stats["sdi/items_buffered"]
        == stats["sdi/items_delivered"]
        + stats["sdi/items_rejected"]
        + stats["sdi/pending_at_close"]
    )
    assert (
        stats["sdi/batches_failed"] > 0
        and stats["sdi/response_status_count/503"] == stats["sdi/batches_failed"]
    )
    assert stats["sdi/remote_status/received"] == stats["sdi/items_delivered"]
    assert stats["sdi/filters_source"] == "api" and stats["sdi/filters_count"] == 1

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(lines) == stats["sdi/batches_sent"]
    assert {"time", "crawler", "batch_size", "status", "latency_ms", "outcomes", "error"} <= set(
        lines[0]
    )
    assert (
        sum(line["outcomes"].get("accepted", 0) for line in lines) == stats["sdi/items_delivered"]
    )
    assert any(line["status"] == 503 and line["error"] for line in lines)
    text = audit.read_text()
    assert server.password not in text and "Bearer" not in text and "token" not in text.lower()
    assert oct(audit.stat().st_mode & 0o777) == "0o600"
    assert server.password not in result.log and PASSWORD not in result.log + text
    assert '"batch_size"' not in result.log  # audit lines reach the audit file only, not stderr


def test_the_periodic_line_appears_and_nothing_logs_per_item(sdi_server_factory, tmp_path):
    server = sdi_server_factory(latency=0.3)
    settings = {
        **server.settings,
        **FAST_RETRIES,
        "SDI_BUFFER_PATH": str(tmp_path / "b.db"),
        "SDI_LOG_INTERVAL": 0.2,
        "SDI_BATCH_SIZE": 10,
        "SDI_CONCURRENT_REQUESTS": 1,
    }
    result = run_crawl(tmp_path, settings, {"n": 60})
    assert result.returncode == 0, result.log[-3000:]
    status_lines = [
        line
        for line in result.log.splitlines()
        if "[scrapy_sdi.extension] INFO: SDI: delivered" in line
    ]
    assert status_lines, result.log[-3000:]
    assert "/min), pending" in status_lines[0] and "API ok" in status_lines[0]
    sdi_info = [
        line for line in result.log.splitlines() if "[scrapy_sdi" in line and "INFO" in line
    ]
    assert len(sdi_info) < 60  # one line per interval and per lifecycle step, never one per item


def test_the_api_state_shows_in_the_status_line_while_it_is_down(sdi_server, tmp_path):
    sdi_server.stop()
    settings = {
        **sdi_server.settings,
        **FAST_RETRIES,
        "SDI_BUFFER_PATH": str(tmp_path / "b.db"),
        "SDI_LOG_INTERVAL": 0.2,
        "SDI_CLOSE_TIMEOUT": 1.0,
        "SDI_FILTERS_ENABLED": False,
    }
    result = run_crawl(tmp_path, settings, {"n": 20})
    assert result.returncode == 0
    assert "API retrying since" in result.log
    assert result.stats["sdi/api_state"].startswith("retrying since")


def test_python_api_from_blocking_code(sdi_server, tmp_path):
    run_crawl(
        tmp_path, {**sdi_server.settings, "SDI_BUFFER_PATH": str(tmp_path / "b.db")}, {"n": 30}
    )
    sdi_server.set_status("https://files.example.com/f/3/file3.mp3", 2)
    script = textwrap.dedent(f"""
        import json, sys
        from scrapy_sdi.status import StatusLookup, buffer_status
        from scrapy_sdi.buffer import SQLiteBuffer
        api = StatusLookup({sdi_server.url!r}, {sdi_server.username!r}, sys.stdin.readline().strip())
        urls = api.urls(["https://files.example.com/f/3/file3.mp3", "https://nowhere.example/x"])
        crawlers = api.crawlers(["synthetic"])
        local = buffer_status(SQLiteBuffer({str(tmp_path / "b.db")!r}))
        print(json.dumps({{"urls": [u.__dict__ for u in urls], "crawlers": [c.__dict__ for c in crawlers],
                          "counts": local.counts, "size": local.size_bytes}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=sdi_server.password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    first, unknown = data["urls"]
    assert first["status_code"] == 2 and first["status"] == "under_review" and first["description"]
    assert unknown["status"] == "not_found" and unknown["status_code"] is None
    assert data["crawlers"][0]["total"] == 30
    assert data["counts"]["delivered"] == 30 and data["size"] > 0
