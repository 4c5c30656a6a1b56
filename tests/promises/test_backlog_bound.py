"""Promise: a crawl never has more than SDI_BUFFER_MAX_PENDING of its rows waiting for delivery.

The attack: the API is down, and listing pages arrive together, each handing the pipelines a
hundred items at once (CONCURRENT_ITEMS); then the API comes back and delivery frees room while
hundreds of items wait for it. The buffer file itself is watched: a trigger (the test's, on the
real file) records how many of the crawler's rows were pending or in flight after every insert.
"""

from __future__ import annotations

import subprocess
from collections import Counter

from tests.support.backlog import waiting_peak, watch_waiting_rows
from tests.support.crawl import FAST_RETRIES, crawl_command
from tests.support.scaleout import wait_for

LIMIT = 40
PAGES, PER_PAGE = 6, 100


def test_waiting_rows_never_exceed_the_limit_however_many_items_arrive_at_once(
    sdi_server, tmp_path
):
    buffer = tmp_path / "buffer.db"
    watch_waiting_rows(buffer)
    sdi_server.stop()  # the API is down as the pages arrive
    settings = {
        **sdi_server.settings,
        **FAST_RETRIES,
        "SDI_BUFFER_PATH": str(buffer),
        "SDI_BUFFER_MAX_PENDING": LIMIT,
        "SDI_BATCH_SIZE": 10,
        "SDI_CLOSE_TIMEOUT": 30,
    }
    cmd, env = crawl_command(
        tmp_path, settings, {"pages": PAGES, "per_page": PER_PAGE}, spider="ListingSpider"
    )
    crawl = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: waiting_peak(buffer) >= LIMIT, 60, "the limit to be reached")
        sdi_server.start()  # delivery frees room while hundreds of items wait for it
        log = crawl.communicate(timeout=120)[0]
    finally:
        crawl.kill()
    assert crawl.returncode == 0, log[-3000:]
    peak = waiting_peak(buffer)
    assert peak == LIMIT, f"{peak} rows waited at once with SDI_BUFFER_MAX_PENDING = {LIMIT}"
    stored = Counter(r["url"] for r in sdi_server.results())
    assert len(stored) == PAGES * PER_PAGE and max(stored.values()) == 1
