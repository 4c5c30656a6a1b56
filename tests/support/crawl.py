"""Run real crawls in subprocesses, as users do, and read back their stats and what the server stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: Scrapy's three ways to run; SDI_TEST_REACTOR picks one for every crawl (tox runs each).
REACTOR_MODES = {
    "asyncio": {},
    "twisted": {"TWISTED_REACTOR": "twisted.internet.epollreactor.EPollReactor"},
    "reactorless": {"TWISTED_REACTOR_ENABLED": "False"},
}

#: Retries, leases and timeouts short enough that a test's outage or fault ends in seconds.
FAST_RETRIES = {
    "SDI_RETRY_BACKOFF_BASE": 0.02,
    "SDI_RETRY_BACKOFF_MAX": 0.3,
    "SDI_RETRY_TIMES": 5,
    "SDI_UNLOCK_DELAY": 0.2,
    "SDI_TIMEOUT": 5,
    "SDI_LEASE_TIMEOUT": 6,
}


@dataclass
class CrawlResult:
    returncode: int
    stats: dict[str, Any]
    log: str


def crawl_command(
    tmp_path: Path,
    settings: dict[str, Any],
    spider_args: dict[str, Any] | None = None,
    spider: str = "SyntheticSpider",
    extra_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    stats_path = tmp_path / "stats.json"
    all_settings = {
        "EXTENSIONS": json.dumps(
            {"tests.support.statsdump.StatsDump": 0, "scrapy_sdi.SDIStatus": 500}
        ),
        "ITEM_PIPELINES": json.dumps({"scrapy_sdi.SDIPipeline": 800}),
        "STATS_DUMP_PATH": str(stats_path),
        "LOG_LEVEL": "INFO",
        "TELNETCONSOLE_ENABLED": "False",
        **REACTOR_MODES[os.environ.get("SDI_TEST_REACTOR", "asyncio")],
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in settings.items()},
    }
    cmd = [sys.executable, "-m", "tests.support.run_spider", spider]
    for key, value in all_settings.items():
        cmd += ["-s", f"{key}={value}"]
    for key, value in (spider_args or {}).items():
        cmd += ["-a", f"{key}={value}"]
    env = {
        **os.environ,
        **(extra_env or {}),
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p),
    }
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    return cmd, env


def run_crawl(
    tmp_path: Path,
    settings: dict[str, Any],
    spider_args: dict[str, Any] | None = None,
    *,
    timeout: float = 120,
    spider: str = "SyntheticSpider",
    extra_env: dict[str, str] | None = None,
) -> CrawlResult:
    cmd, env = crawl_command(tmp_path, settings, spider_args, spider, extra_env)
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )
    stats_path = tmp_path / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    if stats_path.exists():
        stats_path.unlink()
    return CrawlResult(proc.returncode, stats, proc.stderr + proc.stdout)


def assert_stored_once(server: Any, expected: int) -> list[dict[str, Any]]:
    """The server stored ``expected`` distinct URLs, none of them twice; returns what it stored."""
    stored = server.results()
    by_url = Counter(r["url"] for r in stored)
    twice = [url for url, n in by_url.items() if n > 1]
    assert not twice, f"stored more than once: {twice[:5]}"
    assert len(by_url) == expected
    return stored
