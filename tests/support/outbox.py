"""Driving an Outbox from a test: puts started as Scrapy starts ``process_item``, loop turns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.utils.defer import deferred_from_coro
from twisted.internet import defer, reactor, task

if TYPE_CHECKING:
    from scrapy_sdi.buffer import Row
    from scrapy_sdi.outbox import Outbox


def put_all(outbox: Outbox, rows: list[Row]) -> defer.Deferred[list[bool]]:
    """Each row put at once, as a callback's items reach the pipelines; fires with what was stored."""
    return defer.gatherResults(
        [deferred_from_coro(outbox.put(row)) for row in rows], consumeErrors=True
    )


async def turns(n: int = 2) -> None:
    """Let the event loop run ``n`` times: started puts reach the group writer, settled ones end."""
    for _ in range(n):
        await task.deferLater(reactor, 0, lambda: None)
