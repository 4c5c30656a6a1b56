"""scrapy_sdi.monitors: Spidermon monitors over the sdi/ stats, in real crawls and on given stats."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scrapy.utils.test import get_crawler
from spidermon import MonitorRunner  # the `test` extra installs spidermon (the `monitoring` extra)

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.monitors import SDIMonitorSuite
from tests.support.crawl import ROOT, CrawlResult, run_crawl
from tests.support.postgres import PASSWORD

SUITE = "scrapy_sdi.monitors.SDIMonitorSuite"
NAMES = {
    "pending": "SDI pending at close/no result left pending",
    "rejected": "SDI rejected results/rejected ratio within SDI_MONITOR_MAX_REJECTED_RATIO",
    "filters": "SDI filters/filters loaded",
    "delivery": "SDI delivery/results delivered",
}
SPIDERMON = {
    "ADDONS": {"scrapy_sdi.Addon": 500},
    "ITEM_PIPELINES": {},
    "EXTENSIONS": {
        "tests.support.statsdump.StatsDump": 0,
        "spidermon.contrib.scrapy.extensions.Spidermon": 500,
    },
    "SPIDERMON_ENABLED": True,
    "SPIDERMON_SPIDER_CLOSE_MONITORS": [SUITE],
}
FAST_RETRIES = {
    "SDI_RETRY_BACKOFF_BASE": 0.02,
    "SDI_RETRY_BACKOFF_MAX": 0.3,
    "SDI_UNLOCK_DELAY": 0.2,
    "SDI_TIMEOUT": 5,
    "SDI_LEASE_TIMEOUT": 6,
}

# The crawl subprocess (tests.support.run_spider) makes ScrapyDeprecationWarnings errors. The one
# exception: spidermon 1.27.0 writes its monitor report through Spider.log()
# (spidermon/contrib/scrapy/runners.py, SpiderMonitorResult.log), deprecated in Scrapy 2.19; as an
# error it aborts Spidermon's spider_closed handler and no monitor is reported at all. This
# extension, written next to the crawl, ignores that warning for spidermon's module only; it is
# built after run_spider installs its filter, so it takes precedence.
_IGNORE_SPIDERMON_SPIDER_LOG = r"""
import warnings

from scrapy.exceptions import ScrapyDeprecationWarning


class IgnoreSpidermonSpiderLog:
    def __init__(self):
        warnings.filterwarnings(
            "ignore", message=r"Spider\.log\(\) is deprecated", category=ScrapyDeprecationWarning,
            module=r"spidermon\.contrib\.scrapy\.runners$",
        )
"""


def run_monitored_crawl(
    tmp_path: Path, settings: dict[str, Any], spider_args: dict[str, Any]
) -> CrawlResult:
    (tmp_path / "sdi_spidermon_warnings.py").write_text(
        _IGNORE_SPIDERMON_SPIDER_LOG, encoding="utf-8"
    )
    extensions = {**SPIDERMON["EXTENSIONS"], "sdi_spidermon_warnings.IgnoreSpidermonSpiderLog": 0}
    return run_crawl(tmp_path, {**SPIDERMON, "EXTENSIONS": extensions, **settings}, spider_args)


def monitor_statuses(log: str) -> dict[str, str]:
    """Spidermon's report lines: '[Spidermon] <suite monitor>/<method>... OK|FAIL|ERROR|SKIPPED'."""
    return dict(re.findall(r"\[Spidermon\] (.+?)\.\.\. ([A-Z]+)", log))


def assert_clean_run(result: CrawlResult) -> None:
    assert result.returncode == 0, result.log[-3000:]
    assert "Error caught on signal handler" not in result.log, result.log[-3000:]
    assert "DeprecationWarning" not in result.log, result.log[-3000:]


