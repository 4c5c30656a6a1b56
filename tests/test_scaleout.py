"""Scale-out on existing engines: many Scrapyd jobs on one host buffer, a scrapy-redis cluster.

Real processes only: a Scrapyd the test deploys the example project to, a private
redis-server, demo sites and the reference API server, all on loopback. What each topology
guarantees, and what it does not, is written down in docs/scaling.md.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from pathlib import Path

import pytest
from scrapy.settings import Settings

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.settings import SDISettings
from tests.support.scaleout import (
    EXAMPLE_PROJECT,
    FAST_DELIVERY,
    DemoSite,
    RedisServer,
    ScrapydServer,
    Worker,
    assert_each_url_once,
    buffer_rows,
    copy_example_project,
    free_port,
    host_of,
    kill_9,
    require,
    started,
    wait_for,
)

REDIS_TOOLS = {"modules": ["scrapy_redis", "redis"], "executables": ["redis-server"]}
SCRAPYD_TOOLS = {"modules": ["scrapyd", "scrapyd_client"], "executables": ["scrapyd-deploy"]}
START_KEY = "redis_files:start_urls"
QUEUE_KEY = "redis_files:requests"  # scrapy-redis's default PriorityQueue, a sorted set


# -- Scrapyd --------------------------------------------------------------------------------


def test_scrapyd_jobs_share_one_host_buffer_and_deliver_exactly_once(
    sdi_server, tmp_path: Path, cleanup: list
) -> None:
    require(**SCRAPYD_TOOLS)
    sites = [started(cleanup, DemoSite(categories=4, files=40)) for _ in range(3)]
    # Credentials go in Scrapyd's environment (jobs inherit it), not in job settings: Scrapyd
    # logs every job's -s arguments.
    scrapyd = started(
        cleanup,
        ScrapydServer(
            tmp_path / "scrapyd",
            env={"SDI_USERNAME": sdi_server.username, "SDI_PASSWORD": sdi_server.password},
        ),
    )
    deployed = scrapyd.deploy(copy_example_project(tmp_path / "project"), "demo", "r1")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    assert json.loads(deployed.stdout)["status"] == "ok"
    assert {"files", "redis_files"} <= set(
        scrapyd.get("listspiders.json", project="demo")["spiders"]
    )

    shared_buffer = tmp_path / "host" / "sdi-buffer.db"
    job_settings = {
        "SDI_API_URL": sdi_server.url,
        "SDI_BUFFER_PATH": str(shared_buffer),
        "SDI_BATCH_SIZE": "50",
        "LOG_LEVEL": "INFO",
    }
    jobs = {
        scrapyd.schedule("demo", "files", job_settings, {"site": site.url}): site for site in sites
    }

    def all_finished() -> list[dict] | None:
        listing = scrapyd.get("listjobs.json", project="demo")
        finished = [job for job in listing["finished"] if job["id"] in jobs]
        return finished if len(finished) == len(jobs) else None

    finished = wait_for(all_finished, 90, "the 3 Scrapyd jobs to finish", interval=0.2)
    assert max(job["start_time"] for job in finished) < min(job["end_time"] for job in finished), (
        "jobs did not overlap"
    )
    delivered = 0
    for job_id, site in jobs.items():
        log = scrapyd.job_log("demo", "files", job_id)
        assert "Spider closed (finished)" in log, log[-3000:]
        assert "'sdi/pending_at_close': 0" in log, log[-3000:]
        assert f"'sdi/items_buffered': {len(site.expected_urls())}," in log, log[-3000:]
        assert "Traceback" not in log and "database is locked" not in log, log[-3000:]
        assert sdi_server.password not in log
        # jobs sharing a buffer deliver each other's rows too: only the sum is the job count
        delivered += int(log.split("'sdi/items_delivered': ", 1)[1].split(",", 1)[0])
    assert delivered == sum(len(site.expected_urls()) for site in sites)

    stored = sdi_server.results()
    urls = assert_each_url_once(stored)
    assert urls == set().union(*(site.expected_urls() for site in sites))
    assert {host_of(u) for u in urls} == {
        host_of(site.url) for site in sites
    }  # every job's own site
    assert {r["crawler"] for r in stored} == {"files"}
    assert sdi_server.password not in scrapyd.log_path.read_text(errors="replace")
    rows = buffer_rows(shared_buffer)  # one buffer file held every job's rows, all delivered
    assert len(rows) == len(stored) and {r["state"] for r in rows} == {"delivered"}


def test_scrapyd_job_without_buffer_path_fails_loudly_or_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a Scrapyd job without SDI_BUFFER_PATH sees: the project's settings, no scrapy.cfg."""
    monkeypatch.chdir(tmp_path)  # Scrapyd's working directory
    monkeypatch.syspath_prepend(str(EXAMPLE_PROJECT))  # the egg
    monkeypatch.setenv("SCRAPY_SETTINGS_MODULE", "demo.settings")  # set by scrapyd.runner
    settings = Settings(
        {"SDI_API_URL": "http://127.0.0.1:1/api/v1", "SDI_USERNAME": "u", "SDI_PASSWORD": "p"}
    )
    try:
        with pytest.raises(
            SDIConfigError,
            match="^SDI_BUFFER_PATH: not set, and this project has no data directory",
        ):
            SDISettings.from_settings(settings, "files", environ={}, dotenv_path=None)
    finally:
        for name in [m for m in sys.modules if m == "demo" or m.startswith("demo.")]:
            del sys.modules[name]  # the example project imported in-process by inside_project()


