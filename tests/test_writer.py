"""Group commit against a real SQLite file held locked by another connection."""

from __future__ import annotations

import logging
import sqlite3

import pytest_twisted
from twisted.internet import defer

from scrapy_sdi.buffer import BufferLocked, Row, SQLiteBuffer
from scrapy_sdi.writer import GroupWriter


def _awaitable(x):
    return x if isinstance(x, defer.Deferred) else defer.Deferred.fromFuture(x)


@pytest_twisted.ensureDeferred
async def test_a_lock_held_past_the_busy_timeout_is_retried_and_nothing_is_dropped(
    tmp_path, caplog
):
    path = tmp_path / "b.db"
    buffer = SQLiteBuffer(path, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing for longer than our busy timeout
    failures = []
    enqueue = buffer.enqueue

    def enqueue_then_release(rows, dedup, lease=None):
        try:
            return enqueue(rows, dedup, lease)
        except BufferLocked:  # the backend's typed error, not SQLite's text
            failures.append(len(rows))
            other.execute("COMMIT")  # the other writer finishes after our first attempt failed
            raise

    writer = GroupWriter(lambda rows: enqueue_then_release(rows, True), where=str(path))
    with caplog.at_level(logging.WARNING, logger="scrapy_sdi.writer"):
        waiting = [
            _awaitable(writer.add(Row(f"id{i}", "c", f"https://e.x/{i}", b"{}"))) for i in range(5)
        ]
        stored = await defer.gatherResults(waiting)
    assert failures == [5]
    assert stored == [True] * 5
    assert buffer.counts("c")["pending"] == 5
    assert "locked by another process; 5 results wait and will be retried" in caplog.text
    other.close()
    buffer.close()