@pytest.fixture(params=["sqlite", "postgres"])
def buffer_settings(request, tmp_path) -> dict[str, str]:
    """The crawl's buffer: a SQLite file, then a database of the private PostgreSQL server."""
    if request.param == "sqlite":
        return {"SDI_BUFFER_PATH": str(tmp_path / "buffer.db")}
    url = request.getfixturevalue("postgres_db").url
    return {"SDI_BUFFER": "postgres", "SDI_BUFFER_URL": url}


def test_api_down_fails_the_pending_filters_and_delivery_monitors(
    sdi_server, tmp_path, buffer_settings
):
    sdi_server.stop()
    settings = {
        **sdi_server.settings,
        **buffer_settings,
        "SDI_CLOSE_TIMEOUT": 1,
        **FAST_RETRIES,
    }
    result = run_monitored_crawl(tmp_path, settings, {"n": 40})
    assert_clean_run(result)
    assert result.stats["sdi/pending_at_close"] == 40
    statuses = monitor_statuses(result.log)
    assert statuses == {
        NAMES["pending"]: "FAIL",
        NAMES["rejected"]: "OK",
        NAMES["filters"]: "FAIL",
        NAMES["delivery"]: "FAIL",
    }
    assert "[Spidermon] FAILED (failures=3)" in result.log
    assert (
        "40 results were still pending at close (sdi/pending_at_close = 40) after SDI_CLOSE_TIMEOUT = 1 s"
        in result.log
    )
    assert "no filters could be loaded (sdi/filters_source = 'none'" in result.log
    assert "40 results were buffered but none was delivered (sdi/items_delivered = 0" in result.log


def test_a_clean_crawl_passes_every_monitor(sdi_server, tmp_path, buffer_settings):
    settings = {**sdi_server.settings, **buffer_settings}
    result = run_monitored_crawl(tmp_path, settings, {"n": 60})
    assert_clean_run(result)
    assert result.stats["sdi/items_delivered"] == 60
    assert monitor_statuses(result.log) == {name: "OK" for name in NAMES.values()}
    assert "[Spidermon] FAILED" not in result.log and PASSWORD not in result.log
    assert re.search(r"\[Spidermon\] 4 monitors in [\d.]+s\n.*\[Spidermon\] OK\n", result.log)


def test_rejections_above_the_ratio_fail_the_rejected_monitor(sdi_server_factory, tmp_path):
    server = sdi_server_factory(reject_url_pattern=r"/f/\d*[05]/")  # 20 of 100
    settings = {
        **server.settings,
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        "SDI_MONITOR_MAX_REJECTED_RATIO": 0.1,
    }
    result = run_monitored_crawl(tmp_path, settings, {"n": 100})
    assert_clean_run(result)
    assert result.stats["sdi/items_rejected"] == 20
    statuses = monitor_statuses(result.log)
    assert statuses[NAMES["rejected"]] == "FAIL"
    assert [name for name, status in statuses.items() if status != "OK"] == [NAMES["rejected"]]
    assert (
        "20 of 100 buffered results were rejected by the API (20.0%), above SDI_MONITOR_MAX_REJECTED_RATIO = 0.1"
        in result.log
    )


def test_a_ratio_outside_0_to_1_stops_the_crawl_in_one_line(tmp_path):
    settings = {
        "SDI_API_URL": "http://127.0.0.1:9/api/v1",
        "SDI_USERNAME": "x",
        "SDI_PASSWORD": "x",
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        "SDI_MONITOR_MAX_REJECTED_RATIO": 1.5,
    }
    result = run_monitored_crawl(tmp_path, settings, {"n": 5})
    assert result.returncode == 1
    lines = [line for line in result.log.splitlines() if "Bad scrapy_sdi setting" in line]
    assert len(lines) == 1, result.log[-3000:]
    assert lines[0].endswith(
        "Bad scrapy_sdi setting: SDI_MONITOR_MAX_REJECTED_RATIO: 1.5 is out of range; expected a number from 0 to 1"
    )
    assert "item_scraped_count" not in result.stats


# --- the suite on given stats, in process (spidermon's plain MonitorRunner) -----------------------

