"""Prometheus metrics of a real crawl's buffer: ``scrapy sdi metrics`` and the dashboard's ``/metrics``.

Two real crawls against the reference server fill one buffer file once for the module: one
delivers (some results rejected by the server, some excluded by its filters, some invalid), the
other runs while the API is down and leaves its rows pending. Every exposition is parsed with
prometheus_client's own parser and checked against the buffer's counts read directly.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scrapy_sdi.buffer import SQLiteBuffer
from scrapy_sdi.metrics import METRICS
from scrapy_sdi.status import buffer_file_size
from scrapy_sdi.testing.pytest_plugin import SDIServerProcess
from tests.support.commands import sdi
from tests.support.crawl import ROOT, run_crawl
from tests.support.dashboard import Dashboard, fetch

FILTERS_VERSION = "metrics-1"
FILTERS = [{"id": 1, "field": "url", "kind": "regex", "pattern": r"/f/\d*3/"}]  # ids ending in 3
REJECT_PATTERN = r"/f/\d*7/"  # ids ending in 7
DOWN_API = "http://127.0.0.1:9/api/v1"  # the discard port: nothing listens, connections are refused


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    """(server, buffer path): crawler "alpha" delivered against the server, "beta" left pending."""
    tmp = tmp_path_factory.mktemp("metrics")
    server = SDIServerProcess(
        tmp / "server",
        reject_url_pattern=REJECT_PATTERN,
        filters={"version": FILTERS_VERSION, "filters": FILTERS},
    ).start()
    buffer_path = tmp / "buffer.db"
    settings = {**server.settings, "SDI_BUFFER_PATH": str(buffer_path)}
    try:
        alpha = run_crawl(
            tmp, {**settings, "SDI_CRAWLER_NAME": "alpha"}, {"n": 40, "bad_every": 10}
        )
        assert alpha.returncode == 0, alpha.log[-3000:]
        server.stop()
        beta = run_crawl(
            tmp,
            {
                **settings,
                "SDI_CRAWLER_NAME": "beta",
                "SDI_CLOSE_TIMEOUT": 0.5,
                "SDI_RETRY_BACKOFF_BASE": 0.02,
                "SDI_RETRY_BACKOFF_MAX": 0.2,
            },
            {"n": 15, "offset": 100},
        )
        assert beta.returncode == 0 and beta.stats["sdi/pending_at_close"] > 0, beta.log[-3000:]
        server.start()
        yield server, buffer_path
    finally:
        server.stop()


def buffer_truth(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, float | None]]:
    """Counts per crawler and state and the oldest pending age per crawler, read directly."""
    buffer = SQLiteBuffer(path, readonly=True)
    try:
        counts = buffer.counts_by_crawler()
        return counts, {crawler: buffer.oldest_pending_age(crawler) for crawler in counts}
    finally:
        buffer.close()


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, through prometheus_client's parser."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def check_against_buffer(text: str, path: Path, *, api_up: float | None) -> None:
    got = samples(text)
    counts, ages = buffer_truth(path)
    assert {"alpha", "beta"} <= set(counts)
    alpha, beta = counts["alpha"], counts["beta"]
    assert (
        alpha["delivered"] > 0
        and alpha["rejected"] == 4
        and alpha["filtered"] > 0
        and alpha["invalid"] == 4
    )
    assert (
        beta["pending"] == 13 and beta["filtered"] == 2
    )  # the cached filters applied while the API was down
    rows = {
        dict(labels)["crawler"] + "/" + dict(labels)["state"]: value
        for labels, value in got["sdi_buffer_rows"].items()
    }
    assert rows == {
        f"{crawler}/{state}": n
        for crawler, by_state in counts.items()
        for state, n in by_state.items()
    }
    oldest = {
        dict(labels)["crawler"]: value
        for labels, value in got["sdi_buffer_oldest_pending_age_seconds"].items()
    }
    assert oldest["alpha"] == 0 and ages["alpha"] is None
    assert 0 < oldest["beta"] <= ages["beta"] + 1 and oldest["beta"] >= ages["beta"] - 60
    assert (
        got["sdi_buffer_size_bytes"][()] == buffer_file_size(SQLiteBuffer(path, readonly=True)) > 0
    )
    assert got["sdi_filters_info"] == {(("version", FILTERS_VERSION),): 1.0}
    assert got["sdi_filters_count"][()] == len(FILTERS)
    assert 0 <= got["sdi_filters_age_seconds"][()] < 600
    if api_up is None:
        assert "sdi_api_up" not in got
    else:
        assert got["sdi_api_up"][()] == api_up


def test_metrics_command_prints_the_real_counts(crawled, tmp_path):
    server, buffer_path = crawled
    settings = {**server.settings, "SDI_BUFFER_PATH": str(buffer_path)}
    proc = sdi(tmp_path, "metrics", settings=settings, secret=server.password)
    assert proc.returncode == 0, proc.stderr
    check_against_buffer(proc.stdout, buffer_path, api_up=1)
    skipped = sdi(tmp_path, "metrics", "--no-api", settings=settings, secret=server.password)
    check_against_buffer(skipped.stdout, buffer_path, api_up=None)
    started = time.monotonic()
    down = sdi(
        tmp_path, "metrics", settings={**settings, "SDI_API_URL": DOWN_API}, secret=server.password
    )
    assert down.returncode == 0 and time.monotonic() - started < 30, down.stderr
    check_against_buffer(down.stdout, buffer_path, api_up=0)


def test_metrics_file_is_replaced_whole(crawled, tmp_path):
    server, buffer_path = crawled
    settings = {**server.settings, "SDI_BUFFER_PATH": str(buffer_path)}
    target = tmp_path / "textfile" / "sdi.prom"
    target.parent.mkdir()
    target.write_text("# an older run's file\n")
    before = target.stat().st_ino
    proc = sdi(
        tmp_path, "metrics", "--output", str(target), settings=settings, secret=server.password
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert target.stat().st_ino != before, "the file was rewritten in place, not renamed over"
    assert os.listdir(target.parent) == ["sdi.prom"], "a temporary file was left behind"
    text = target.read_text()
    check_against_buffer(text, buffer_path, api_up=1)
    assert server.password not in text
    unwritable = sdi(
        tmp_path,
        "metrics",
        "--output",
        str(tmp_path / "missing" / "sdi.prom"),
        settings=settings,
        secret=server.password,
    )
    assert unwritable.returncode == 1 and "--output: cannot write" in unwritable.stderr
    missing = sdi(
        tmp_path,
        "metrics",
        "--output",
        str(target),
        secret=server.password,
        settings={**settings, "SDI_BUFFER_PATH": str(tmp_path / "nothing.db")},
    )
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert target.read_text() == text, "a failed run changed the last good file"


def test_dashboard_serves_the_same_metrics(crawled, tmp_path):
    server, buffer_path = crawled
    env = {
        "SDI_API_URL": server.url,
        "SDI_USERNAME": server.username,
        "SDI_PASSWORD": server.password,
    }
    dashboard = Dashboard(buffer_path, tmp_path, env=env)
    try:
        deadline = time.monotonic() + 20
        while True:  # the health loop's first check runs as the dashboard starts
            status, headers, body = fetch(dashboard.url + "/metrics")
            assert status == 200, body[:500]
            if samples(body.decode())["sdi_api_up"][()] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert headers["Content-Type"].startswith("text/plain; version=")
        check_against_buffer(body.decode(), buffer_path, api_up=1)
        assert server.password not in body.decode() and server.password not in dashboard.stderr()
    finally:
        dashboard.stop()
    bare = Dashboard(buffer_path, tmp_path)  # no API configured: no sdi_api_up
    try:
        status, _, body = fetch(bare.url + "/metrics")
        assert status == 200
        check_against_buffer(body.decode(), buffer_path, api_up=None)
    finally:
        bare.stop()


def test_dashboard_metrics_never_write_the_buffer(crawled, tmp_path):
    _, buffer_path = crawled
    with sqlite3.connect(buffer_path) as conn:
        conn.execute("BEGIN IMMEDIATE")  # a crawl's commit in progress holds the write lock
        dashboard = Dashboard(buffer_path, tmp_path)
        try:
            started = time.monotonic()
            status, _, body = fetch(dashboard.url + "/metrics")
            assert status == 200 and time.monotonic() - started < 3, body[:500]
        finally:
            dashboard.stop()
            conn.rollback()


def test_every_metric_is_documented_in_the_docs_and_the_help(tmp_path):
    page = (
        ROOT / "docs" / "metrics.md"
    ).read_text()  # generated from METRICS; the test guards the generator
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `([^`]+)` \| (\w+) \|", page, re.MULTILINE)
    }
    assert {doc.signature: doc.type for doc in METRICS}.items() <= table.items()
    help_text = sdi(tmp_path, "metrics", "--help").stdout
    for doc in METRICS:
        assert doc.signature in help_text and doc.meaning in help_text
    assert "--output" in help_text and "--no-api" in help_text and ".prom" in help_text
