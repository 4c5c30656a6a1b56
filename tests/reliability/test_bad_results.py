"""Bad results among good ones: each refused with its reason and kept, the good ones around it delivered."""

from __future__ import annotations

import sqlite3
from collections import Counter

from tests.reliability.harness import crawl_settings, result_urls, stored_figures
from tests.support.crawl import run_crawl
from tests.support.spiders import BAD_RESULTS


def test_every_kind_of_bad_result_is_refused_with_its_reason_and_the_crawl_goes_on(
    form,
    sdi_server,
    tmp_path,
    reliability_report,
):
    rounds = max(
        1, form.results // 200
    )  # rounds of: a good result, then each bad kind and a good one
    good = rounds * (len(BAD_RESULTS) + 1)
    row = reliability_report.row(
        form,
        "bad results among good ones",
        f"each of {len(BAD_RESULTS)} kinds, {rounds}× (missing/null/non-string/relative/ftp url, "
        "NUL, lone surrogate, 6 MB field, not JSON-serializable, 2,000 levels deep)",
    )
    buffer_path = tmp_path / "buffer.db"
    result = run_crawl(
        tmp_path,
        crawl_settings(sdi_server, buffer_path),
        {"rounds": rounds},
        spider="BadResultsSpider",
    )
    figures = stored_figures(sdi_server, result_urls(good))
    row.add(figures)

    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] == "finished"
    assert "Traceback" not in result.log and " ERROR: " not in result.log, result.log[-3000:]
    assert figures.exactly_once, figures.describe()
    assert result.stats["sdi/items_delivered"] == good
    assert result.stats["sdi/items_invalid"] == rounds * len(BAD_RESULTS)
    assert result.stats["sdi/pending_at_close"] == 0
    with sqlite3.connect(buffer_path) as db:
        reasons = [
            reason for (reason,) in db.execute("SELECT reason FROM results WHERE state = 'invalid'")
        ]
    # every kind is kept as invalid with its reason, as many times as it was yielded
    expected = Counter({start: 0 for _, _, start in BAD_RESULTS})
    for _, _, start in BAD_RESULTS:
        expected[start] += rounds
    assert (
        Counter(
            next(start for _, _, start in BAD_RESULTS if reason.startswith(start))
            for reason in reasons
        )
        == expected
    )
