"""Promise: a bad item is refused with a counted reason (``sdi/items_invalid``) and kept as
``invalid``; the crawl goes on, every good result is delivered, and nothing invalid is ever
submitted — not by the crawl, and not by a requeue of the invalid rows and a flush after it.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from tests.reliability.harness import crawl_settings, result_urls, stored_figures
from tests.support.commands import sdi
from tests.support.crawl import run_crawl
from tests.support.spiders import BAD_ITEMS

ROUNDS = 2  # each round: a good result, then each bad kind followed by a good one


def _invalid_reasons(buffer_path: Path) -> Counter[str]:
    """Invalid rows by the kind of reason they keep (the start BAD_ITEMS gives for each kind)."""
    with sqlite3.connect(buffer_path) as db:
        reasons = [
            reason for (reason,) in db.execute("SELECT reason FROM results WHERE state = 'invalid'")
        ]
    starts = {start for _, _, start in BAD_ITEMS}
    return Counter(next((s for s in starts if reason.startswith(s)), reason) for reason in reasons)


def _assert_only_the_good_ones_were_submitted(server: Any, good: int) -> None:
    figures = stored_figures(server, result_urls(good))
    assert figures.exactly_once, figures.describe()
    stats = server.stats()
    posts = {
        label
        for path, labels in stats["requests"].items()
        if path.endswith("/crawler-results")
        for label in labels
    }
    assert stats["rejected"] == 0, stats  # nothing the API had to refuse was ever sent...
    assert posts == {"200"}, stats  # ...nor any batch it could not read


def test_bad_items_of_every_kind_are_refused_counted_kept_and_never_submitted(sdi_server, tmp_path):
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(sdi_server, buffer_path)
    result = run_crawl(
        tmp_path, settings, {"rounds": ROUNDS, "kinds": "items"}, spider="BadResultsSpider"
    )
    good = ROUNDS * (len(BAD_ITEMS) + 1)

    assert result.returncode == 0, result.log[-3000:]
    assert result.stats["finish_reason"] == "finished"
    assert "Traceback" not in result.log and " ERROR: " not in result.log, result.log[-3000:]
    assert result.stats["sdi/items_invalid"] == ROUNDS * len(BAD_ITEMS)
    assert result.stats["sdi/items_delivered"] == good and result.stats["sdi/pending_at_close"] == 0
    expected = Counter()
    for _, _, start in BAD_ITEMS:
        expected[start] += ROUNDS
    assert _invalid_reasons(buffer_path) == expected
    _assert_only_the_good_ones_were_submitted(sdi_server, good)

    # invalid rows put back: each is mapped again, stays invalid, and a flush submits none of them
    command_settings = {**settings, "SDI_BUFFER_PATH": str(buffer_path)}
    requeue = sdi(
        tmp_path,
        "requeue",
        "--state",
        "invalid",
        "--json",
        settings=command_settings,
        secret=sdi_server.password,
    )
    flush = sdi(tmp_path, "flush", settings=command_settings, secret=sdi_server.password)
    assert flush.returncode == 0, flush.stdout + flush.stderr
    _assert_only_the_good_ones_were_submitted(sdi_server, good)
    assert _invalid_reasons(buffer_path) == expected
    assert requeue.returncode == 1 and json.loads(requeue.stdout)["still_invalid"] == ROUNDS * len(
        BAD_ITEMS
    )
