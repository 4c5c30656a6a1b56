"""The API goes away: for a whole crawl, for a while in the middle of one, or by crashing and restarting."""

from __future__ import annotations

from tests.reliability.harness import (
    CLOSING_LINE,
    NOT_DELIVERED_LINE,
    RESUMED_LINE,
    crawl_settings,
    failed_attempts,
    result_urls,
    stored_figures,
    wait_until,
)
from tests.support.crawl import run_crawl

#: Rows waiting above which process_item waits for delivery (SDI_BUFFER_MAX_PENDING): the results
#: produced while the API is away also meet back-pressure.
BACKPRESSURE = 200


def test_api_down_for_a_whole_crawl_then_the_next_run_delivers(
    form, sdi_server, tmp_path, reliability_report
):
    """An API that never answers costs no result: the crawl buffers everything, says how to drain
    it, and the next run (nothing new to crawl) delivers it."""
    row = reliability_report.row(
        form, "API down for a whole crawl", "next run delivers what was buffered"
    )
    n = form.results
    for run in range(form.runs):
        offset = run * n
        settings = crawl_settings(sdi_server, tmp_path / "buffer.db", SDI_CLOSE_TIMEOUT=1)
        sdi_server.stop()
        first = run_crawl(tmp_path, settings, {"n": n, "offset": offset})
        assert first.returncode == 0, first.log[-3000:]
        assert first.stats["sdi/items_buffered"] == n
        assert first.stats["sdi/pending_at_close"] == n
        assert f"{n} results are still pending" in first.log and "scrapy sdi flush" in first.log
        sdi_server.start()
        second = run_crawl(tmp_path, crawl_settings(sdi_server, tmp_path / "buffer.db"), {"n": 0})
        assert second.returncode == 0, second.log[-3000:]
        assert second.stats["sdi/items_delivered"] == n
        assert second.stats["sdi/pending_at_close"] == 0
        figures = stored_figures(
            sdi_server, result_urls((run + 1) * n)
        )  # this run's and the earlier ones
        assert figures.exactly_once, figures.describe()
    row.add(figures, runs=2 * form.runs)


def test_api_outage_in_the_middle_of_a_crawl(
    form, sdi_server_factory, crawls, rng, tmp_path, reliability_report
):
    """The server is stopped while results are still being produced, stays away through several
    failed attempts, then comes back (on the same port and database, with every token forgotten).
    The crawl never stops: rows wait in the buffer, delivery resumes, nothing is lost or doubled."""
    n = form.results
    row = reliability_report.row(
        form,
        "API outage in the middle of a crawl",
        f"server stopped {form.outages}× per crawl, back after ≥ 3 failed attempts",
    )
    for run in range(form.runs):
        server = sdi_server_factory(latency=0.02, seed=rng.randrange(2**31))
        workdir = tmp_path / f"run{run}"
        audit = workdir / "audit.jsonl"
        settings = crawl_settings(
            server,
            workdir / "buffer.db",
            SDI_BUFFER_MAX_PENDING=BACKPRESSURE,
            SDI_AUDIT_LOG=str(audit),
        )
        # the spider yields a part of its results per outage, each once the API is away
        crawl = crawls.start(workdir, settings, {"n": n}, gates=form.outages)
        duplicates = 0
        for outage in range(form.outages):
            # each outage its own: delivery resumed after the one before
            wait_until(
                lambda: crawl.log.count(RESUMED_LINE) >= outage,
                "delivery resumed after the last outage",
            )
            duplicates += _some_progress(
                server, crawl, rng.randint(1, n // (2 * (form.outages + 1)))
            )
            failed = failed_attempts(crawl.audit())
            server.stop()
            crawl.open_gate()
            wait_until(
                lambda: failed_attempts(crawl.audit()) >= failed + 3 or not crawl.alive,
                "three failed attempts during the outage",
            )
            assert crawl.alive, crawl.tail()
            server.start()
            wait_until(
                lambda: server.stats()["logins"] >= 1,
                "a new login after the outage (tokens are gone)",
            )
        result = _stored_exactly_once(server, crawl, n, duplicates, row)
        assert result.stats["sdi/batches_failed"] >= 3 * form.outages
        assert result.log.count(RESUMED_LINE) >= form.outages
        # the outage was noticed while the spider was still producing results
        noticed, closing = crawl.line_index(NOT_DELIVERED_LINE), crawl.line_index(CLOSING_LINE)
        assert noticed is not None and closing is not None and noticed < closing, (noticed, closing)
        server.stop()


def test_api_crashes_and_restarts_mid_crawl(
    form, sdi_server_factory, crawls, rng, tmp_path, reliability_report
):
    """The server process is killed (SIGKILL) at random moments and started again at once: batches
    in flight may be stored without an answer, tokens are gone. The client logs in again and
    resends; what was stored before the crash is answered duplicate, not stored twice."""
    n = form.results
    row = reliability_report.row(
        form,
        "API crash (`kill -9`) and immediate restart",
        f"{form.restarts} crashes per crawl at random moments",
    )
    for run in range(form.runs):
        server = sdi_server_factory(latency=0.05, seed=rng.randrange(2**31))
        workdir = tmp_path / f"run{run}"
        settings = crawl_settings(
            server, workdir / "buffer.db", SDI_BUFFER_MAX_PENDING=BACKPRESSURE
        )
        # the spider yields a part of its results per crash, each once the API is back
        crawl = crawls.start(workdir, settings, {"n": n}, gates=form.restarts)
        duplicates = 0
        for _ in range(form.restarts):
            duplicates += _some_progress(
                server, crawl, rng.randint(1, n // (2 * (form.restarts + 1)))
            )
            server.kill()
            server.start()
            crawl.open_gate()
            # the crawl's tokens died with the server: it must log in again to go on
            wait_until(
                lambda: server.stats()["logins"] >= 1 or not crawl.alive,
                "a new login after the restart",
            )
            assert server.stats()["logins"] >= 1, crawl.tail()
        result = _stored_exactly_once(server, crawl, n, duplicates, row)
        assert result.stats["sdi/auth/logins"] >= 1 + form.restarts
        server.stop()


def _some_progress(server, crawl, stored: int) -> int:
    """Wait until ``stored`` results are stored, the crawl still running; the duplicates answered
    so far (the server's counters restart with it)."""
    wait_until(
        lambda: server.stats()["accepted"] >= stored or not crawl.alive, f"{stored} results stored"
    )
    assert crawl.alive, crawl.tail()
    return server.stats()["duplicates"]


def _stored_exactly_once(server, crawl, n: int, duplicates: int, row):
    """Let the crawl finish; every one of its ``n`` results must be stored once, none left pending."""
    result = crawl.finish()
    figures = stored_figures(server, result_urls(n), duplicates + server.stats()["duplicates"])
    row.add(figures)
    assert result.returncode == 0, result.log[-3000:]
    assert "Traceback" not in result.log, result.log[-3000:]
    assert figures.exactly_once, figures.describe()
    assert result.stats["sdi/pending_at_close"] == 0
    return result
