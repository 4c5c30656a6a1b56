"""kill -9 of the crawl at random moments, then reruns on the same buffer: nothing lost, nothing stored twice."""

from __future__ import annotations

from collections import Counter

from tests.reliability.harness import (
    CLOSING_LINE,
    PIPELINE_OPEN_LINE,
    buffer_states,
    crawl_settings,
    result_urls,
    stored_figures,
    wait_until,
)

#: Where a kill may land, with weights: as the pipeline opens (items about to be buffered), after a
#: random number of results were answered (batches in flight, rows committed but not yet acked),
#: and in close_spider's final drain.
MOMENTS = {"start": 1, "delivering": 3, "closing": 1}


def test_kill_9_at_random_moments_then_rerun_stores_every_result_once(
    form, sdi_server_factory, crawls, rng, tmp_path, reliability_report,
):
    """A dead crawl leaves committed rows, some leased to it; the next run takes them back after
    SDI_LEASE_TIMEOUT and resends them under the same ids, so the API answers duplicate.

    Each round crawls new URLs into the same buffer file (runs of one project over days); its first
    ``kills_per_round`` runs are killed, then reruns go on until one delivers everything. The
    server stores every result before answering with a delay, and drops some answers, so kills
    often hit batches stored but not yet acknowledged.
    """
    server = sdi_server_factory(latency=0.05, drop_after_rate=0.1, seed=rng.randrange(2**31))
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(server, buffer_path, SDI_TIMEOUT=1, SDI_LEASE_TIMEOUT=2)
    n = form.results
    expected: set[str] = set()
    kills: Counter[str] = Counter()
    runs = 0
    round_number = 0
    while sum(kills.values()) < form.kills:
        args = {"n": n, "offset": round_number * n}
        expected |= result_urls(n, round_number * n)
        killed_this_round = 0
        while True:
            runs += 1
            assert runs <= 4 * form.kills + 10, "reruns do not converge"
            answered_before = _answered(server)
            left = len(expected) - server.stats()["accepted"]  # this round's results not stored yet
            crawl = crawls.start(tmp_path / "crawl", settings, args)
            if killed_this_round < form.kills_per_round and sum(kills.values()) < form.kills:
                moment = _choose(rng, left, first=not kills)
                if moment == "start":
                    crawl.wait_for_line(PIPELINE_OPEN_LINE)
                elif moment == "closing":
                    crawl.wait_for_line(CLOSING_LINE)
                else:
                    target = rng.randint(1, left)
                    wait_until(lambda: _answered(server) - answered_before >= target or not crawl.alive,
                               f"{target} results answered")
                if crawl.kill():
                    kills[moment] += 1
                    killed_this_round += 1
                    states = buffer_states(buffer_path)  # the file survives a kill at any moment
                    print(f"kill {sum(kills.values())} ({moment}): round {round_number}, run {runs}; "
                          f"buffer left {states['pending']} pending, {states['in_flight']} in flight")
                    continue
            result = crawl.finish()
            assert result.returncode == 0, result.log[-3000:]
            assert "Traceback" not in result.log, result.log[-3000:]
            if result.stats["sdi/pending_at_close"] == 0:
                # what the killed runs left unstored, this one delivered
                assert result.stats["sdi/items_delivered"] >= left, (result.stats, left)
                break
        figures = stored_figures(server, expected)
        assert figures.exactly_once, f"after round {round_number}: {figures.describe()}"
        round_number += 1
    assert kills["delivering"] >= 1
    assert buffer_states(buffer_path)["delivered"] == len(expected)
    spread = ", ".join(f"{kills[m]} {m}" for m in MOMENTS)
    row = reliability_report.row(form, "crawl killed (`kill -9`), then rerun on the same buffer",
                                 f"{sum(kills.values())} kills at random moments ({spread})")
    row.add(figures, runs=runs)


def _answered(server) -> int:
    stats = server.stats()
    return stats["accepted"] + stats["duplicates"]


def _choose(rng, left: int, *, first: bool) -> str:
    if first:
        return "delivering"  # at least one kill lands mid-delivery, whatever the seed
    moments = [m for m in MOMENTS if m != "delivering" or left > 0]
    return rng.choices(moments, weights=[MOMENTS[m] for m in moments])[0]


def test_rerun_after_kill_9_takes_back_the_dead_runs_batches_at_once(sdi_server_factory, crawls, tmp_path):
    """Batches a killed crawl had in flight are resent by the next run at once, not after SDI_LEASE_TIMEOUT.

    The API hangs with the crawl's batches in flight, the crawl is killed, and the API restarts
    without having read them. The rerun's close timeout is far below the lease: whatever it has
    not resent when it ends is lost to the API until some later run.
    """
    server = sdi_server_factory()
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(server, buffer_path, SDI_CRAWLER_NAME="files", SDI_TIMEOUT=30, SDI_LEASE_TIMEOUT=120)
    n = 200
    crawl = crawls.start(tmp_path / "crawl", settings, {"n": n}, gates=1)
    wait_until(lambda: server.stats()["accepted"] >= n // 2, "the first half delivered")
    server.pause()
    crawl.open_gate()
    wait_until(lambda: _left_with_some_in_flight(buffer_path, n), "every result buffered, a batch in flight")
    assert crawl.kill()
    server.kill()
    server.start()

    rerun = crawls.start(tmp_path / "rerun", {**settings, "SDI_CLOSE_TIMEOUT": 5}, {"n": n})
    result = rerun.finish()
    assert result.returncode == 0, result.log[-3000:]
    figures = stored_figures(server, result_urls(n))
    assert figures.exactly_once, figures.describe()


def _left_with_some_in_flight(buffer_path, n: int) -> bool:
    states = buffer_states(buffer_path)
    return states["in_flight"] > 0 and sum(states.values()) == n
