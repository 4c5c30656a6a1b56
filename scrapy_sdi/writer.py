"""Group commit: many items' rows written in one short transaction on the reactor thread.

An item is passed on only when its row is committed, yet a commit per item would cost the crawl
most of its speed (Scrapy hands a spider's items to the pipelines one loop turn apart, so "the
same turn" groups nothing): rows arriving within GROUP_WINDOW share one transaction instead.
A locked database (another process writing for longer than the busy timeout) is retried: the
rows stay in memory and the items keep waiting, so nothing is dropped.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING, Callable

from scrapy.utils.asyncio import CallLaterResult, call_later
from twisted.internet import defer

if TYPE_CHECKING:
    from scrapy_sdi.buffer import Buffer, Row

logger = logging.getLogger(__name__)

MAX_GROUP = 1000  # rows in one transaction at most
GROUP_WINDOW = 0.01  # seconds the first row of a group waits for others to join it
LOCKED_RETRY = 0.5  # seconds before a locked commit is tried again


class GroupWriter:
    """Collects rows and commits them together; each ``add`` fires once its row is durable."""

    def __init__(
        self,
        buffer: Buffer,
        *,
        dedup: bool,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.dedup = dedup
        self._on_commit = on_commit
        self._rows: list[Row] = []
        self._waiters: list[defer.Deferred[bool]] = []
        self._call: CallLaterResult | None = None

    def add(self, row: Row) -> defer.Deferred[bool]:
        """Queue a row; the Deferred fires with False when dedup skipped it, True when stored."""
        d: defer.Deferred[bool] = defer.Deferred()
        self._rows.append(row)
        self._waiters.append(d)
        if len(self._rows) >= MAX_GROUP:
            self.flush()
        elif self._call is None:
            self._call = call_later(GROUP_WINDOW, self.flush)
        return d

    def flush(self) -> None:
        """Commit what is queued now (also called at close)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if not self._rows:
            return
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        try:
            stored = self.buffer.enqueue(rows, self.dedup)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                self._fail(waiters, exc)
                return
            logger.warning("SDI buffer is locked by another process; %(n)d results wait and will be retried", {"n": len(rows)})
            self._rows[:0], self._waiters[:0] = rows, waiters
            self._call = call_later(LOCKED_RETRY, self.flush)
            return
        except Exception as exc:  # disk full, corrupt file...: the items fail loudly
            self._fail(waiters, exc)
            return
        if self._on_commit is not None:
            self._on_commit(sum(stored))
        for waiter, was_stored in zip(waiters, stored):
            waiter.callback(was_stored)

    @staticmethod
    def _fail(waiters: list[defer.Deferred[bool]], exc: Exception) -> None:
        logger.error("SDI buffer write failed for %(n)d results: %(error)s", {"n": len(waiters), "error": exc})
        for waiter in waiters:
            waiter.errback(exc)
