"""The delivery loop: claim batches from the buffer, post them, record each result's outcome.

It never drops a row on a transient failure: a failed batch goes back to ``pending`` and the whole
loop backs off (full jitter, or at least the server's Retry-After), because when the API is
struggling every other batch would fail the same way. A 400 is bisected to isolate the bad
results, a 413 is split, and only a single result the API refuses is ever marked ``rejected``.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import defer

from scrapy_sdi.backpressure import Backpressure
from scrapy_sdi.buffer import BufferFault, Lease
from scrapy_sdi.buffer_calls import BufferCalls
from scrapy_sdi.clock import Timers
from scrapy_sdi.errors import (
    SDIAuthError,
    SDIBadRequest,
    SDIBatchTooLarge,
    SDIError,
    SDIRateLimited,
)
from scrapy_sdi.filters import count_filtered
from scrapy_sdi.mapping import encode_batch
from scrapy_sdi.sizing import RequestLimits

if TYPE_CHECKING:
    from collections.abc import Sequence

    from scrapy.statscollectors import StatsCollector
    from scrapy.utils.asyncio import CallLaterResult

    from scrapy_sdi.buffer import Buffer, Claimed, Row
    from scrapy_sdi.client import Outcome, SDIClient
    from scrapy_sdi.clock import ReactorTime
    from scrapy_sdi.filter_source import FilterSource
    from scrapy_sdi.filters import Filter, FilterSet
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)

LINGER = 0.5  # seconds a partial batch may wait for more rows before it is sent anyway
TICK = 1.0  # seconds between looks at the buffer for rows that became ready
#: Seconds past the close deadline the last count of what is left may take: a buffer on a server
#: answers it in milliseconds; a stalled one is then said not to have answered.
LAST_COUNT_GRACE = 0.25
THROTTLE_QUIET = 10.0  # seconds without a request to wait after which the API no longer throttles


@dataclass(slots=True)
class _Batch:
    """One claimed batch as three lists, not one ``Claimed`` object per row.

    Objects alive while a batch is in flight outlive the young GC generations: a thousand per
    batch made Python run a full collection (~50 ms of the reactor) about every 30 batches.
    """

    ids: list[str]
    payloads: list[bytes]
    attempts: list[int]

    @classmethod
    def empty(cls) -> _Batch:
        return cls([], [], [])

    @classmethod
    def of(cls, rows: Sequence[tuple[Any, ...]]) -> _Batch:
        """A batch from rows of (id, payload, attempts, ...): ``Claimed`` rows, or a batch's own."""
        if not rows:
            return cls.empty()
        ids, payloads, attempts, *_ = zip(*rows, strict=True)
        return cls(list(ids), list(payloads), list(attempts))

    def __len__(self) -> int:
        return len(self.ids)

    def part(self, start: int, stop: int | None = None) -> _Batch:
        return _Batch(self.ids[start:stop], self.payloads[start:stop], self.attempts[start:stop])

    def extend(self, rows: Sequence[Row]) -> None:
        self.ids.extend(row.id for row in rows)
        self.payloads.extend(row.payload for row in rows)
        self.attempts.extend(0 for _ in rows)

    def pick(self, keep: Callable[[str], bool]) -> _Batch:
        """The rows whose id ``keep`` accepts, in order."""
        return _Batch.of(
            [
                row
                for row in zip(self.ids, self.payloads, self.attempts, strict=True)
                if keep(row[0])
            ]
        )


def _unsent(batch: _Batch, part: _Batch, todo: list[_Batch]) -> _Batch:
    """The rows of ``batch`` in ``part`` and the parts still ``todo``, in order."""
    unsent = {id_ for left in (part, *todo) for id_ in left.ids}
    return batch.pick(unsent.__contains__)


