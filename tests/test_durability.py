"""No result lost, none stored twice: a shared buffer file, poison results, batches too large.

The server's faults alone and mixed, kill -9 of the crawl, API outages and restarts are in the
fault suite, tests/reliability/.
"""

from __future__ import annotations

import re
import subprocess

from tests.support.crawl import FAST_RETRIES, assert_stored_once, crawl_command, run_crawl


def _settings(server, tmp_path, **extra):
    return {
        **server.settings,
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        **FAST_RETRIES,
        **extra,
    }


def test_two_processes_sharing_one_buffer_file(sdi_server, tmp_path):
    procs = []
    for offset in (0, 1000):
        workdir = tmp_path / f"job{offset}"
        workdir.mkdir()
        cmd, env = crawl_command(
            workdir,
            _settings(sdi_server, tmp_path, SDI_BATCH_SIZE=50),
            {"n": 1500, "offset": offset},
        )
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    for log in logs:
        assert "database is locked" not in log and "Traceback" not in log
    # the overlapping 500 URLs are deduplicated by the shared buffer
    assert_stored_once(sdi_server, 2500)


def rejection_warnings(log: str) -> list[int]:
    """The counts of the WARNINGs that report results refused even alone (one per batch)."""
    return [
        int(n) for n in re.findall(r"WARNING: SDI: (\d+) of a batch of \d+ results rejected", log)
    ]


def test_poison_results_are_isolated_by_bisection(sdi_server_factory, tmp_path):
    server = sdi_server_factory(bad_request_url_pattern="poison")
    result = run_crawl(tmp_path, _settings(server, tmp_path), {"n": 400, "poison_every": 23})
    assert result.returncode == 0, result.log[-3000:]
    poison = [i for i in range(400) if i % 23 == 0]
    assert result.stats["sdi/items_rejected"] == len(poison)
    assert result.stats["sdi/items_delivered"] == 400 - len(poison)
    stored = assert_stored_once(server, 400 - len(poison))
    assert not any("poison" in r["url"] for r in stored)
    # one WARNING per batch, with the count, not one per result
    warned = rejection_warnings(result.log)
    assert sum(warned) == len(poison) and len(warned) < len(poison), warned
    assert "WARNING: SDI result" not in result.log
    # every 400 is a failed attempt
    answers = server.stats()["requests"]["/api/v1/crawler-results"]
    assert answers["400"] > 0 and result.stats["sdi/batches_failed"] == answers["400"]
    assert result.stats["sdi/batches_sent"] == sum(answers.values())


def test_413_splits_batches_and_an_oversize_result_is_rejected_once(sdi_server_factory, tmp_path):
    server = sdi_server_factory(max_results=30, max_bytes=15_000)
    result = run_crawl(tmp_path, _settings(server, tmp_path), {"n": 300, "big_every": 100})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_rejected"] == 3
    assert result.stats["sdi/items_delivered"] == 297
    assert_stored_once(server, 297)
    answers = server.stats()["requests"]["/api/v1/crawler-results"]
    assert answers.get("413", 0) < 40  # no endless loop
    assert answers["413"] > 0 and result.stats["sdi/batches_failed"] == answers["413"]
    assert sum(rejection_warnings(result.log)) == 3


def test_a_413_without_max_results_is_learned_so_later_batches_fit(sdi_server_factory, tmp_path):
    """A reverse proxy's body limit: 413 as HTML, no max_results, on ~30 results' worth of bytes."""
    server = sdi_server_factory(proxy_max_bytes=8000)
    result = run_crawl(tmp_path, _settings(server, tmp_path, SDI_COMPRESSION=False), {"n": 1500})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_delivered"] == 1500 and result.stats["sdi/items_rejected"] == 0
    assert_stored_once(server, 1500)
    answers = server.stats()["requests"]["/api/v1/crawler-results"]
    # refused while learning and once per try upward, not at every batch
    assert answers["413"] <= answers["200"] // 5, answers
    assert result.stats["sdi/batches_failed"] == answers["413"]
