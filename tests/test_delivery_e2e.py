"""Real crawls, a real SQLite buffer and the reference server over loopback."""

from __future__ import annotations

from tests.support.crawl import run_crawl


def _settings(server, tmp_path, **extra):
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **extra}


def test_crawl_delivers_every_result_once(sdi_server, tmp_path):
    result = run_crawl(tmp_path, _settings(sdi_server, tmp_path), {"n": 500})
    assert result.returncode == 0, result.log[-3000:]
    stored = sdi_server.results()
    urls = [r["url"] for r in stored]
    assert len(urls) == 500 and len(set(urls)) == 500
    assert result.stats["sdi/items_buffered"] == 500
    assert result.stats["sdi/items_delivered"] == 500
    assert result.stats["sdi/pending_at_close"] == 0
    assert sdi_server.password not in result.log
