"""Buffer calls that never block the crawl's loop: inline for a fast buffer, on a thread for a blocking one.

A buffer declares itself ``blocking`` when a call may wait on something outside the process (a
database server over the network). Its calls then run on one worker thread of their own, one at
a time and in the order made (a connection is not thread-safe), and each result comes back on the
loop thread: the reactor's (asyncio or plain Twisted), or the asyncio loop Scrapy runs without a
reactor. The methods the buffer names in ``side_lane`` (PostgreSQL's acks) run on a second worker
thread, so that a group commit of new results never queues behind them. The others (SQLite,
memory) run inline and answer with an already fired Deferred: a thread hop per call was measured
no faster for SQLite, so their path stays as it was.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

from scrapy_sdi.buffer import BufferFault

if TYPE_CHECKING:
    from scrapy_sdi.buffer import Buffer

logger = logging.getLogger(__name__)

T = TypeVar("T")
_Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "defer.Deferred[Any]"]


class BufferCalls:
    """Runs a buffer's methods for the code on the loop thread; ``call`` returns a Deferred."""

    def __init__(self, buffer: Buffer, *, worker: _Worker | None = None) -> None:
        self.buffer = buffer
        #: The buffer's own word: its calls may wait on something outside the process.
        self.blocking = bool(buffer.blocking)
        self._worker = (worker or _Worker()) if self.blocking else None
        self._side_names = frozenset(buffer.side_lane) if self.blocking else frozenset()
        # the backend's side-lane methods (acks) on a thread of their own: storing results
        # never queues behind them
        self._side = _Worker(name="scrapy_sdi-buffer-side") if self._side_names else None
        self._closed: defer.Deferred[None] | None = None

    @classmethod
    def open(cls, factory: Callable[[], Buffer], *, blocking: bool) -> defer.Deferred[BufferCalls]:
        """Build the buffer (``factory``: open a file, connect to a server) where its calls will
        run: on the worker thread when its class says ``blocking``, so connecting blocks no loop."""
        if not blocking:
            try:
                return defer.succeed(cls(factory()))
            except Exception:
                return defer.fail()
        worker = _Worker()

        def opened(buffer: Buffer) -> BufferCalls:
            return cls(buffer, worker=worker)

        def failed(failure: Failure) -> Failure:
            worker.stop()
            return failure

        return worker.run(factory).addCallbacks(opened, failed)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        """``fn(*args, **kwargs)`` (a method of the buffer, or a function using it), its result or error as a Deferred.

        Inline for a non-blocking buffer; else queued for the worker thread, after every call made
        before it. Called on the loop thread; the Deferred fires there.
        """
        if self._worker is None:
            try:
                return defer.succeed(fn(*args, **kwargs))
            except Exception:
                return defer.fail()
        if self._closed is not None:
            return defer.fail(BufferFault(f"SDI buffer {self.buffer.location} is closed"))
        if self._side is not None and self._on_side(fn):
            return self._side.run(fn, *args, **kwargs)
        return self._worker.run(fn, *args, **kwargs)

    def _on_side(self, fn: Callable[..., Any]) -> bool:
        """Whether ``fn`` is one of the buffer's own methods it named in ``side_lane``."""
        return getattr(fn, "__self__", None) is self.buffer and (
            getattr(fn, "__name__", "") in self._side_names
        )

    def close(self) -> defer.Deferred[None]:
        """Close the buffer after the calls already made; fires once it is closed.

        The worker thread ends then. A call stuck in a driver cannot be interrupted: a caller
        with a deadline stops waiting for this Deferred, and the daemon thread ends with the process.
        """
        if self._closed is not None:
            return self._closed
        if self._worker is None:
            self._closed = defer.succeed(None)
            try:
                self.buffer.close()
            except Exception:
                self._closed = defer.fail()
            return self._closed
        worker = self._worker

        def close_buffer(_: Any = None) -> defer.Deferred[None]:
            closing = worker.run(self.buffer.close)
            worker.stop()
            return closing

        if self._side is None:
            self._closed = close_buffer()
        else:  # the side lane's calls end first: close() closes every thread's connection
            drained = self._side.run(_nothing)
            self._side.stop()
            self._closed = drained.addBoth(close_buffer)
        return self._closed

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread, once a call started it (None for a non-blocking buffer)."""
        return self._worker.thread if self._worker is not None else None


class _Worker:
    """One daemon thread running calls in the order given; each outcome fires on the loop thread."""

    def __init__(self, name: str = "scrapy_sdi-buffer") -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self._name = name
        self._to_loop: Callable[..., Any] | None = None

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
        d: defer.Deferred[T] = defer.Deferred()
        if self.thread is None:  # started on the loop thread, whose scheduler it learns now
            self._to_loop = _loop_scheduler()
            # a fixed name: a buffer's location may be a URL with credentials
            self.thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self.thread.start()
        self._jobs.put((fn, args, kwargs, d))
        return d

    def stop(self) -> None:
        """End the thread after the calls already given."""
        self._jobs.put(None)

    def _work(self) -> None:
        assert self._to_loop is not None
        while (job := self._jobs.get()) is not None:
            fn, args, kwargs, d = job
            outcome: Any
            try:
                outcome = fn(*args, **kwargs)
            except BaseException:
                outcome = Failure()
            try:
                self._to_loop(_settle, d, outcome)
            except RuntimeError:  # the loop is closed: the process is ending, nobody waits
                return


def _nothing() -> None:
    """A call that only waits for the ones queued before it."""


def run_in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred[T]:
    """``fn(*args, **kwargs)`` on a thread of its own, its result or error as a Deferred fired on
    the loop thread; the thread ends with the call. For CPU-heavy work the loop must not wait on
    (compiling a refreshed filter list): the GIL still passes the loop its turn every switch
    interval. Called on the loop thread, in any of the three ways Scrapy runs."""
    worker = _Worker(name="scrapy_sdi-worker")
    d = worker.run(fn, *args, **kwargs)
    worker.stop()
    return d


def _settle(d: defer.Deferred[Any], outcome: Any) -> None:
    """On the loop thread: a Deferred given up meanwhile (a close deadline) ignores the outcome."""
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)


def _loop_scheduler() -> Callable[..., Any]:
    """How a thread hands a call to the loop thread: the reactor's ``callFromThread``, or without
    a reactor, the running asyncio loop's ``call_soon_threadsafe``. Asked on the loop thread."""
    from scrapy.utils.reactor import is_reactor_installed

    if is_reactor_installed():
        from twisted.internet import reactor

        return reactor.callFromThread  # type: ignore[attr-defined]
    import asyncio

    return asyncio.get_event_loop().call_soon_threadsafe
