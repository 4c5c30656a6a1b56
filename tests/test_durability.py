"""No result lost, none stored twice: real crawls against a faulty reference server."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

from tests.support.crawl import crawl_command, run_crawl

FAST_RETRIES = {
    "SDI_RETRY_BACKOFF_BASE": 0.02,
    "SDI_RETRY_BACKOFF_MAX": 0.3,
    "SDI_RETRY_TIMES": 5,
    "SDI_UNLOCK_DELAY": 0.2,
    "SDI_TIMEOUT": 5,
    "SDI_LEASE_TIMEOUT": 6,
}


def _settings(server, tmp_path, **extra):
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **FAST_RETRIES, **extra}


def assert_stored_once(server, expected: int) -> list[dict]:
    stored = server.results()
    by_url = Counter(r["url"] for r in stored)
    twice = [url for url, n in by_url.items() if n > 1]
    assert not twice, f"stored more than once: {twice[:5]}"
    assert len(by_url) == expected
    return stored


def test_fault_mix_stores_every_result_exactly_once(sdi_server_factory, tmp_path):
    server = sdi_server_factory(
        fail_rate=0.2, rate_limit_rate=0.05, retry_after=0.2, drop_before_rate=0.05, drop_after_rate=0.05,
        omit_rate=0.1, token_max_uses=15, max_results=40, seed=7,
    )
    result = run_crawl(tmp_path, _settings(server, tmp_path), {"n": 2000}, timeout=240)
    assert result.returncode == 0, result.log[-3000:]
    assert_stored_once(server, 2000)
    stats = result.stats
    assert stats["sdi/pending_at_close"] == 0
    assert stats["sdi/items_delivered"] == 2000
    assert stats["sdi/batches_failed"] > 0 and stats["sdi/retries"] > 0
    assert stats["sdi/auth/refreshes"] + stats["sdi/auth/logins"] > 1
    assert server.stats()["duplicates"] > 0  # dropped-after-store batches came back as duplicates
    assert "Traceback" not in result.log


def test_api_down_for_the_whole_crawl_then_next_run_delivers(sdi_server, tmp_path):
    sdi_server.stop()
    first = run_crawl(tmp_path, _settings(sdi_server, tmp_path, SDI_CLOSE_TIMEOUT=1), {"n": 300})
    assert first.returncode == 0, first.log[-3000:]
    assert first.stats["sdi/items_buffered"] == 300
    assert first.stats["sdi/pending_at_close"] == 300
    assert "300 results are still pending" in first.log and "scrapy sdi flush" in first.log
    sdi_server.start()
    second = run_crawl(tmp_path, _settings(sdi_server, tmp_path), {"n": 0})
    assert second.returncode == 0, second.log[-3000:]
    assert second.stats["sdi/items_delivered"] == 300
    assert second.stats["sdi/pending_at_close"] == 0
    assert_stored_once(sdi_server, 300)


def test_kill_9_mid_delivery_then_rerun_stores_exactly_once(sdi_server_factory, tmp_path):
    server = sdi_server_factory(latency=0.05, drop_after_rate=0.1, seed=3)
    cmd, env = crawl_command(tmp_path, _settings(server, tmp_path, SDI_BATCH_SIZE=50, SDI_LEASE_TIMEOUT=6), {"n": 3000})
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while server.stats()["accepted"] < 500:  # wait for delivery to be well under way
            assert proc.poll() is None, "the crawl ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    delivered_before = server.stats()["accepted"]
    assert delivered_before < 3000
    rerun = run_crawl(tmp_path, _settings(server, tmp_path, SDI_BATCH_SIZE=50), {"n": 3000})
    assert rerun.returncode == 0, rerun.log[-3000:]
    assert rerun.stats["sdi/pending_at_close"] == 0
    assert_stored_once(server, 3000)


def test_two_processes_sharing_one_buffer_file(sdi_server, tmp_path):
    procs = []
    for offset in (0, 1000):
        workdir = tmp_path / f"job{offset}"
        workdir.mkdir()
        cmd, env = crawl_command(workdir, _settings(sdi_server, tmp_path, SDI_BATCH_SIZE=50), {"n": 1500, "offset": offset})
        procs.append(subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    for log in logs:
        assert "database is locked" not in log and "Traceback" not in log
    # the overlapping 500 URLs are deduplicated by the shared buffer
    assert_stored_once(sdi_server, 2500)


def test_poison_results_are_isolated_by_bisection(sdi_server_factory, tmp_path):
    server = sdi_server_factory(bad_request_url_pattern="poison")
    result = run_crawl(tmp_path, _settings(server, tmp_path), {"n": 400, "poison_every": 97})
    assert result.returncode == 0, result.log[-3000:]
    poison = [i for i in range(400) if i % 97 == 0]
    assert result.stats["sdi/items_rejected"] == len(poison)
    assert result.stats["sdi/items_delivered"] == 400 - len(poison)
    stored = assert_stored_once(server, 400 - len(poison))
    assert not any("poison" in r["url"] for r in stored)


def test_413_splits_batches_and_an_oversize_result_is_rejected_once(sdi_server_factory, tmp_path):
    server = sdi_server_factory(max_results=30, max_bytes=15_000)
    result = run_crawl(tmp_path, _settings(server, tmp_path), {"n": 300, "big_every": 100})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_rejected"] == 3
    assert result.stats["sdi/items_delivered"] == 297
    assert_stored_once(server, 297)
    assert server.stats()["requests"]["/api/v1/crawler-results"].get("413", 0) < 40  # no endless loop


def test_answers_that_break_the_contract_lose_nothing(sdi_server_factory, tmp_path):
    # stored, then answered with non-JSON, the wrong shape, 2 MB of junk, or ids never sent
    server = sdi_server_factory(garble_rate=0.4, seed=9)
    result = run_crawl(tmp_path, _settings(server, tmp_path, SDI_BATCH_SIZE=50), {"n": 600})
    assert result.returncode == 0, result.log[-3000:]
    assert server.stats()["garbled"] >= 4  # every kind at least once
    assert result.stats["sdi/batches_failed"] > 0
    assert result.stats["sdi/pending_at_close"] == 0
    assert_stored_once(server, 600)
    assert "Traceback" not in result.log