# -- scrapy-redis ---------------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path, cleanup: list) -> RedisServer:
    require(**REDIS_TOOLS)
    return started(cleanup, RedisServer(tmp_path / "redis"))


def _worker(
    name: str, tmp_path: Path, redis_server: RedisServer, api_settings: dict[str, str], **extra: str
) -> Worker:
    settings = {
        "REDIS_URL": redis_server.url,
        **api_settings,
        "SDI_BUFFER_PATH": str(tmp_path / name / "sdi-buffer.db"),
        "SDI_BATCH_SIZE": "100",
        "MAX_IDLE_TIME_BEFORE_CLOSE": "1",
        # A few requests per worker, so that one worker cannot take every category at once.
        "CONCURRENT_REQUESTS": "4",
        **FAST_DELIVERY,
        **extra,
    }
    return Worker(name, tmp_path / name, settings)


def _seed(redis_server: RedisServer, site: DemoSite, messages: int) -> None:
    """Start messages for the site; a worker's start() takes one (redis_batch_size = 1)."""
    redis_server.client().lpush(START_KEY, *[json.dumps({"url": site.url})] * messages)


def _wait_all_closed(workers: list[Worker], timeout: float, on_poll=None) -> None:
    def closed() -> bool:
        if on_poll is not None:
            on_poll()
        return not any(w.running for w in workers)

    wait_for(closed, timeout, "every worker to close when idle")
    for worker in workers:
        assert worker.proc.returncode == 0, worker.log()[-3000:]
        assert worker.stats().get("finish_reason") == "finished", worker.log()[-3000:]
        assert worker.stats().get("sdi/pending_at_close") == 0, worker.log()[-3000:]
        assert "Traceback" not in worker.log(), worker.log()[-3000:]


