"""kill -9 of the crawl at random moments, then reruns on the same buffer: nothing lost, nothing stored twice."""

from __future__ import annotations

from tests.reliability.harness import (
    MOMENTS,
    buffer_states,
    crawl_settings,
    kill_and_rerun,
    kill_with_the_api_hung,
    result_urls,
    stored_figures,
    wait_until,
)


def test_kill_9_at_random_moments_then_rerun_stores_every_result_once(
    form,
    sdi_server_factory,
    crawls,
    rng,
    tmp_path,
    reliability_report,
):
    """A dead crawl leaves committed rows, some leased to it; the next run takes them back and
    resends them under the same ids, so the API answers duplicate.

    Each round crawls new URLs into the same buffer file (runs of one project over days); its first
    ``kills_per_round`` runs are killed, then reruns go on until one delivers everything. The
    server stores every result before answering with a delay, and drops some answers, so kills
    often hit batches stored but not yet acknowledged.
    """
    server = sdi_server_factory(latency=0.05, drop_after_rate=0.1, seed=rng.randrange(2**31))
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(server, buffer_path, SDI_TIMEOUT=1, SDI_LEASE_TIMEOUT=2)

    def check(figures):
        assert figures.exactly_once, figures.describe()

    killed = kill_and_rerun(form, server, crawls, rng, tmp_path, settings, check=check)
    assert buffer_states(buffer_path)["delivered"] == killed.figures.results
    spread = ", ".join(f"{killed.kills[m]} {m}" for m in MOMENTS)
    row = reliability_report.row(
        form,
        "crawl killed (`kill -9`), then rerun on the same buffer",
        f"{sum(killed.kills.values())} kills at random moments ({spread})",
    )
    row.add(killed.figures, runs=killed.runs)


def test_rerun_after_kill_9_takes_back_the_dead_runs_batches_at_once(
    sdi_server_factory, crawls, tmp_path
):
    """Batches a killed crawl had in flight are resent by the next run at once, not after SDI_LEASE_TIMEOUT.

    The API hangs with the crawl's batches in flight, the crawl is killed, and the API restarts
    without having read them. The rerun's close timeout is far below the lease: whatever it has
    not resent when it ends is lost to the API until some later run.
    """
    server = sdi_server_factory()
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(
        server, buffer_path, SDI_CRAWLER_NAME="files", SDI_TIMEOUT=30, SDI_LEASE_TIMEOUT=120
    )
    n = 200
    crawl = crawls.start(tmp_path / "crawl", settings, {"n": n}, gates=1)
    wait_until(lambda: server.stats()["accepted"] >= n // 2, "the first half delivered")
    kill_with_the_api_hung(crawl, server, buffer_path, result_urls(n // 2, n // 2))

    rerun = crawls.start(tmp_path / "rerun", {**settings, "SDI_CLOSE_TIMEOUT": 5}, {"n": n})
    result = rerun.finish()
    assert result.returncode == 0, result.log[-3000:]
    figures = stored_figures(server, result_urls(n))
    assert figures.exactly_once, figures.describe()
