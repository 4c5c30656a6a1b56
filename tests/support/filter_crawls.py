"""The API's filters in real crawls: filters of every kind, the items each excludes, crawl helpers.

Shared by the filter tests (tests/test_filtering_e2e.py) and the promise that filtered results
are never sent (tests/promises/test_filtered_never_sent.py).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.crawl import crawl_command

#: Retries short enough that an outage ends in seconds; no periodic status line in the logs.
FAST = {
    "SDI_RETRY_BACKOFF_BASE": 0.02,
    "SDI_RETRY_BACKOFF_MAX": 0.3,
    "SDI_RETRY_TIMES": 3,
    "SDI_UNLOCK_DELAY": 0.2,
    "SDI_TIMEOUT": 5,
    "SDI_LEASE_TIMEOUT": 6,
    "SDI_LOG_INTERVAL": 0,
}

#: One filter of each kind over both fields; :func:`cases` lists what each excludes.
FILTERS = [
    {"id": 1, "field": "url", "kind": "domain", "pattern": "example.org"},
    {"id": 2, "field": "filename", "kind": "glob", "pattern": "*.tmp"},
    {"id": 3, "field": "url", "kind": "regex", "pattern": "/private/"},
    {"id": 4, "field": "url", "kind": "prefix", "pattern": "https://cdn.test/blocked/"},
    {"id": 5, "field": "filename", "kind": "exact", "pattern": "secret.bin"},
]


def describe(fid: int) -> str:
    """What the buffer keeps as the reason of a row the filter ``fid`` of FILTERS excluded."""
    f = next(f for f in FILTERS if f["id"] == fid)
    return f"filter {fid} ({f['field']} {f['kind']} {f['pattern']!r})"


def cases(tag: str = "") -> list[tuple[dict[str, str], int | None]]:
    """(item, id of the FILTERS entry that excludes it or None); ``tag`` makes the URLs unique per run."""
    q = f"?run={tag}" if tag else ""
    return [
        ({"url": f"https://example.org/a.mp3{q}"}, 1),
        ({"url": f"https://Sub.EXAMPLE.org/b.mp3{q}"}, 1),  # subdomain, any case
        (
            {"url": f"https://example.org/both.tmp{q}"},
            1,
        ),  # url and filename match: first listed wins
        ({"url": f"https://badexample.org/c.mp3{q}"}, None),  # look-alike, not a subdomain
        ({"url": f"https://example.org.evil.test/d.mp3{q}"}, None),
        ({"url": f"https://files.test/e.TMP{q}"}, 2),  # default filename, case-insensitive glob
        ({"url": f"https://files.test/download{q}", "filename": "report.tmp"}, 2),
        ({"url": f"https://files.test/report.tmp.mp3{q}"}, None),  # glob matches the whole value
        ({"url": f"https://files.test/private/f.mp3{q}"}, 3),
        ({"url": f"https://files.test/public/private.mp3{q}"}, None),
        ({"url": f"https://cdn.test/blocked/g.mp3{q}"}, 4),
        ({"url": f"http://cdn.test/blocked/h.mp3{q}"}, None),  # prefix is not a host match
        ({"url": f"https://files.test/i{q}", "filename": "secret.bin"}, 5),
        ({"url": f"https://files.test/secret.bin{q}"}, 5),
        ({"url": f"https://files.test/j{q}", "filename": "secret.bin.mp3"}, None),
        ({"url": f"https://files.test/ok-1.mp3{q}"}, None),
        ({"url": f"https://files.test/ok-2.mp3{q}"}, None),
    ]


def field_of(fid: int) -> str:
    """The result field the filter ``fid`` of FILTERS matches on."""
    return next(f["field"] for f in FILTERS if f["id"] == fid)


def write_script(
    tmp_path: Path, phases: list[dict[str, Any]], name: str = "script.json"
) -> dict[str, str]:
    """Write a ScriptedSpider script of ``phases``; returns the spider argument that names it."""
    path = tmp_path / name
    path.write_text(json.dumps({"phases": phases}), encoding="utf-8")
    return {"script": str(path)}


def settings(server: Any, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Crawl settings: the server, a buffer in ``tmp_path``, fast retries."""
    return {**server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **FAST, **extra}


def command_settings(server: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """``-s`` settings for ``scrapy sdi``: the server, the crawls' buffer, fast retries."""
    return {name: str(value) for name, value in settings(server, tmp_path, **extra).items()}


def filter_requests(server: Any) -> dict[str, int]:
    """How many GET filters the server answered, by status code."""
    return server.stats()["requests"].get("/api/v1/filters", {})


def wait_until(
    condition: Callable[[], Any],
    what: str,
    proc: subprocess.Popen[str] | None = None,
    timeout: float = 30,
) -> None:
    """Poll ``condition`` until it is true; fail after ``timeout`` s, or at once if the crawl ``proc`` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the crawl ended (rc {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run_during(
    tmp_path: Path,
    crawl_settings: dict[str, Any],
    spider_args: dict[str, Any],
    spider: str,
    during: Callable[[subprocess.Popen[str]], Any],
) -> tuple[int, dict[str, Any], str]:
    """Run a crawl, call ``during(proc)`` while it runs, return (rc, stats, log)."""
    cmd, env = crawl_command(tmp_path, crawl_settings, spider_args, spider)
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        during(proc)
        log = proc.communicate(timeout=90)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stats_path = tmp_path / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    stats_path.unlink(missing_ok=True)
    return proc.returncode, stats, log