CLEAN = {
    "sdi/items_buffered": 100,
    "sdi/items_delivered": 100,
    "sdi/items_rejected": 0,
    "sdi/pending_at_close": 0,
    "sdi/filters_source": "api",
    "sdi/batches_sent": 1,
    "sdi/batches_failed": 0,
}


def run_suite(stats: dict[str, Any], **settings: Any) -> dict[str, tuple[str, str]]:
    """Each monitor's (status, reason) after running the suite over stats."""
    crawler = get_crawler(settings_dict=settings)
    result = MonitorRunner().run(SDIMonitorSuite(crawler=crawler), stats=stats, crawler=crawler)
    return {item.item.name: (item.status, item.reason or "") for item in result.monitor_results}


def failing(outcome: dict[str, tuple[str, str]]) -> list[str]:
    return [name for name, (status, _) in outcome.items() if status != "OK"]


def test_clean_stats_pass():
    assert failing(run_suite(CLEAN)) == []


@pytest.mark.parametrize(
    ("ratio", "rejected", "fails"),
    [(0.05, 5, False), (0.05, 6, True), (0.0, 1, True), ("0", 0, False), (1, 99, False)],
)
def test_the_rejected_ratio_boundary(ratio, rejected, fails):
    outcome = run_suite(
        {**CLEAN, "sdi/items_rejected": rejected, "sdi/items_delivered": 100 - rejected},
        SDI_MONITOR_MAX_REJECTED_RATIO=ratio,
    )
    assert failing(outcome) == ([NAMES["rejected"]] if fails else [])


def test_rejections_with_nothing_buffered_fail():
    """Rows of an earlier run rejected now: any rejection is above the ratio of zero buffered."""
    outcome = run_suite(
        {**CLEAN, "sdi/items_buffered": 0, "sdi/items_delivered": 3, "sdi/items_rejected": 2}
    )
    assert failing(outcome) == [NAMES["rejected"]]
    assert outcome[NAMES["rejected"]][1] == (
        "2 of 0 buffered results were rejected by the API, above SDI_MONITOR_MAX_REJECTED_RATIO = 0.05"
    )


def test_the_filters_monitor_is_skipped_when_filters_are_disabled():
    outcome = run_suite({**CLEAN, "sdi/filters_source": "none"}, SDI_FILTERS_ENABLED=False)
    assert outcome[NAMES["filters"]][0] == "SKIPPED"
    assert failing(run_suite({**CLEAN, "sdi/filters_source": "none"})) == [NAMES["filters"]]


def test_a_dry_run_is_not_counted_as_undelivered():
    stats = {**CLEAN, "sdi/items_delivered": 0}
    assert run_suite(stats, SDI_DRY_RUN=True)[NAMES["delivery"]][0] == "SKIPPED"
    assert failing(run_suite(stats)) == [NAMES["delivery"]]


def test_every_monitor_is_skipped_without_sdi():
    assert {status for status, _ in run_suite({}).values()} == {"SKIPPED"}
    assert {status for status, _ in run_suite(CLEAN, SDI_ENABLED=False).values()} == {"SKIPPED"}


def test_the_suite_refuses_a_bad_ratio_when_spidermon_builds_it():
    expected = (
        r"^SDI_MONITOR_MAX_REJECTED_RATIO: -0.1 is out of range; expected a number from 0 to 1$"
    )
    with pytest.raises(SDIConfigError, match=expected):
        SDIMonitorSuite(crawler=get_crawler(settings_dict={"SDI_MONITOR_MAX_REJECTED_RATIO": -0.1}))


# --- spidermon stays optional ---------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_importing_scrapy_sdi_does_not_import_spidermon():
    proc = _python("import sys, scrapy_sdi; print('spidermon' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_without_spidermon_the_monitors_module_says_how_to_install_it():
    proc = _python("import sys; sys.modules['spidermon'] = None; import scrapy_sdi.monitors")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "ImportError: scrapy_sdi.monitors needs spidermon: pip install scrapy_sdi[monitoring]"
    )