class _Throttling:
    """The API asking to wait (429, or 503 with Retry-After) is said once as it starts and once as
    it ends: under steady throttling, a WARNING and an INFO per answer drowned the log."""

    def __init__(self, clock: Timers) -> None:
        self._clock = clock
        self.since: float | None = None
        self.answers = 0
        self._last = 0.0

    def hit(self, wait: float) -> None:
        now = self._clock.seconds()
        if self.since is None:
            self.since, self.answers = now, 0
            logger.warning(
                "SDI: the API is throttling delivery (it asks to wait %(wait).1fs); waiting as it asks until it stops",
                {"wait": max(0.0, wait)},
            )
        self.answers += 1
        self._last = now

    def calm(self, *, stopped: bool = False) -> None:
        """A batch was accepted (or delivery ``stopped``): after THROTTLE_QUIET without a request
        to wait, or at the stop, say once that the spell is over."""
        if self.since is None or not (
            stopped or self._clock.seconds() - self._last >= THROTTLE_QUIET
        ):
            return
        logger.info(
            "SDI: throttling %(how)s: %(n)d answers asked to wait over %(seconds).0fs",
            {
                "how": "lasted until delivery stopped" if stopped else "is over",
                "n": self.answers,
                "seconds": self._last - self.since,
            },
        )
        self.since = None


