"""Group commit: many items' rows written in one short transaction on the reactor thread.

An item is passed on only when its row is committed, yet a commit per item would cost the crawl
most of its speed. The group is committed at the first loop turn that brings no new row, or
that brought several at once: items of a callback reach the pipelines CONCURRENT_ITEMS at a
time and all wait on this commit, so waiting longer would only idle the crawl. Items that come
one per turn (yielded from ``start()``) keep joining the group for up to GROUP_WINDOW.
One commit is under way at a time: on a blocking buffer's thread it takes a while, and the rows
arriving meanwhile form the next group.
A buffer that cannot write for now (a SQLite file another process keeps locked past the busy
timeout, a database server restarting or out of reach) is retried: the rows stay in memory and
the items keep waiting, so nothing is dropped. Any other failure (a
full disk, an I/O error) fails the group's items with one BufferWriteError, said once in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from scrapy.utils.asyncio import is_asyncio_available
from twisted.internet import defer
from twisted.python.failure import Failure

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
        commit: Callable[[list[Row]], Enqueued | defer.Deferred[Enqueued]],
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
        self._committing = False  # a commit is under way: the next group waits for it
        self._idle: list[defer.Deferred[None]] = []  # ``idle`` callers
        self.failed = False  # a write has failed: said once at ERROR, later ones at DEBUG
        self._waiting_told = False  # a WARNING said rows wait; an INFO says when they are stored

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
        """Commit what is queued now (also called at close); after the commit under way, if any."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        self._seen = 0
        if not self._rows or self._committing:
            self._tell_idle()
            return
        rows, waiters = self._rows[:MAX_GROUP], self._waiters[:MAX_GROUP]
        del self._rows[:MAX_GROUP], self._waiters[:MAX_GROUP]
        self._committing = True
        committed = defer.maybeDeferred(self._commit, rows)
        committed.addCallbacks(
            self._stored,
            self._not_stored,
            callbackArgs=(rows, waiters),
            errbackArgs=(rows, waiters),
        )

    def idle(self) -> defer.Deferred[None]:
        """Fires once every row queued is committed (or failed): what a close waits for."""
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        self._tell_idle()
        return d

    def _stored(self, stored: Enqueued, rows: list[Row], waiters: list[Any]) -> None:
        self._committing = False
        if self._waiting_told:
            self._waiting_told = False
            logger.info("SDI buffer %(where)s stores results again", {"where": self._where})
        for waiter, was_stored in zip(waiters, stored, strict=False):
            _settle(waiter, was_stored)
        if (
            self._on_commit is not None
        ):  # after the items are free: a failure there must not hold them
            self._on_commit(rows, stored)
        self._next()

    def _not_stored(self, failure: Failure, rows: list[Row], waiters: list[Any]) -> None:
        self._committing = False
        if failure.check(BufferLocked):
            # the buffer's own reason: SQLite's lock held by another process, a database server
            # restarting or out of reach (its URL's password masked by the backend)
            # said once per streak: a server out of reach for minutes is retried every LOCKED_RETRY
            logger.log(
                logging.DEBUG if self._waiting_told else logging.WARNING,
                "SDI buffer cannot store results now (%(error)s); %(n)d results wait and will be retried",
                {"error": failure.getErrorMessage(), "n": len(rows)},
            )
            self._waiting_told = True
            self._rows[:0], self._waiters[:0] = rows, waiters
            if self._call is not None:
                self._call.cancel()
            self._call = self._clock.call_later(LOCKED_RETRY, self.flush)
            return
        # disk full, corrupt file...: the items fail loudly
        self._fail(waiters, failure.value or Exception(failure.getErrorMessage()))
        self._next()

    def _next(self) -> None:
        """Rows that arrived during the commit go next, at the next turn."""
        if self._rows and self._call is None:
            self._call = self._clock.call_later(0, self.flush)
        self._tell_idle()

    def _tell_idle(self) -> None:
        if self._idle and not self._rows and not self._committing:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def _fail(self, waiters: list[Any], exc: BaseException) -> None:
        error = BufferWriteError(
            f"SDI buffer {self._where} cannot store results ({exc}); free disk space or fix the file, then run the crawl again"
        )
        logger.log(logging.DEBUG if self.failed else logging.ERROR, "%(error)s", {"error": error})
        self.failed = True
        for waiter in waiters:
            _settle(waiter, error)


def _settle(waiter: Any, outcome: bool | BaseException) -> None:
    if isinstance(waiter, defer.Deferred):
        if isinstance(outcome, BaseException):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)
    elif not waiter.done():  # an asyncio future whose item was cancelled is left alone
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
