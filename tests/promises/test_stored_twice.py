"""None stored twice: whatever is sent again — after an answer lost, a kill, by another run on the
same buffer — the API stores each result once.

Attacks: an API that stores batches and then drops the answer, with ``kill -9`` at random moments
and reruns; and two runs crawling the same pages into one buffer file, one killed and run again
while the other still delivers.
"""

from __future__ import annotations

from tests.reliability.harness import (
    kill_and_rerun,
    kill_mid_delivery,
    result_urls,
    short_close_settings,
    start_side_by_side,
    stored_figures,
)


def test_answers_dropped_after_storing_and_kills_at_random_moments_store_nothing_twice(
    form,
    sdi_server_factory,
    crawls,
    rng,
    tmp_path,
):
    server = sdi_server_factory(latency=0.05, drop_after_rate=0.3, seed=rng.randrange(2**31))

    def check(figures):
        assert figures.duplicated == 0 and figures.unexpected == 0, figures.describe()

    settings = short_close_settings(server, tmp_path / "buffer.db")
    killed = kill_and_rerun(form, server, crawls, rng, tmp_path, settings, check=check)
    assert killed.figures.duplicate_answers > 0, "nothing was sent twice: the attack did not happen"


def test_runs_sharing_a_file_finding_the_same_results_one_killed_and_rerun_store_nothing_twice(
    sdi_server_factory,
    crawls,
    rng,
    tmp_path,
):
    """The killed run buffered first what the live one finds later; its rerun finds it all again."""
    server = sdi_server_factory(latency=0.2, drop_after_rate=0.1, seed=rng.randrange(2**31))
    settings = short_close_settings(server, tmp_path / "buffer.db", SDI_CRAWLER_NAME="files")
    n = 300
    doomed_args = {"n": n, "offset": n // 2}  # its first half is the live run's second
    live, doomed = start_side_by_side(crawls, tmp_path, settings, {"n": n}, doomed_args)
    batches = kill_mid_delivery(doomed, rng)
    rerun = crawls.start(tmp_path / "rerun", settings, doomed_args)
    live.open_gate()
    for crawl in (live, rerun):
        result = crawl.finish()
        assert result.returncode == 0, result.log[-3000:]
    figures = stored_figures(server, result_urls(n + n // 2))
    assert figures.exactly_once, f"killed after {batches} of its submissions: {figures.describe()}"
