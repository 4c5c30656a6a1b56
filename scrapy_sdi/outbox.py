"""The Outbox: the one way a result goes from the crawl to the API, and what the status line reads.

It owns the sequence the pipeline used to spread over callbacks: back-pressure lets a row in, the
group writer commits it with others, and each commit asks delivery how many rows it can take at
once, stores those already leased (``Buffer.enqueue`` returns them) and hands them over, so they
are sent from memory without a claim. ``scrapy sdi flush`` drives the same object, with nothing
to put. Every buffer call goes through the Delivery's ``BufferCalls``, so a buffer that
blocks does so on its own thread while the crawl goes on (its items wait). The timing (linger, tick, backoff, the group window) runs on the clock injected in
the Delivery it is given (``Delivery(..., clock=task.Clock())`` in tests).
"""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING

from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer

from scrapy_sdi.buffer import PENDING, BufferWriteError
from scrapy_sdi.clock import Timers
from scrapy_sdi.writer import GroupWriter

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_sdi.buffer import Enqueued, Row
    from scrapy_sdi.delivery import Delivery


class _FrozenHeap:
    """``gc.freeze()`` while an outbox runs, unless the host froze the heap itself.

    Items wait for their group's commit, so their objects outlive the young generations and each
    crawl ran ~25 full collections per 100,000 results, each scanning everything alive before it
    started (Scrapy, Twisted, the crawler): ~9 us of CPU per result. Frozen, those objects are
    left out of the scans until the last outbox closes; cyclic garbage among them waits till then.
    """

    def __init__(self) -> None:
        self.holders = 0  # outboxes running

    def hold(self) -> bool:
        """Freeze (first holder), or join the freeze; False: the host's own freeze stands."""
        if self.holders == 0:
            if gc.get_freeze_count():
                return False
            gc.freeze()
        self.holders += 1
        return True

    def release(self) -> None:
        self.holders -= 1
        if self.holders == 0:
            gc.unfreeze()


_heap = _FrozenHeap()


class Outbox:
    """Rows in (``put``), batches out to the API; ``close`` delivers what it can in a deadline."""

    def __init__(
        self, delivery: Delivery, *, dedup: bool, stats: StatsCollector | None = None
    ) -> None:
        self.buffer = delivery.buffer
        self.calls = delivery.calls
        self._delivery = delivery
        self._dedup = dedup
        self._stats = stats
        self._holds_heap = False
        self._writer = GroupWriter(
            self._commit,
            where=self.buffer.location,
            on_commit=self._committed,
            clock=delivery.clock,
        )

    @property
    def backlog(self) -> int:
        """Rows of this crawler waiting for delivery (an estimate kept without queries)."""
        return self._delivery.backlog

    @property
    def state(self) -> str:
        """The API as the status line shows it: ok, retrying since ..., auth failing."""
        return self._delivery.state

    @property
    def last_error(self) -> str | None:
        """The API's last failure, for a summary when rows are left."""
        return self._delivery.last_error

    def start(self) -> defer.Deferred[None]:
        """Take this run's place among the buffer's users and start sending what waits."""
        if not self._holds_heap:
            self._holds_heap = _heap.hold()
        return self._delivery.start()

    async def put(self, row: Row) -> bool:
        """Store ``row``; True once it is durable, False when dedup skipped it (its URL is buffered).

        A pending row waits its turn while SDI_BUFFER_MAX_PENDING rows wait for delivery. Filtered
        and invalid rows are kept for inspection by a durable buffer only (never sent).
        Raises BufferWriteError when the buffer cannot store it (said once in the log).
        """
        if row.state != PENDING:
            return await self._writer.add(row) if self.buffer.durable else True
        await self._admit()
        try:
            return await self._writer.add(row)
        except BufferWriteError:
            self._delivery.backpressure.counted()  # never buffered: its room is free again
            raise

    async def _admit(self) -> None:
        """Back-pressure: wait, in turn, while SDI_BUFFER_MAX_PENDING rows wait for delivery."""
        entry = self._delivery.backpressure.enter()
        if entry is not None:
            self._inc("sdi/backpressure_waits", 1)
            await maybe_deferred_to_future(entry)

    def _commit(self, rows: list[Row]) -> defer.Deferred[Enqueued]:
        """One group's transaction: as many rows as delivery can send at once are stored leased."""
        lease = self._delivery.lease(len(rows))
        return self.calls.call(self.buffer.enqueue, rows, self._dedup, lease)

    def _committed(self, rows: list[Row], enqueued: Enqueued) -> None:
        """Count a group commit's results (per group: a stats call per item shows in the crawl's
        speed) and hand them to delivery; filtered and invalid rows are kept, never sent."""
        pending = [row.state == PENDING for row in rows]
        buffered = sum(
            1
            for was_pending, stored in zip(pending, enqueued, strict=True)
            if was_pending and stored
        )
        self._inc("sdi/items_buffered", buffered, always=True)
        # only pending and filtered rows are skipped
        self._inc("sdi/items_deduplicated", len(enqueued) - sum(enqueued))
        self._delivery.wake(buffered, enqueued.leased)
        # every pending row came through back-pressure: stored or skipped, it is counted now
        self._delivery.backpressure.counted(sum(pending))

    async def close(self, timeout: float) -> int:
        """Commit what waits, deliver until no row buffered before now is left or ``timeout``
        passes, and stop; return how many rows are left (the next run or flush sends them)."""
        clock = Timers(self._delivery.clock)
        deadline = clock.seconds() + timeout
        try:
            self._writer.flush()
            # items wait for their commit, so at close nothing is queued unless the buffer stalls;
            # the drain below says what is left once its deadline passes
            with contextlib.suppress(TimeoutError):
                await clock.within(self._writer.idle(), timeout)
            left = await self._delivery.drain(max(0.0, deadline - clock.seconds()))
            await self._delivery.stop()
        finally:
            if self._holds_heap:
                self._holds_heap = False
                _heap.release()
        return left

    async def stop(self) -> None:
        """Stop claiming and wait for the batches in flight (a flush's Ctrl-C)."""
        await self._delivery.stop()

    def _inc(self, key: str, count: int, *, always: bool = False) -> None:
        if self._stats is not None and (count or always):
            self._stats.inc_value(key, count)
