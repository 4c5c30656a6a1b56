"""Run the client's coroutines from plain blocking code (commands, scripts, notebooks).

The reactor runs in one daemon thread, started on first use; each call blocks its caller until
the coroutine finishes on that thread. Inside a running crawl, await the coroutines instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from twisted.internet import defer
from twisted.internet.threads import blockingCallFromThread

T = TypeVar("T")
_lock = threading.Lock()
_thread: threading.Thread | None = None


def _reactor() -> Any:
    global _thread
    from twisted.internet import reactor

    with _lock:
        if _thread is None and not reactor.running:
            _thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="scrapy_sdi-reactor",
                daemon=True,
            )
            _thread.start()
    return reactor


def run_blocking(func: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
    """Call ``func(*args, **kwargs)`` on the reactor thread and wait for its result."""

    def start() -> defer.Deferred[Any]:
        return defer.Deferred.fromCoroutine(func(*args, **kwargs))

    # the Deferred's result, once it fires: the coroutine's (mypy cannot infer it through
    # blockingCallFromThread's union of a Deferred-returning and a plain callable)
    return cast(T, blockingCallFromThread(_reactor(), start))
