"""One crawl process, driven line by line: the real SDIPipeline on a real buffer file, no spider.

    python -m tests.support.pipeline_worker SETTINGS_JSON

It opens ``SDIPipeline`` through its public hooks (``from_crawler``, ``open_spider``,
``process_item``, ``close_spider``) on Scrapy's asyncio reactor, prints ``ready``, then reads one
JSON command a line from stdin and answers each with one JSON line on stdout:

* ``{"op": "arrive", "urls": [...]}``: each URL becomes an item passed to ``process_item``, all
  at once as a callback's items are; answers how many were passed on, dropped, refused.
* ``{"op": "run", "seconds": s}``: let the delivery loop work for ``s`` seconds.
* ``{"op": "refresh"}``: wait for the batches in flight, load the API's filters again, go on:
  the filters then current apply to everything sent afterwards.
* ``{"op": "requeue"}``: put this crawler's rejected rows back to pending, as ``scrapy sdi requeue`` does.
* ``{"op": "close"}``: ``close_spider`` (the final drain); answers the closing stats, then exits.

A test may SIGKILL it at any moment: that is what it is for (tests/promises/test_state_machine.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from scrapy.utils.reactor import install_reactor

install_reactor("twisted.internet.asyncioreactor.AsyncioSelectorReactor")

from scrapy import Spider  # noqa: E402
from scrapy.exceptions import DropItem  # noqa: E402
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future  # noqa: E402
from scrapy.utils.test import get_crawler  # noqa: E402
from twisted.internet import defer, reactor, task, threads  # noqa: E402

from scrapy_sdi.pipeline import SDIPipeline  # noqa: E402


class WorkerSpider(Spider):
    name = "worker"


def _twisted(coro: Any) -> Any:
    """A coroutine that awaits Deferreds, awaited from this asyncio task."""
    return maybe_deferred_to_future(defer.Deferred.fromCoroutine(coro))


def _answer(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def _arrive(pipeline: SDIPipeline, urls: list[str]) -> dict[str, int]:
    async def one(url: str) -> str:
        try:
            await pipeline.process_item({"url": url, "description": "state machine"})
        except DropItem:
            return "dropped"
        return "passed"

    outcomes = await asyncio.gather(*(one(url) for url in urls))
    return {kind: outcomes.count(kind) for kind in ("passed", "dropped")}


async def _serve(pipeline: SDIPipeline) -> None:
    await pipeline.open_spider()
    _answer({"ready": True})
    while True:
        line = await maybe_deferred_to_future(threads.deferToThread(sys.stdin.readline))
        if not line:
            return
        command = json.loads(line)
        op = command["op"]
        if op == "arrive":
            _answer(await _arrive(pipeline, command["urls"]))
        elif op == "run":
            await maybe_deferred_to_future(
                task.deferLater(reactor, command["seconds"], lambda: None)
            )
            _answer({"ran": command["seconds"]})
        elif op == "refresh":
            assert pipeline.outbox is not None and pipeline.filters is not None
            await _twisted(pipeline.outbox.stop())
            await _twisted(pipeline.filters.load())
            pipeline.outbox.start()
            _answer({"refreshed": True})
        elif op == "requeue":
            assert pipeline.session.buffer is not None
            _answer(
                {
                    "requeued": pipeline.session.buffer.requeue(
                        "rejected", pipeline.settings.crawler_name
                    )
                }
            )
        elif op == "close":
            await pipeline.close_spider()
            _answer(
                {
                    key: value
                    for key, value in pipeline.stats.get_stats().items()
                    if key.startswith("sdi/")
                }
            )
            return


def main() -> None:
    settings = json.loads(sys.argv[1])
    crawler = get_crawler(WorkerSpider, settings)
    pipeline = SDIPipeline.from_crawler(crawler)
    done = deferred_from_coro(_serve(pipeline))
    done.addErrback(
        lambda failure: (
            _answer({"error": repr(failure.value)}),
            failure.printTraceback(sys.stderr),
        )
    )
    done.addBoth(lambda _: reactor.stop())
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
