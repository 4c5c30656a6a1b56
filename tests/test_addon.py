"""ADDONS = {"scrapy_sdi.Addon": 500} alone enables delivery; explicit entries are never doubled."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from scrapy.utils.misc import load_object
from scrapy.utils.test import get_crawler

from scrapy_sdi import Addon, SDIPipeline, SDIStatus
from scrapy_sdi.addon import PIPELINE_PRIORITY, STATUS_PRIORITY
from tests.support.crawl import ROOT, run_crawl

ADDONS = {"scrapy_sdi.Addon": 500}
API = {"SDI_API_URL": "http://127.0.0.1:9/api/v1", "SDI_USERNAME": "u", "SDI_PASSWORD": "p"}
#: The crawl helper lists both components itself; these settings leave them to the add-on.
ADDON_ONLY = {
    "ADDONS": ADDONS,
    "ITEM_PIPELINES": {},
    "EXTENSIONS": {"tests.support.statsdump.StatsDump": 0},
}


def _components(crawler, name: str, cls: type) -> dict:
    """The entries of a component priority dict that load to cls, as given (key -> priority)."""
    return {k: v for k, v in crawler.settings.getdict(name).items() if load_object(k) is cls}


def _enabled(log: str, kind: str) -> str:
    """The list Scrapy logs after 'Enabled item pipelines:' / 'Enabled extensions:'."""
    match = re.search(rf"Enabled {kind}:\n(\[.*?\])", log, re.DOTALL)
    assert match, f"no 'Enabled {kind}' list in the log"
    return match.group(1)


def test_the_addon_alone_enables_both_components_at_their_documented_priorities():
    crawler = get_crawler(settings_dict={"ADDONS": ADDONS, **API})
    assert _components(crawler, "ITEM_PIPELINES", SDIPipeline) == {SDIPipeline: PIPELINE_PRIORITY}
    assert _components(crawler, "EXTENSIONS", SDIStatus) == {SDIStatus: STATUS_PRIORITY}
    assert (PIPELINE_PRIORITY, STATUS_PRIORITY) == (800, 500)
    assert any(isinstance(addon, Addon) for addon in crawler.addons.addons)


@pytest.mark.parametrize(
    "key", ["scrapy_sdi.SDIPipeline", "scrapy_sdi.pipeline.SDIPipeline", SDIPipeline]
)
def test_an_explicit_entry_keeps_its_key_and_priority(key):
    crawler = get_crawler(
        settings_dict={
            "ADDONS": ADDONS,
            "ITEM_PIPELINES": {key: 300},
            "EXTENSIONS": {"scrapy_sdi.extension.SDIStatus": None},
            **API,
        }
    )
    assert _components(crawler, "ITEM_PIPELINES", SDIPipeline) == {key: 300}
    # None is how a user disables a component: the add-on must not switch it back on
    assert _components(crawler, "EXTENSIONS", SDIStatus) == {"scrapy_sdi.extension.SDIStatus": None}


def test_the_addon_module_imports_no_component():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('sdi_addon', {str(ROOT / 'scrapy_sdi' / 'addon.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('scrapy_sdi', 'scrapy', 'treq', 'twisted'))\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_crawl_enabled_only_through_addons_delivers_every_result(sdi_server, tmp_path):
    settings = {**sdi_server.settings, "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"), **ADDON_ONLY}
    result = run_crawl(tmp_path, settings, {"n": 120})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_buffered"] == 120
    assert result.stats["sdi/items_delivered"] == 120
    assert result.stats["sdi/pending_at_close"] == 0
    assert sorted(r["url"] for r in sdi_server.results()) == sorted(
        f"https://files.example.com/f/{i}/file{i}.mp3" for i in range(120)
    )
    assert _enabled(result.log, "item pipelines").count("SDIPipeline") == 1
    assert _enabled(result.log, "extensions").count("SDIStatus") == 1


@pytest.mark.parametrize(
    ("pipeline", "status", "status_enabled"),
    [
        ("scrapy_sdi.SDIPipeline", "scrapy_sdi.SDIStatus", 1),
        ("scrapy_sdi.pipeline.SDIPipeline", "scrapy_sdi.extension.SDIStatus", 0),
    ],
)
def test_explicit_entries_and_the_addon_register_the_pipeline_once(
    sdi_server, tmp_path, pipeline, status, status_enabled
):
    settings = {
        **sdi_server.settings,
        "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
        "ADDONS": ADDONS,
        "ITEM_PIPELINES": {pipeline: 700},
        # None disables the extension; the add-on must leave it off
        "EXTENSIONS": {
            "tests.support.statsdump.StatsDump": 0,
            status: 500 if status_enabled else None,
        },
    }
    result = run_crawl(tmp_path, settings, {"n": 50})
    assert result.returncode == 0, result.log[-3000:]
    assert _enabled(result.log, "item pipelines").count("SDIPipeline") == 1
    assert _enabled(result.log, "extensions").count("SDIStatus") == status_enabled
    assert result.stats["sdi/items_buffered"] == 50
    assert result.stats["sdi/items_deduplicated"] == 0
    assert result.stats["sdi/items_delivered"] == 50
    assert len(sdi_server.results()) == 50