def test_redis_cluster_of_three_workers_stores_every_result_once(
    sdi_server, redis_server, tmp_path: Path, cleanup: list, record_property
) -> None:
    site = started(cleanup, DemoSite(categories=12, files=160))
    expected = site.expected_urls()
    workers = [
        _worker(f"w{i}", tmp_path, redis_server, sdi_server.settings, DOWNLOAD_DELAY="0.05")
        for i in range(3)
    ]
    first, *others = workers
    _seed(redis_server, site, 1)
    cpu_before = _children_cpu()
    started(cleanup, first)
    # An idle worker looks at the shared queue when it opens and then at Scrapy's engine
    # heartbeat (every 5 s), and closes when idle past MAX_IDLE_TIME_BEFORE_CLOSE: one that starts
    # late on a loaded machine could find the queue empty twice and crawl nothing. So the first
    # worker fills the queue with more than it can take, and waits (SIGSTOP) until the others
    # have found work in it.
    queue = redis_server.client()
    wait_for(lambda: queue.zcard(QUEUE_KEY) >= 8, 30, "the first worker to queue 8 pages")
    os.kill(first.proc.pid, signal.SIGSTOP)
    try:
        for worker in others:
            started(cleanup, worker)
        wait_for(
            lambda: all(buffer_rows(w.buffer_path) for w in others),
            60,
            "every other worker to buffer a result",
        )
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    _wait_all_closed(workers, 60)
    cpu = _children_cpu() - cpu_before  # the three workers, start-up included

    urls = assert_each_url_once(sdi_server.results())
    assert urls == expected
    pages = [w.stats().get("response_received_count", 0) for w in workers]
    assert all(n > 0 for n in pages), f"a worker crawled nothing: pages per worker {pages}"
    assert sum(w.stats()["sdi/items_buffered"] for w in workers) == len(expected)
    per_cpu_second = len(expected) / cpu
    record_property("results_per_worker_cpu_second", round(per_cpu_second))
    print(
        f"\n3 redis workers: pages per worker {pages}; {per_cpu_second:.0f} results per worker CPU-second"
    )
    assert per_cpu_second > 100


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_redis_worker_killed_mid_crawl_then_recovery_stores_everything_once(
    sdi_server, redis_server, tmp_path: Path, cleanup: list
) -> None:
    """kill -9 of a worker, restart on its buffer, then a re-seeded recovery crawl: every result once.

    The victim cannot reach the API before the kill (a dead port), so everything it crawled is
    still in its buffer when it dies; restarted on that buffer, it delivers all of it. The
    requests it had popped from the shared queue die with it (scrapy-redis has no
    acknowledgement) and the dupefilter keeps anyone from crawling them again, so their pages,
    and the rest of those categories, are missing. The recovery is a second crawl with a fresh
    dupefilter: result ids derive from (crawler, url), so what was stored already comes back
    ``duplicate`` and only the missing results are added.
    """
    site = started(cleanup, DemoSite(categories=12, files=160))
    expected = site.expected_urls()
    unreachable = {**sdi_server.settings, "SDI_API_URL": f"http://127.0.0.1:{free_port()}/api/v1"}
    victim = _worker("victim", tmp_path, redis_server, unreachable, DOWNLOAD_DELAY="0.05")
    workers = [victim] + [
        _worker(f"w{i}", tmp_path, redis_server, sdi_server.settings, DOWNLOAD_DELAY="0.05")
        for i in (1, 2)
    ]
    _seed(redis_server, site, len(workers))
    for worker in workers:
        started(cleanup, worker)

    wait_for(
        lambda: len(buffer_rows(victim.buffer_path)) >= 100, 30, "the victim to buffer 100 results"
    )
    kill_9(victim.proc)
    assert sum(len(buffer_rows(w.buffer_path)) for w in workers) < len(expected), (
        "the crawl ended before the kill"
    )
    at_kill = buffer_rows(victim.buffer_path)
    undelivered = {r["id"] for r in at_kill if r["state"] in ("pending", "in_flight")}
    assert len(undelivered) == len(at_kill) >= 100  # nothing could be delivered yet

    victim.start(SDI_API_URL=sdi_server.url)  # same buffer, API reachable again
    _wait_all_closed(workers, 60)
    stored = sdi_server.results()
    urls = assert_each_url_once(stored)
    assert urls <= expected
    assert undelivered <= {r["id"] for r in stored}, (
        "the victim's buffered results were not all delivered"
    )
    rows = [row for w in workers for row in buffer_rows(w.buffer_path)]
    assert {r["state"] for r in rows} == {"delivered"}
    assert sorted(r["url"] for r in rows) == sorted(urls)  # every committed result stored, once
    lost = expected - urls
    print(
        f"\nkill -9: {len(undelivered)} buffered results recovered from the victim's buffer; "
        f"{len(lost)} of {len(expected)} results lost with the requests it had popped"
    )

    # recovery: forget which pages were seen and crawl again, on the same buffers
    redis_server.client().delete("redis_files:dupefilter")
    _seed(redis_server, site, len(workers))
    for worker in workers:
        worker.start(SDI_API_URL=sdi_server.url, DOWNLOAD_DELAY="0")
    _wait_all_closed(workers, 60)
    assert assert_each_url_once(sdi_server.results()) == expected
    assert sdi_server.stats()["accepted"] == len(expected)
    known = sum(
        w.stats()["sdi/items_deduplicated"] + w.stats()["sdi/items_duplicate"] for w in workers
    )
    assert known == len(expected) - len(
        lost
    )  # by the worker's own buffer, or by the API's id check


def test_redis_page_crawled_again_by_another_worker_is_stored_once(
    sdi_server, redis_server, tmp_path: Path, cleanup: list
) -> None:
    """Two workers with their own buffers yield the same results: the API stores them once."""
    site = started(cleanup, DemoSite(categories=2, files=10))
    n = len(site.expected_urls())
    redis_server.client().lpush(START_KEY, json.dumps({"url": site.url}))
    redis_server.client().lpush("again:start_urls", json.dumps({"url": site.url}))
    first = started(cleanup, _worker("first", tmp_path, redis_server, sdi_server.settings))
    # the second worker crawls the same pages, as after a re-seed: its own queue and dupefilter
    second = started(
        cleanup,
        _worker(
            "second",
            tmp_path,
            redis_server,
            sdi_server.settings,
            REDIS_START_URLS_KEY="again:start_urls",
            SCHEDULER_QUEUE_KEY="again:requests",
            SCHEDULER_DUPEFILTER_KEY="again:dupefilter",
        ),
    )
    _wait_all_closed([first, second], 60)
    assert first.stats()["sdi/items_buffered"] == second.stats()["sdi/items_buffered"] == n
    assert first.stats()["sdi/items_duplicate"] + second.stats()["sdi/items_duplicate"] == n
    assert assert_each_url_once(sdi_server.results()) == site.expected_urls()
    assert sdi_server.stats()["duplicates"] == n
