"""Leases between processes sharing one buffer file: a dead run's come back at once, a live run's never."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from scrapy_sdi.buffer import IN_FLIGHT, PENDING, Row, SQLiteBuffer
from tests.reliability.harness import (
    PIPELINE_OPEN_LINE,
    buffered_urls,
    crawl_settings,
    result_urls,
    stored_figures,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


def test_a_live_runs_batch_in_flight_is_never_taken_by_another_run_closing_on_the_file(
    sdi_server_factory, crawls, tmp_path
):
    """Two crawls of one crawler share a buffer; one has a batch in flight on a hung API while the
    other closes, waiting for that crawler's rows and looking for dead processes' leases. It must
    leave the batch to its live owner: taking it back would send it a second time."""
    server = sdi_server_factory()
    buffer_path = tmp_path / "buffer.db"
    settings = crawl_settings(
        server, buffer_path, SDI_CRAWLER_NAME="files", SDI_TIMEOUT=60, SDI_LEASE_TIMEOUT=120
    )
    n = 40
    live = crawls.start(tmp_path / "live", settings, {"n": n}, gates=1)
    other = crawls.start(
        tmp_path / "other", {**settings, "SDI_CLOSE_TIMEOUT": 3}, {"n": 0}, gates=1
    )
    for crawl in (live, other):
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE), crawl.tail()
    wait_until(lambda: server.stats()["accepted"] >= n // 2, "the live run's first half delivered")
    server.pause()  # the live run's next batch hangs for as long as the other run lives
    live.open_gate()
    second_half = result_urls(n // 2, n // 2)
    wait_until(
        lambda: buffered_urls(buffer_path, ("in_flight",)) & second_half,
        "the live run's batch in flight",
    )
    other.open_gate()
    closed = other.finish()
    server.kill()  # back without the hung batch: its live owner sends it again
    server.start()
    finished = live.finish()

    assert closed.returncode == 0 and finished.returncode == 0, (
        closed.log[-3000:] + finished.log[-3000:]
    )
    assert closed.stats["sdi/batches_sent"] == 0, "the other run sent a batch of the live one"
    figures = stored_figures(server, result_urls(n))
    assert figures.exactly_once, figures.describe()


#: A process that leases every pending row of crawler "c" to the owner named in argv, says so, and
#: lives until it is killed or its stdin closes (then it closes the buffer, as a run ends).
HOLDER = """
import sys
from scrapy_sdi.buffer import SQLiteBuffer
buffer = SQLiteBuffer(sys.argv[1])
buffer.hold_owner(sys.argv[2])
print(len(buffer.claim("c", sys.argv[2], 1000, 120.0)), flush=True)
sys.stdin.read()
buffer.close()
"""


def _holder(path, owner: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), owner],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and int(proc.stdout.readline()) > 0, "the holder leased nothing"
    return proc


def _buffer_with_rows(path, n: int) -> SQLiteBuffer:
    buffer = SQLiteBuffer(path)
    buffer.enqueue(
        [Row(f"id-{i}", "c", f"https://example.com/{i}", b"{}") for i in range(n)], dedup=False
    )
    return buffer


def test_the_leases_of_a_killed_owner_come_back_at_once_and_its_lock_file_goes(tmp_path):
    path = tmp_path / "buffer.db"
    buffer = _buffer_with_rows(path, 5)
    holder = _holder(path, "dead-owner")
    owners = tmp_path / "buffer.db.owners"
    assert stat.S_IMODE(owners.stat().st_mode) == 0o700
    assert stat.S_IMODE((owners / "dead-owner.lock").stat().st_mode) == 0o600
    assert buffer.reclaim_dead() == 0  # alive: its rows stay leased
    assert buffer.counts("c")[IN_FLIGHT] == 5
    holder.kill()
    holder.wait()
    assert buffer.reclaim_dead() == 5
    assert buffer.counts("c")[PENDING] == 5
    assert not (owners / "dead-owner.lock").exists()
    assert [row.attempts for row in buffer.claim("c", "me", 10, 120.0)] == [
        0
    ] * 5  # no attempt counted
    buffer.close()


def test_an_owner_that_ends_cleanly_leaves_no_lock_file_behind(tmp_path):
    path = tmp_path / "buffer.db"
    _buffer_with_rows(path, 1).close()
    holder = _holder(path, "clean-owner")
    holder.communicate("")
    assert holder.returncode == 0
    assert os.listdir(tmp_path / "buffer.db.owners") == []


def test_rows_of_an_owner_without_a_lock_file_wait_for_their_lease(tmp_path):
    """An older scrapy_sdi holds no lock: nothing proves it dead, so its lease must run out first."""
    buffer = _buffer_with_rows(tmp_path / "buffer.db", 3)
    buffer.claim("c", "older-version", 10, 120.0)
    buffer.hold_owner("me")
    assert buffer.reclaim_dead() == 0
    assert buffer.counts("c")[IN_FLIGHT] == 3
    buffer.close()
