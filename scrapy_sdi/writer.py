"""Group commit: many items' rows written in one short transaction on the reactor thread.

An item is passed on only when its row is committed, yet a commit per item would cost the crawl
most of its speed. The group is committed at the first loop turn that brings no new row, or
that brought several at once: items of a callback reach the pipelines CONCURRENT_ITEMS at a
time and all wait on this commit, so waiting longer would only idle the crawl. Items that come
one per turn (yielded from ``start()``) keep joining the group for up to GROUP_WINDOW.
A locked database (another process writing for longer than the busy timeout) is retried: the
rows stay in memory and the items keep waiting, so nothing is dropped. Any other failure (a
full disk, an I/O error) fails the group's items with one BufferWriteError, said once in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import is_asyncio_available
from twisted.internet import defer

from scrapy_sdi.buffer import BufferLocked, BufferWriteError
from scrapy_sdi.clock import Timers

if TYPE_CHECKING:
    from scrapy.utils.asyncio import CallLaterResult

    from scrapy_sdi.buffer import Enqueued, Row
    from scrapy_sdi.clock import ReactorTime

logger = logging.getLogger(__name__)

MAX_GROUP = 1000  # rows in one transaction at most
GROUP_WINDOW = 0.01  # seconds the first row of a group waits for others to join it
LOCKED_RETRY = 0.5  # seconds before a locked commit is tried again


class GroupWriter:
    """Collects rows and commits them together; each ``add`` fires once its row is durable.

    ``commit`` stores a group in one transaction (the outbox's: lease, then ``Buffer.enqueue``);
    ``on_commit`` is told of each commit once its items are free to go on.
    """

    def __init__(
        self,
        commit: Callable[[list[Row]], Enqueued],
        *,
        where: str,
        on_commit: Callable[[list[Row], Enqueued], None] | None = None,
        clock: ReactorTime | None = None,
    ) -> None:
        self._commit = commit
        self._where = where  # how the error names the buffer
        self._on_commit = on_commit
        self._clock = Timers(clock)
        self._rows: list[Row] = []
        self._waiters: list[Any] = []  # asyncio futures, or Deferreds on a non-asyncio reactor
        # what Scrapy's coroutines can await here, without a Deferred-to-future hop per item
        self._loop = asyncio.get_event_loop() if is_asyncio_available() else None
        self._call: CallLaterResult | None = None
        self._seen = 0  # rows of the group at the last turn
        self._opened = 0.0  # when the group's first row arrived
        self.failed = False  # a write has failed: said once at ERROR, later ones at DEBUG

    def add(self, row: Row) -> Awaitable[bool]:
        """Queue a row; the awaitable gives False when dedup skipped it, True when it is stored."""
        d = self._loop.create_future() if self._loop is not None else defer.Deferred()
        if not self._rows:
            self._opened = self._clock.seconds()
        self._rows.append(row)
        self._waiters.append(d)
        if len(self._rows) >= MAX_GROUP:
            self.flush()
        elif self._call is None:
            self._call = self._clock.call_later(0, self._turn)
        return d

    def _turn(self) -> None:
        """Once per loop turn while a group is open: commit, or let a trickle keep joining."""
        self._call = None
        arrived, self._seen = len(self._rows) - self._seen, len(self._rows)
        if arrived == 1 and self._clock.seconds() - self._opened < GROUP_WINDOW:
            self._call = self._clock.call_later(0, self._turn)
        else:
            self.flush()

    def flush(self) -> None:
        """Commit what is queued now (also called at close)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._seen = 0
        if not self._rows:
            return
        rows, waiters = self._rows, self._waiters
        self._rows, self._waiters = [], []
        try:
            stored = self._commit(rows)
        except BufferLocked:
            logger.warning(
                "SDI buffer is locked by another process; %(n)d results wait and will be retried",
                {"n": len(rows)},
            )
            self._rows[:0], self._waiters[:0] = rows, waiters
            self._call = self._clock.call_later(LOCKED_RETRY, self.flush)
            return
        except Exception as exc:  # disk full, corrupt file...: the items fail loudly
            self._fail(waiters, exc)
            return
        for waiter, was_stored in zip(waiters, stored, strict=False):
            _settle(waiter, was_stored)
        if (
            self._on_commit is not None
        ):  # after the items are free: a failure there must not hold them
            self._on_commit(rows, stored)

    def _fail(self, waiters: list[Any], exc: Exception) -> None:
        error = BufferWriteError(
            f"SDI buffer {self._where} cannot store results ({exc}); free disk space or fix the file, then run the crawl again"
        )
        logger.log(logging.DEBUG if self.failed else logging.ERROR, "%(error)s", {"error": error})
        self.failed = True
        for waiter in waiters:
            _settle(waiter, error)


def _settle(waiter: Any, outcome: bool | Exception) -> None:
    if isinstance(waiter, defer.Deferred):
        if isinstance(outcome, Exception):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)
    elif not waiter.done():  # an asyncio future whose item was cancelled is left alone
        if isinstance(outcome, Exception):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
