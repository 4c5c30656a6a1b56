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
    assert "(database is locked); 5 results wait and will be retried" in caplog.text
    other.close()
    buffer.close()


@pytest_twisted.ensureDeferred
async def test_a_buffer_that_cannot_write_for_a_while_is_said_once_then_once_again_when_it_can(
    tmp_path, caplog
):
    """A database server out of reach for seconds is retried every LOCKED_RETRY: one WARNING for
    the streak (not one per retry), and one INFO when the rows are stored again."""
    path = tmp_path / "b.db"
    buffer = SQLiteBuffer(path, busy_timeout=0.01)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    failures = []
    enqueue = buffer.enqueue

    def enqueue_until_the_third_failure(rows, dedup, lease=None):
        try:
            return enqueue(rows, dedup, lease)
        except BufferLocked:
            failures.append(len(rows))
            if len(failures) == 3:
                other.execute("COMMIT")
            raise

    writer = GroupWriter(lambda rows: enqueue_until_the_third_failure(rows, True), where=str(path))
    with caplog.at_level(logging.DEBUG, logger="scrapy_sdi.writer"):
        waiting = [
            _awaitable(writer.add(Row(f"id{i}", "c", f"https://e.x/{i}", b"{}"))) for i in range(3)
        ]
        stored = await defer.gatherResults(waiting)
    assert failures == [3, 3, 3]
    assert stored == [True] * 3
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "scrapy_sdi.writer"]
    assert [level for level, _ in said] == ["WARNING", "DEBUG", "DEBUG", "INFO"], said
    assert "3 results wait and will be retried" in said[0][1]
    assert said[-1][1] == f"SDI buffer {path} stores results again"
    other.close()
    buffer.close()
