"""The clock the outbox's timing runs on: linger, tick, backoff, the group window.

The outbox takes a Twisted ``IReactorTime`` so that tests drive it with
``twisted.internet.task.Clock`` instead of patching ``time``. Without one, it runs on whatever
Scrapy runs on (asyncio reactor, plain Twisted reactor, no reactor) through Scrapy's ``call_later``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from scrapy.utils.asyncio import CallLaterResult, call_later
from twisted.internet import defer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall


T = TypeVar("T")


class ReactorTime(Protocol):
    """What the outbox uses of Twisted's ``IReactorTime`` (every reactor, and ``task.Clock``)."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], /, *args: Any, **kw: Any
    ) -> IDelayedCall: ...


class Timers:
    """``seconds`` and ``call_later`` on an injected clock, or on Scrapy's loop (monotonic time).

    Every timer comes back as Scrapy's ``CallLaterResult``, whose ``cancel`` may be called after
    the call was made, as the loops do.
    """

    def __init__(self, clock: ReactorTime | None = None) -> None:
        self._clock = clock

    def seconds(self) -> float:
        return self._clock.seconds() if self._clock is not None else time.monotonic()

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any) -> CallLaterResult:
        if self._clock is None:
            return call_later(delay, func, *args)
        return CallLaterResult.from_twisted(self._clock.callLater(delay, func, *args))  # type: ignore[arg-type]  # an IDelayedCall

    def within(self, d: defer.Deferred[T], seconds: float) -> defer.Deferred[T]:
        """``d``'s outcome, or TimeoutError once ``seconds`` pass first; ``d`` itself is left to
        fire later, unwatched (a buffer call cannot be interrupted, only no longer waited for)."""
        if d.called or seconds <= 0:
            if not d.called:
                d.addErrback(lambda _: None)
                return defer.fail(TimeoutError())
            return d
        outer: defer.Deferred[T] = defer.Deferred()

        def expire() -> None:
            if not outer.called:
                outer.errback(TimeoutError())

        timer = self.call_later(seconds, expire)

        def passed(result: Any) -> None:
            if not outer.called:
                timer.cancel()
                outer.callback(result)  # a Failure goes on as one

        d.addBoth(passed)
        return outer
