"""Run the client's coroutines from plain blocking code (commands, scripts, notebooks).

The reactor runs in one daemon thread, started on first use; each call blocks its caller until
the coroutine finishes on that thread. Inside a running crawl, await the coroutines instead.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
                target=reactor.run, kwargs={"installSignalHandlers": False}, name="scrapy_sdi-reactor", daemon=True
            )
            _thread.start()
    return reactor


def run_blocking(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Call ``func(*args, **kwargs)`` on the reactor thread and wait for its result."""
    reactor = _reactor()
    return blockingCallFromThread(reactor, lambda: defer.Deferred.fromCoroutine(func(*args, **kwargs)))