class Delivery:
    """Keeps up to SDI_CONCURRENT_REQUESTS batches of one crawler's rows in flight."""

    def __init__(
        self,
        buffer: Buffer,
        client: SDIClient | None,
        settings: SDISettings,
        *,
        crawler_name: str | None = None,
        stats: StatsCollector | None = None,
        audit: Callable[[dict[str, Any]], None] | None = None,
        filters: FilterSource | None = None,
        clock: ReactorTime | None = None,
        calls: BufferCalls | None = None,
    ) -> None:
        self.buffer = buffer
        #: Every buffer call goes through it: off the loop thread when the buffer blocks.
        self.calls = calls if calls is not None else BufferCalls(buffer)
        #: Linger, tick, backoff and the close deadline run on it (``twisted.internet.task.Clock``
        #: in tests; None: Scrapy's loop); the Outbox's group commit runs on the same one.
        self.clock = clock
        self._clock = Timers(clock)
        #: The filters applied to every row as it is sent (None: filtering is off).
        self.filters = filters
        self.client = client
        self.settings = settings
        self.crawler = crawler_name or settings.crawler_name
        self.owner = uuid.uuid4().hex  # lease owner id of this run
        self.stats = stats
        self._audit = audit
        self._active: set[defer.Deferred[None]] = set()
        self._waiters: list[defer.Deferred[None]] = []
        #: Rows of this crawler waiting for delivery (an estimate kept in step without queries).
        self.backlog = 0
        #: Lets items in while fewer than SDI_BUFFER_MAX_PENDING rows wait (the pipeline asks it).
        self.backpressure = Backpressure(settings.buffer_max_pending, lambda: self.backlog)
        self._in_flight_rows = 0  # claimed or handed over, not yet answered
        #: Rows the buffer stored already leased to this run (``lease``), waiting for a full batch.
        self._handed = _Batch.empty()
        self._handed_keys: set[str | None] = set()  # the keys of the filters the handed rows passed
        self._failures = 0  # consecutive failed attempts: drives the backoff
        self._batch_size = settings.batch_size  # lowered when the API answers 413 with max_results
        #: What 413s without max_results taught: requests are cut to stay under it.
        self._limits = RequestLimits(len(encode_batch(self.crawler, [])))
        self._paused_until = 0.0  # on the clock's seconds
        self._draining = False
        self._timer: CallLaterResult | None = None
        self._timer_due = 0.0
        self._running = False
        self._filling = False  # a fill (claims, then batches started) is under way
        self._refill = False  # a pump asked for while it was: fill again as it ends
        self._buffer_failing = False  # a claim failed: said once, and once when claims work again
        self._next_reclaim = 0.0  # monotonic time of the next look for dead processes' leases
        #: Since when the API has been failing (None: it answers), for the status line.
        self.failing_since: float | None = None
        self._failure_told = (
            False  # a WARNING said the API fails; an INFO says when it answers again
        )
        self._throttling = _Throttling(self._clock)
        self.last_error: str | None = None
        self.state = "ok"

    # -- control --------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Take this run's place among the buffer's users, then start the loop; fires once started."""
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self._hold_lease_owner()
        self.backlog = await self.calls.call(self.buffer.outstanding, self.crawler, float("inf"))
        self._running = True
        self._schedule(0)

    async def _hold_lease_owner(self) -> None:
        """Prove this run alive to the others sharing the buffer, and take back dead runs' rows."""
        await self.calls.call(self.buffer.hold_owner, self.owner)
        await self._reclaim_dead(force=True)

    async def _reclaim_dead(self, *, force: bool = False) -> int:
        """Rows leased to dead processes back to pending; at most once a TICK unless ``force``d,
        since it runs when a claim finds nothing, and an idle loop claims every TICK."""
        now = self._clock.seconds()
        if not force and now < self._next_reclaim:
            return 0
        self._next_reclaim = now + TICK
        n = await self.calls.call(self.buffer.reclaim_dead)
        if n:
            logger.info(
                "SDI: took back %(n)d results a process that died had in flight; they are sent again",
                {"n": n},
            )
        return n

    def lease(self, n: int) -> Lease | None:
        """Let the next ``n`` rows be stored already claimed by this run, and sent from memory.

        A claim reads back and rewrites every row the crawl has just written. While delivery
        keeps up (no older row waits in the buffer, no backoff holds), rows skip it, as many as
        fit in flight plus the next batch, which waits in memory for the first request slot
        free: without it, every row arriving while the slots are busy went pending, and so
        (oldest first) did every row after it until a claim caught up. The rest are claimed
        later, oldest first, as usual.
        """
        if not self._running or self._waiting() > 0 or self._paused_until > self._clock.seconds():
            return None
        room = (self.settings.concurrent_requests + 1) * self._batch_size - self._in_flight_rows
        if room <= 0:
            return None
        return Lease(self.owner, time.time() + self.settings.lease_timeout, min(n, room))

    def wake(self, added: int, handed: Sequence[Row] = ()) -> None:
        """``added`` rows were buffered, ``handed`` of them leased by ``lease``: send full batches now,
        the rest within LINGER."""
        self.backlog += added
        if handed:
            self._handed.extend(handed)
            self._handed_keys.update(row.filters_version for row in handed)
            self._in_flight_rows += len(handed)
        self._pump()

    async def drain(self, timeout: float) -> int:
        """Deliver until no row buffered before now is left, or ``timeout`` passes; return how many are left.

        The deadline holds even when a blocking buffer stops answering: the call cannot be
        interrupted, so the drain stops waiting for it, and its rows stay pending or leased.
        """
        self._draining = True
        if not self._running:  # `scrapy sdi flush` drains without a start
            await self._hold_lease_owner()
        self._running = True
        deadline = self._clock.seconds() + timeout
        cutoff = time.time()
        while True:
            self._pump()
            if not self._active:
                try:
                    if await self._outstanding(cutoff, deadline) == 0:
                        return 0
                except TimeoutError:
                    break
            remaining = deadline - self._clock.seconds()
            if remaining <= 0:
                break
            wait = remaining
            if not self._active:  # a backoff, or rows leased by another process: look again soon
                pause = self._paused_until - self._clock.seconds()
                wait = min(remaining, pause + 0.05 if pause > 0 else TICK)
            await self._progress(wait)
        self._abandon()
        await self.stop()
        try:
            # a deadline the API (or another process's leases) used up still leaves the buffer
            # a moment to count what is left: it is not the buffer that failed to answer
            last = max(deadline, self._clock.seconds() + LAST_COUNT_GRACE)
            return await self._outstanding(cutoff, last)
        except TimeoutError:
            left = max(self.backlog, 0)
            logger.warning(
                "SDI buffer %(where)s did not answer before SDI_CLOSE_TIMEOUT; about %(n)d "
                "results are left pending or leased, for the next run",
                {"where": self.buffer.location, "n": left},
            )
            return left

    async def _outstanding(self, cutoff: float, deadline: float) -> int:
        """Rows buffered before ``cutoff`` still to deliver; TimeoutError once ``deadline`` passes."""
        asked = self.calls.call(self.buffer.outstanding, self.crawler, cutoff)
        return await self._clock.within(asked, deadline - self._clock.seconds())

    def _abandon(self) -> None:
        """At the close deadline, give up the requests still unanswered: waiting for them could
        take SDI_TIMEOUT more. Their rows stay pending, resent by the next run with the same ids
        (answered ``duplicate`` if the API stored them meanwhile)."""
        self._running = False  # a batch given up must not make room for another
        for d in list(self._active):
            d.cancel()

    async def stop(self) -> None:
        """Stop claiming and wait for the batches already in flight."""
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._active:
            await defer.DeferredList(list(self._active), consumeErrors=True)
        self._give_back_handed("not sent before the spider closed")
        self._throttling.calm(stopped=True)

    def _give_back_handed(self, why: str) -> None:
        """Rows held in memory go back to the buffer as pending, for a later claim (or run)."""
        if self._handed:
            self._write(self.buffer.release, self._handed.ids, why, 0)
            self._in_flight_rows -= len(self._handed)
            self._handed = _Batch.empty()
            self._handed_keys.clear()

    # -- the loop -------------------------------------------------------------------------

    def _schedule(self, delay: float) -> None:
        """Pump in ``delay`` seconds, unless a pump is already due sooner."""
        if not self._running:
            return
        due = self._clock.seconds() + delay
        if self._timer is not None:
            if self._timer_due <= due:
                return
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._clock.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._pump(partial=True)

    def _waiting(self) -> int:
        return self.backlog - self._in_flight_rows

    def _pump(self, *, partial: bool = False) -> None:
        """Start batches while there is room, rows are ready and no backoff holds.

        Only full batches go at once; a partial one waits up to LINGER for more rows (a timer
        tick, or a drain, sends it), since every request costs the crawl CPU time.
        """
        self.backpressure.release()  # rows may have been delivered since
        if not self._running:
            return
        pause = self._paused_until - self._clock.seconds()
        if pause > 0:
            self._schedule(pause)
            return
        if self._filling:  # a claim is under way (on a blocking buffer's thread): it fills again
            self._refill = True
            return
        self._filling = True
        filling = defer.Deferred.fromCoroutine(self._fill(partial or self._draining))
        filling.addErrback(self._fill_crashed)

    async def _fill(self, partial: bool) -> None:
        """Start batches while there is room: from memory, else claimed (awaited: on a blocking
        buffer the loop thread goes on meanwhile). With a fast buffer, all of it runs at once."""
        try:
            while True:
                self._refill = False
                while self._running and len(self._active) < self.settings.concurrent_requests:
                    if self._paused_until > self._clock.seconds():
                        break
                    batch = self._from_memory(partial) or await self._claim(partial)
                    if not batch:
                        break
                    if not self._running:  # stopped while the claim ran: the rows go back
                        self._in_flight_rows -= len(batch)
                        self._write(
                            self.buffer.release, batch.ids, "not sent before the spider closed", 0
                        )
                        break
                    d = defer.Deferred.fromCoroutine(self._deliver(batch))
                    self._active.add(d)
                    d.addErrback(self._crashed, batch)
                    d.addBoth(self._finished, d, len(batch))
                if not self._refill:
                    break
        finally:
            self._filling = False
        if self._buffer_failing:
            self._buffer_failing = False
            logger.info("SDI buffer %(where)s answers again", {"where": self.buffer.location})
        pause = self._paused_until - self._clock.seconds()
        self._schedule(
            pause if pause > 0 else LINGER if self._waiting() > 0 or self._handed else TICK
        )

    def _fill_crashed(self, failure: Any) -> None:
        """A claim that failed (a locked or unreachable buffer): tried again at every tick, said
        once per streak; the rows wait in the buffer, nothing is dropped."""
        logger.log(
            logging.DEBUG if self._buffer_failing else logging.WARNING,
            "SDI buffer %(where)s: claiming results failed (%(error)s); trying again every %(tick)gs",
            {"where": self.buffer.location, "error": failure.value, "tick": TICK},
        )
        self._buffer_failing = True
        self._schedule(TICK)

    def _write(self, method: Any, *args: Any) -> None:
        """A buffer write nobody waits for (rows given back): calls run in order, so the next
        claim sees it; a failure leaves the rows leased until their lease ends, said once here."""

        def failed(failure: Any) -> None:
            logger.warning(
                "SDI buffer %(where)s: could not give back results (%(error)s); "
                "they are sent again once their lease ends",
                {"where": self.buffer.location, "error": failure.value},
            )

        self.calls.call(method, *args).addErrback(failed)

    def _from_memory(self, partial: bool) -> _Batch | None:
        """A batch of the handed rows (already counted in flight).

        The pipeline matched them as it stored them; if other filters are in force since, they go
        back to pending, and their claim matches them again.
        """
        size = self._batch_size
        if len(self._handed) < size and not (partial and self._handed):
            return None
        current = self._in_force()
        if current is not None and self._handed_keys != {current.key}:
            self._give_back_handed("other filters came into force before they were sent")
            return None
        batch, self._handed = self._handed.part(0, size), self._handed.part(size)
        if not self._handed:
            self._handed_keys.clear()
        return batch

    async def _claim(self, partial: bool) -> _Batch | None:
        if not partial and self._waiting() < self._batch_size:
            return None
        while True:  # a claim the filters emptied is no reason to wait for the next tick
            rows = await self._claim_rows()
            # nothing ready: maybe rows a dead process leased
            if not rows and await self._reclaim_dead():
                rows = await self._claim_rows()
            self._in_flight_rows += len(rows)
            passed, settling = await self._screen(rows)
            if passed or not rows or settling:  # a settling claim pumps again as it ends
                return _Batch.of(passed)

    def _in_force(self) -> FilterSet | None:
        """The filters that can exclude a row now, or None (off, none known, or an empty list)."""
        current = self.filters.in_force() if self.filters is not None else None
        return current if current is not None and current.count else None

    async def _screen(self, rows: list[Claimed]) -> tuple[list[Claimed], bool]:
        """The claimed rows the filters in force let through, and whether others are settling.

        A row is decoded and matched only if it passed other filters than these, or none (buffered
        while none were known): while the filters stay the same, a row costs one comparison. The
        excluded rows are never sent; with a client, :meth:`_settle` first asks whether an
        earlier attempt stored them.
        """
        current = self._in_force()
        if current is None:
            return rows, False
        key = current.key
        excluded: dict[str, Filter] = {}
        for row in rows:
            if row.filters_version != key and (matched := _match(current, row.payload)) is not None:
                excluded[row.id] = matched
        if not excluded:
            return rows, False
        if self.client is None:
            await self._exclude(excluded)
            self._in_flight_rows -= len(excluded)
        else:
            settling = _Batch.of([row for row in rows if row.id in excluded])
            d = defer.Deferred.fromCoroutine(self._settle(settling, excluded))
            self._active.add(d)
            d.addErrback(self._crashed, settling)
            d.addBoth(self._finished, d, len(settling))
        return [row for row in rows if row.id not in excluded], self.client is not None

    async def _settle(self, batch: _Batch, excluded: dict[str, Filter]) -> None:
        """Rows the filters exclude now, that an earlier attempt may have stored (its answer lost,
        its process killed): those the API has are delivered, the others filtered, never sent.

        Kept as filtered, a stored row would contradict the API's count; sent, an unstored one
        would break the filters. One status lookup per claim, and only for rows buffered under
        other filters than those in force.
        """
        assert self.client is not None
        urls = dict(zip(batch.ids, map(_url_of, batch.payloads), strict=True))
        try:
            found = await self.client.status_by_urls(sorted({u for u in urls.values() if u}))
        except SDIError as exc:
            self._failed(batch, exc)
            return
        except defer.CancelledError:
            self._release(batch, "not settled before SDI_CLOSE_TIMEOUT")
            return
        stored = {
            r.get("url")
            for r in found
            if r.get("crawler") == self.crawler and r.get("status_code") is not None
        }
        delivered = {id_: "duplicate" for id_, url in urls.items() if url in stored}
        if delivered:
            await self.calls.call(self.buffer.ack, delivered, {})
            self.backlog -= len(delivered)
            self._inc("sdi/items_delivered", len(delivered))
            self._inc("sdi/items_duplicate", len(delivered))
        await self._exclude({id_: f for id_, f in excluded.items() if id_ not in delivered})

    async def _exclude(self, excluded: dict[str, Filter]) -> None:
        """Keep excluded rows as filtered, with the filter's description, and count them as the pipeline does."""
        if not excluded:
            return
        await self.calls.call(
            self.buffer.mark_filtered,
            {id_: matched.describe() for id_, matched in excluded.items()},
        )
        self.backlog -= len(excluded)
        if self.stats is not None:
            count_filtered(self.stats, excluded.values())
        logger.debug(
            "SDI: %(n)d buffered results excluded by the filters in force; never sent",
            {"n": len(excluded)},
        )

    def _claim_rows(self) -> defer.Deferred[list[Claimed]]:
        return self.calls.call(
            self.buffer.claim,
            self.crawler,
            self.owner,
            self._batch_size,
            self.settings.lease_timeout,
            ignore_ready_at=self._draining,
        )

    def _finished(self, _: Any, d: defer.Deferred[None], size: int) -> None:
        self._active.discard(d)
        self._in_flight_rows -= size
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._pump()

    def _crashed(self, failure: Any, batch: _Batch) -> None:
        """A bug, not an API failure: keep the rows, say so once, and back off.

        A batch given up at the close deadline while it waited for the buffer (cancelled) is
        no bug: its rows stay as the buffer has them, leased or pending, for the next run.
        """
        if failure.check(defer.CancelledError):
            return
        if failure.check(BufferFault):  # the buffer could not record outcomes: no bug either
            logger.log(
                logging.DEBUG if self._buffer_failing else logging.WARNING,
                "SDI buffer %(where)s could not record a batch's outcomes (%(error)s); its %(n)d "
                "rows are sent again (answered duplicate if stored)",
                {"where": self.buffer.location, "error": failure.value, "n": len(batch)},
            )
            self._buffer_failing = True
        else:
            logger.error(
                "SDI delivery failed unexpectedly; %(n)d rows stay pending",
                {"n": len(batch)},
                exc_info=failure.value,
            )
        self._write(self.buffer.release, batch.ids, f"internal error: {failure.value!r}"[:200], 0)
        self._backoff(None)

    def _progress(self, timeout: float) -> defer.Deferred[None]:
        """Fires when a batch finishes, or after ``timeout`` seconds, whichever is first."""
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)

        def expire() -> None:
            if not d.called:
                self._waiters.remove(d)
                d.callback(None)

        call = self._clock.call_later(timeout, expire)

        def cancel_timer(result: Any) -> Any:
            call.cancel()
            return result

        return d.addBoth(cancel_timer)

    # -- one batch ------------------------------------------------------------------------

    async def _deliver(self, batch: _Batch) -> None:
        """Post a claimed batch; results the API refuses even alone are reported once per batch."""
        if self.client is None:
            await self._pretend(batch)
            return
        refused = await self._send(batch)
        if refused:
            logger.warning(
                "SDI: %(n)d of a batch of %(size)d results rejected, refused by the API even alone "
                "(first: %(reason)s); kept as rejected with the reason",
                {"n": len(refused), "size": len(batch), "reason": refused[0]},
            )

    async def _send(self, batch: _Batch) -> list[str]:
        """Post ``batch`` in requests the API takes; return why each result refused alone was.

        A request refused as a whole (400, 413) is split, down to the single result the API
        refuses; a transient failure puts every row not yet answered back to pending.
        """
        refused: list[str] = []
        todo = [batch]  # parts still to post, the next one last
        while todo:
            part = todo.pop()
            fits = self._limits.fit(part.payloads)
            if fits < len(part):
                part, rest = part.part(0, fits), part.part(fits)
                todo.append(rest)
            try:
                outcomes = await self._post(part)
            except (SDIBatchTooLarge, SDIBadRequest) as exc:
                if len(part) == 1:
                    refused.append(await self._refuse(part.ids[0], exc))
                else:
                    todo.extend(reversed(self._halves(part, exc)))
            except SDIError as exc:
                self._failed(_unsent(batch, part, todo), exc)
                break
            except defer.CancelledError:
                self._release(_unsent(batch, part, todo), "not answered before SDI_CLOSE_TIMEOUT")
                break
            else:
                await self._apply(part, outcomes)
        return refused

    async def _post(self, batch: _Batch) -> list[Outcome]:
        assert self.client is not None
        body = encode_batch(self.crawler, batch.payloads)
        started = time.monotonic()
        self._inc("sdi/batches_sent")
        try:
            outcomes = await self.client.submit(body)
        except SDIError as exc:
            self._record(batch, started, error=exc)
            self._inc("sdi/batches_failed")
            if isinstance(exc, SDIBatchTooLarge):
                self._learn(len(batch), len(body), exc)
            raise
        self._record(batch, started, outcomes=outcomes)
        self._limits.accepted(len(batch), len(body))
        return outcomes

    async def _pretend(self, batch: _Batch) -> None:
        """A dry run (no client): count what would be sent, never as sent or delivered, and let the
        rows go so they are not left pending in the memory buffer."""
        size = len(encode_batch(self.crawler, batch.payloads))
        logger.debug(
            "SDI dry run: would send %(n)d results (%(bytes)d bytes)",
            {"n": len(batch), "bytes": size},
        )
        self._inc("sdi/dry_run/batches")
        self._inc("sdi/dry_run/items", len(batch))
        await self.calls.call(self.buffer.ack, dict.fromkeys(batch.ids, "accepted"), {})
        self.backlog -= len(batch)

    def _learn(self, results: int, body_bytes: int, exc: SDIBatchTooLarge) -> None:
        """Remember what a 413 says, so later requests are not refused the same way."""
        learned = self._limits.learned
        self._limits.refused(results, body_bytes, exc.max_results)
        if not learned and self._limits.learned:
            logger.info(
                "SDI: the API refused %(n)d results in %(bytes)d bytes as too large; "
                "requests now carry at most %(bounds)s",
                {"n": results, "bytes": body_bytes, "bounds": self._limits.describe()},
            )

    def _halves(self, batch: _Batch, exc: SDIBatchTooLarge | SDIBadRequest) -> list[_Batch]:
        """The parts a refused batch is sent again in: halves, or ``max_results`` at a time."""
        size = (len(batch) + 1) // 2
        if isinstance(exc, SDIBatchTooLarge) and exc.max_results and exc.max_results < len(batch):
            size = max(1, exc.max_results)
            if size < self._batch_size:
                logger.info(
                    "SDI: the API takes at most %(n)d results per batch; sending batches of %(n)d",
                    {"n": size},
                )
                self._batch_size = size
        return [batch.part(start, start + size) for start in range(0, len(batch), size)]

    async def _refuse(self, id_: str, exc: SDIBatchTooLarge | SDIBadRequest) -> str:
        """A result the API refuses even alone is kept as rejected, never resent; returns why."""
        reason = (
            "too large: the API refuses this result even alone"
            if isinstance(exc, SDIBatchTooLarge)
            else f"bad request: {exc}"
        )[:500]
        await self.calls.call(self.buffer.ack, {}, {id_: reason})
        self.backlog -= 1
        self._inc("sdi/items_rejected")
        logger.debug("SDI result %(id)s rejected: %(reason)s", {"id": id_, "reason": reason})
        return reason

    async def _apply(self, batch: _Batch, outcomes: Sequence[Outcome]) -> None:
        sent = set(batch.ids)
        delivered: dict[str, str] = {}
        rejected: dict[str, str | None] = {}
        for outcome in outcomes:
            if outcome.id not in sent:
                continue  # an id we never sent: nothing of ours to record
            if outcome.status == "rejected":
                rejected[outcome.id] = outcome.reason or "rejected by the API"
            else:
                delivered[outcome.id] = outcome.status
        answered = len(delivered) + len(rejected)
        missing = _Batch.empty()
        if answered < len(batch):
            missing = batch.pick(lambda id_: id_ not in delivered and id_ not in rejected)
        await self.calls.call(self.buffer.ack, delivered, rejected)
        self.backlog -= answered
        if missing:
            self._release(missing, "missing from the API's answer")
        duplicates = sum(1 for status in delivered.values() if status == "duplicate")
        self._inc("sdi/items_delivered", len(delivered))
        self._inc("sdi/items_duplicate", duplicates)
        self._inc("sdi/items_rejected", len(rejected))
        self._failures = 0
        if self.failing_since is not None:
            self.failing_since = None
            self._set_state("ok")
            if self._failure_told:
                self._failure_told = False
                logger.info("SDI: the API answers again; delivery resumed")
        self._throttling.calm()
        logger.debug(
            "SDI batch of %(n)d: %(ok)d delivered, %(rej)d rejected, %(miss)d to resend",
            {"n": len(batch), "ok": len(delivered), "rej": len(rejected), "miss": len(missing)},
        )

    def _failed(self, batch: _Batch, exc: SDIError) -> None:
        """Keep every row; back off the whole loop. Said once per streak, throttling once per spell."""
        self._inc("sdi/retries", len(batch))
        self._release(batch, str(exc)[:500])
        throttled = isinstance(exc, SDIRateLimited)
        self._backoff(exc.retry_after if isinstance(exc, SDIRateLimited) else None)
        level = logging.ERROR if isinstance(exc, SDIAuthError) else logging.DEBUG
        if throttled:
            self._throttling.hit(self._paused_until - self._clock.seconds())
        elif not self._failure_told:
            level = max(level, logging.WARNING)  # the first failure of a streak is worth a line
            self._failure_told = True
        if self.failing_since is None:
            self.failing_since = time.time()
        self.last_error = str(exc)
        if isinstance(exc, SDIAuthError):
            self._set_state("auth failing")
        else:
            self._set_state(
                "retrying since " + time.strftime("%H:%M:%S", time.localtime(self.failing_since))
            )
        logger.log(
            level,
            "SDI batch of %(n)d not delivered (%(error)s); retrying in %(delay).1fs",
            {
                "n": len(batch),
                "error": exc,
                "delay": max(0.0, self._paused_until - self._clock.seconds()),
            },
        )

    def _release(self, batch: _Batch, error: str) -> None:
        """Back to pending; rows that used up SDI_RETRY_TIMES tries rest for SDI_UNLOCK_DELAY."""
        tries = self.settings.retry_times + 1
        resting = [
            id_
            for id_, attempts in zip(batch.ids, batch.attempts, strict=True)
            if (attempts + 1) % tries == 0
        ]
        at_once = [
            id_
            for id_, attempts in zip(batch.ids, batch.attempts, strict=True)
            if (attempts + 1) % tries != 0
        ]
        if at_once:
            self._write(self.buffer.release, at_once, error, 0)
        if resting:
            self._write(self.buffer.release, resting, error, self.settings.unlock_delay)

    def _backoff(self, retry_after: float | None) -> None:
        self._failures += 1
        cap = min(
            self.settings.retry_backoff_max,
            self.settings.retry_backoff_base * 2 ** (self._failures - 1),
        )
        delay = random.uniform(0, cap)
        if retry_after is not None:
            delay = max(delay, retry_after)
        self._paused_until = self._clock.seconds() + delay
        # a pause may outlast their lease
        self._give_back_handed("held back while delivery backs off")

    def _record(
        self,
        batch: _Batch,
        started: float,
        *,
        outcomes: Sequence[Outcome] = (),
        error: SDIError | None = None,
    ) -> None:
        if self._audit is None:
            return
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        self._audit(
            {
                "crawler": self.crawler,
                "batch_size": len(batch),
                "status": 200 if error is None else error.status,
                "latency_ms": round((time.monotonic() - started) * 1000, 1),
                "outcomes": counts,
                "error": None if error is None else str(error),
            }
        )

    def _set_state(self, state: str) -> None:
        """The API's state as the status line shows it: ok, retrying since ..., auth failing."""
        self.state = state
        if self.stats is not None:
            self.stats.set_value("sdi/api_state", state)

    def _inc(self, key: str, count: int = 1) -> None:
        if self.stats is not None and count:
            self.stats.inc_value(key, count)


def _match(filters: FilterSet, payload: bytes) -> Filter | None:
    """The filter that excludes a buffered result, from its encoded JSON (what would be sent)."""
    try:
        result = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(result, dict):
        return None
    url, filename = result.get("url"), result.get("filename")
    return filters.match(
        url if isinstance(url, str) else "", filename if isinstance(filename, str) else ""
    )


def _url_of(payload: bytes) -> str | None:
    """The URL of a buffered result, from its encoded JSON."""
    try:
        url = orjson.loads(payload).get("url")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return url if isinstance(url, str) else None
