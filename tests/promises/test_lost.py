"""No result lost: every result passed on by the pipeline is stored by the API, whatever kills the crawl.

Attacks: ``kill -9`` at random moments, with reruns whose close timeout is far below
SDI_LEASE_TIMEOUT (they cannot wait for a dead run's leases), while the API drops some answers
after storing; and a run killed beside a live one on the same buffer file, the live one closing
soon after.
"""

from __future__ import annotations

from tests.reliability.harness import (
    answered,
    buffered_urls,
    kill_and_rerun,
    kill_with_the_api_hung,
    result_urls,
    short_close_settings,
    start_side_by_side,
    stored_figures,
    wait_until,
)


def test_kill_9_at_random_moments_then_reruns_lose_nothing(
    form, sdi_server_factory, crawls, rng, tmp_path
):
    server = sdi_server_factory(latency=0.05, drop_after_rate=0.1, seed=rng.randrange(2**31))

    def check(figures):
        assert figures.lost == 0 and figures.unexpected == 0, figures.describe()

    settings = short_close_settings(server, tmp_path / "buffer.db")
    kill_and_rerun(form, server, crawls, rng, tmp_path, settings, check=check)


def test_a_run_killed_beside_a_live_one_loses_nothing_once_the_live_one_closes(
    sdi_server_factory, crawls, tmp_path
):
    """Both crawl for one crawler into one file; the killed run's results are the live one's to
    deliver before its close ends, since no later run may come. The API hangs and restarts around
    the kill, so the killed run's batches in flight never reached it."""
    server = sdi_server_factory()
    settings = short_close_settings(server, tmp_path / "buffer.db", SDI_CRAWLER_NAME="files")
    n = 300
    live, doomed = start_side_by_side(crawls, tmp_path, settings, {"n": n, "offset": n}, {"n": n})
    wait_until(lambda: answered(server) >= n, "the first half of each delivered")
    kill_with_the_api_hung(doomed, server, tmp_path / "buffer.db", result_urls(n - n // 2, n // 2))
    live.open_gate()
    result = live.finish()
    assert result.returncode == 0, result.log[-3000:]
    passed_on = buffered_urls(tmp_path / "buffer.db")
    assert result_urls(n, n) <= passed_on
    figures = stored_figures(server, passed_on)
    assert figures.lost == 0 and figures.unexpected == 0, figures.describe()
