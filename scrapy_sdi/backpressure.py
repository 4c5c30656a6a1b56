"""Back-pressure: a crawl never has more than SDI_BUFFER_MAX_PENDING rows waiting for delivery.

An item counts from the moment it is let in, not from its row's commit: a response's items reach
the pipelines CONCURRENT_ITEMS at a time and wait together in the group writer, so counting only
committed rows let a whole page past a nearly full buffer. Items that find no room wait in turn,
and each row of room delivery frees lets one in: waking them all at once put 520 rows in a buffer
limited to 40.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from twisted.internet import defer


class Backpressure:
    """Lets items in while rows waiting for delivery, and items let in but not yet counted, stay
    under ``limit``."""

    def __init__(self, limit: int, waiting: Callable[[], int]) -> None:
        self.limit = limit
        self._waiting = waiting  # rows counted as waiting for delivery (committed)
        self._admitted = 0  # items let in whose rows ``waiting`` does not count yet
        self._queue: deque[defer.Deferred[None]] = deque()

    def enter(self) -> defer.Deferred[None] | None:
        """None when the item may go on now; else a Deferred that fires when it may, in turn."""
        if not self._queue and self._room() > 0:
            self._admitted += 1
            return None
        entry: defer.Deferred[None] = defer.Deferred()
        self._queue.append(entry)
        return entry

    def counted(self, n: int = 1) -> None:
        """``n`` items let in have their rows counted by ``waiting`` now, or never will (dropped)."""
        self._admitted -= n
        self.release()

    def release(self) -> None:
        """Room may have appeared: let waiting items in, oldest first, one per row of room."""
        room = self._room()
        while self._queue and room > 0:
            entry = self._queue.popleft()
            if entry.called:  # cancelled: the crawl is shutting down
                continue
            self._admitted += 1
            room -= 1
            entry.callback(None)

    def _room(self) -> int:
        return self.limit - self._waiting() - self._admitted
