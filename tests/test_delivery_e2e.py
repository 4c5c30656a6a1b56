"""Real crawls, a real SQLite buffer and the reference server over loopback."""

from __future__ import annotations

import re

import pytest

from tests.support.crawl import run_crawl


def _settings(server, tmp_path, **extra):
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **extra}


@pytest.mark.smoke
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


def test_throttling_is_waited_out_as_asked_and_told_once(sdi_server_factory, tmp_path):
    server = sdi_server_factory(rate_limit_rate=0.4, retry_after=0.3, seed=7)
    settings = _settings(
        server, tmp_path, SDI_CONCURRENT_REQUESTS=1, SDI_BATCH_SIZE=20, SDI_RETRY_BACKOFF_BASE=0.01
    )
    result = run_crawl(tmp_path, settings, {"n": 300})
    assert result.returncode == 0, result.log[-3000:]
    assert len({r["url"] for r in server.results()}) == len(server.results()) == 300
    received = server.received()
    throttled = [i for i, r in enumerate(received) if r["status"] == "429"]
    assert len(throttled) >= 3
    # by the server's clock, the next attempt after each 429 came at least Retry-After later
    gaps = [received[i + 1]["at"] - received[i]["at"] for i in throttled if i + 1 < len(received)]
    assert min(gaps) >= 0.3, gaps
    # one WARNING as throttling starts, one INFO as it ends (here: at the close), not one per 429
    assert result.log.count("WARNING: SDI: the API is throttling") == 1, result.log[-3000:]
    assert (
        len(
            re.findall(r"INFO: SDI: throttling (is over|lasted until delivery stopped)", result.log)
        )
        == 1
    )
    assert "the API answers again" not in result.log
