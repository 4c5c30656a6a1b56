"""The same delivery on Scrapy's three ways to run: asyncio reactor, plain Twisted reactor, no reactor."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scrapy_sdi.errors import SDIConfigError
from scrapy_sdi.transport import AiohttpTransport
from tests.support.crawl import FAST_RETRIES, REACTOR_MODES, ROOT, assert_stored_once, run_crawl

MODES = REACTOR_MODES


@pytest.mark.smoke
@pytest.mark.parametrize("mode", MODES)
def test_fault_mix_delivers_exactly_once_in_every_mode(mode, sdi_server_factory, tmp_path):
    server = sdi_server_factory(
        fail_rate=0.2,
        rate_limit_rate=0.05,
        retry_after=0.2,
        drop_before_rate=0.05,
        drop_after_rate=0.05,
        omit_rate=0.1,
        token_max_uses=15,
        max_results=40,
        seed=11,
        filters=[{"id": 1, "field": "filename", "kind": "glob", "pattern": "file1?.mp3"}],
    )
    settings = {
        **server.settings,
        **FAST_RETRIES,
        **MODES[mode],
        "SDI_BUFFER_PATH": str(tmp_path / "b.db"),
    }
    result = run_crawl(tmp_path, settings, {"n": 600}, timeout=240)
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["sdi/items_filtered"] == 10
    assert result.stats["sdi/items_delivered"] == 590
    assert result.stats["sdi/pending_at_close"] == 0
    assert_stored_once(server, 590)
    assert "Traceback" not in result.log


def test_reactorless_without_aiohttp_says_what_to_install(monkeypatch):
    # Scrapy's own reactorless mode imports aiohttp too; this is the line scrapy_sdi adds
    # when it is the first to need it.
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(SDIConfigError) as info:
        AiohttpTransport()
    assert str(info.value) == (
        "TWISTED_REACTOR_ENABLED: without a Twisted reactor scrapy_sdi delivers through aiohttp; "
        "install it with: pip install aiohttp"
    )


def test_the_client_tests_pass_on_the_plain_twisted_reactor():
    """test_client.py runs under the asyncio reactor with the suite; here, under Twisted's default."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "--reactor=default",
            str(ROOT / "tests" / "test_client.py"),
            "-k",
            "not aiohttp",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
