"""TLS is verified by default; a private CA is trusted through SSL_CERT_FILE, as the README says."""

from __future__ import annotations

import pytest

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess
from tests.support.crawl import FAST_RETRIES, REACTOR_MODES, assert_stored_once, run_crawl
from tests.support.tls import make_private_ca


@pytest.mark.parametrize("mode", ["asyncio", "reactorless"])  # treq, then aiohttp
def test_an_untrusted_certificate_keeps_results_and_a_trusted_private_ca_delivers_them(
    tmp_path, mode
):
    ca, cert, key = make_private_ca(tmp_path)
    server = SDIServerProcess(tmp_path / "server", tls_cert=cert, tls_key=key).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        settings = {
            **server.settings,
            **FAST_RETRIES,
            "SDI_BUFFER_PATH": str(tmp_path / "buffer.db"),
            "SDI_CLOSE_TIMEOUT": 1,
            **REACTOR_MODES[mode],
        }
        refused = run_crawl(tmp_path, settings, {"n": 50}, extra_env={"SSL_CERT_FILE": ""})
        assert refused.returncode == 0, refused.log[-3000:]
        assert refused.stats["sdi/items_buffered"] == 50
        assert (
            refused.stats["sdi/pending_at_close"] == 50
        )  # not verified: nothing sent, nothing lost
        assert "certificate verify failed" in refused.log and "SSL_CERT_FILE" in refused.log
        assert server.results() == []

        trusted = run_crawl(tmp_path, settings, {"n": 50}, extra_env={"SSL_CERT_FILE": str(ca)})
        assert trusted.returncode == 0, trusted.log[-3000:]
        assert trusted.stats["sdi/pending_at_close"] == 0
        assert "Traceback" not in trusted.log
        assert_stored_once(server, 50)
    finally:
        server.stop()
