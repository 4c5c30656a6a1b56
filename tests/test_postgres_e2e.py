"""Real crawls on SDI_BUFFER = "postgres": a private PostgreSQL cluster, the reference server over
loopback, each of Scrapy's three ways to run (asyncio reactor, plain Twisted reactor, none).

A crawl delivers every result once; the same crawl run again stores nothing twice (the buffer
remembers each (crawler, url) it delivered); a server that cannot be reached at start closes the
spider as an unusable SQLite file does (``sdi_buffer_unavailable``), in one ERROR line naming
the server, its password masked, before anything is crawled.
"""

from __future__ import annotations

import socket

import pytest

from tests.support.crawl import FAST_RETRIES, REACTOR_MODES, assert_stored_once, run_crawl
from tests.support.postgres import PASSWORD

RESULTS = 300
BAD_EVERY = 50  # every 50th item has no valid URL: kept as invalid in the buffer, never sent


def settings_for(server, db_url, mode, **extra):
    return {
        **server.settings,
        **FAST_RETRIES,
        **REACTOR_MODES[mode],
        "SDI_BUFFER": "postgres",
        "SDI_BUFFER_URL": db_url,
        "SDI_BATCH_SIZE": 50,
        **extra,
    }


def states(db) -> dict[str, int]:
    """The buffer's rows by state, read from the database itself."""
    out = db.server.psql("SELECT state, count(*) FROM sdi_results GROUP BY state", db.name)
    return {state: int(n) for state, n in (line.split("|") for line in out.splitlines())}


@pytest.mark.parametrize("mode", REACTOR_MODES)
def test_every_result_is_stored_once_and_a_second_run_stores_nothing_twice(
    sdi_server, postgres_db, tmp_path, mode
):
    settings = settings_for(sdi_server, postgres_db.url, mode)
    invalid = len(range(0, RESULTS, BAD_EVERY))
    valid = RESULTS - invalid
    first = run_crawl(tmp_path, settings, {"n": RESULTS, "bad_every": BAD_EVERY})
    assert first.returncode == 0, first.log[-3000:]
    assert first.stats["finish_reason"] == "finished", first.stats
    assert first.stats["sdi/items_delivered"] == valid, first.stats
    assert first.stats["sdi/items_invalid"] == invalid, first.stats
    assert first.stats["sdi/pending_at_close"] == 0, first.stats
    assert_stored_once(sdi_server, valid)
    assert states(postgres_db) == {"delivered": valid, "invalid": invalid}

    # the same crawl again, with 40 more results: only those are sent
    again = run_crawl(tmp_path, settings, {"n": RESULTS + 40, "bad_every": BAD_EVERY})
    assert again.returncode == 0, again.log[-3000:]
    more = 40 - len(range(RESULTS, RESULTS + 40, BAD_EVERY))
    assert again.stats["sdi/items_delivered"] == more, again.stats
    assert again.stats["sdi/items_deduplicated"] == valid, again.stats
    assert_stored_once(sdi_server, valid + more)
    assert states(postgres_db)["delivered"] == valid + more
    for result in (first, again):
        assert "Traceback" not in result.log and PASSWORD not in result.log
        assert PASSWORD not in str(result.stats)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("mode", REACTOR_MODES)
def test_postgresql_unreachable_at_start_closes_the_spider_in_one_line(sdi_server, tmp_path, mode):
    port = _closed_port()
    url = f"postgresql://sdi:{PASSWORD}@127.0.0.1:{port}/crawl"
    result = run_crawl(tmp_path, settings_for(sdi_server, url, mode), {"n": 50})
    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] == "sdi_buffer_unavailable", result.stats
    assert result.stats.get("item_scraped_count", 0) == 0  # nothing crawled, nothing lost
    errors = [line for line in result.log.splitlines() if " ERROR: " in line]
    assert len(errors) == 1, result.log[-3000:]
    assert f"postgresql://sdi:***@127.0.0.1:{port}/crawl" in errors[0], errors[0]
    assert "unreachable" in errors[0], errors[0]
    assert PASSWORD not in result.log and PASSWORD not in str(result.stats)
    assert "Traceback" not in result.log
    assert sdi_server.results() == []
