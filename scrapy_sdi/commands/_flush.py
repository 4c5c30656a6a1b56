"""The ``flush`` action: deliver what earlier crawls left pending, without crawling.

Delivery runs as in a crawl, on the reactor thread (:func:`scrapy_sdi.blocking.run_blocking`),
one crawler after the other. Ctrl-C stops claiming and waits for the batches in flight, so their
rows end delivered, rejected or pending again; a second Ctrl-C quits at once, and the rows still
in flight keep their lease until the next flush or crawl on the buffer, which takes them back at
once (this process is dead by then). Nothing is ever marked delivered that the API did not accept.
The API's filters are loaded as a crawl loads them (the API, else the buffer's cache) and applied
to every row before it is sent: rows buffered while none were known, or under other filters, may
be excluded now.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from scrapy.settings import Settings
from scrapy.statscollectors import StatsCollector
from twisted.internet import defer

from scrapy_sdi.blocking import run_blocking
from scrapy_sdi.buffer_calls import BufferCalls
from scrapy_sdi.commands._common import Action, CommandError, Context
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.filter_source import FilterSource
from scrapy_sdi.outbox import Outbox

if TYPE_CHECKING:
    import argparse

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.client import SDIClient
    from scrapy_sdi.settings import SDISettings

DEFAULT_TIMEOUT = 600.0


def _flush_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--crawler", help="only this crawler's rows (default: every crawler with rows pending)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up after this long; undelivered rows stay pending (default {DEFAULT_TIMEOUT:g})",
    )


class Progress(StatsCollector):
    """Delivery's stats, as in a crawl; rows delivered or rejected also move a bar on a terminal."""

    def __init__(self, total: int, *, bar: bool) -> None:
        super().__init__(SimpleNamespace(settings=Settings({"STATS_DUMP": False})))  # type: ignore[arg-type]
        self.total = total
        self._bar = None
        if bar:
            try:
                from tqdm import tqdm
            except ImportError:  # only the bar is lost
                pass
            else:
                self._bar = tqdm(total=total, unit="row", desc="flush", file=sys.stderr, **_width())

    def inc_value(self, key: str, count: int = 1, start: int = 0, spider: Any = None) -> None:
        super().inc_value(key, count, start)
        if self._bar is not None and key in (
            "sdi/items_delivered",
            "sdi/items_rejected",
            "sdi/items_filtered",
        ):
            self._bar.update(count)

    def write(self, line: str) -> None:
        """A line on stderr that does not break the bar."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _width() -> dict[str, Any]:
    """Follow the terminal's width, unless it reports none (a bare pty, where tqdm would hide the bar): 80x24."""
    try:
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        columns = 0
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 80, "nrows": 24}


class _LogHandler(logging.Handler):
    """scrapy_sdi's warnings (an API failing, say) as plain lines beside the bar."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.write(f"{record.levelname}: {record.getMessage()}")


class Flusher:
    """Drains crawler after crawler through an Outbox each, as a crawl's close does, on the
    reactor thread; ``interrupt`` stops it cleanly."""

    def __init__(
        self,
        buffer: Buffer,
        client: SDIClient,
        settings: SDISettings,
        crawlers: list[str],
        progress: Progress,
        filters: FilterSource,
    ) -> None:
        self.buffer, self.client, self.settings = buffer, client, settings
        self.crawlers, self.progress, self.filters = crawlers, progress, filters
        self.interrupted = False
        #: The API's last failure, for the summary when rows are left.
        self.last_error: str | None = None
        self._outbox: Outbox | None = None
        self._drain: defer.Deferred[int] | None = None

    async def run(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for crawler in self.crawlers:
            remaining = deadline - time.monotonic()
            if self.interrupted or remaining <= 0:
                return
            delivery = Delivery(
                self.buffer,
                self.client,
                self.settings,
                crawler_name=crawler,
                stats=self.progress,
                filters=self.filters,
                calls=self.filters.calls,
            )
            self._outbox = Outbox(delivery, dedup=self.settings.dedup, stats=self.progress)
            self._drain = defer.Deferred.fromCoroutine(self._outbox.close(remaining))
            try:
                await self._drain
            except defer.CancelledError:
                return
            finally:
                self.last_error = self._outbox.last_error or self.last_error

    async def interrupt(self) -> None:
        """Stop claiming, let the batches in flight finish, then end the drain."""
        self.interrupted = True
        if self._outbox is not None:
            await self._outbox.stop()
        # Nothing is in flight now, so the drain can only be waiting for its next look: end it.
        if self._drain is not None and not self._drain.called:
            self._drain.cancel()

    async def left(self) -> dict[str, int]:
        """Rows of each crawler still pending or in flight (read on the reactor thread)."""
        calls = self.filters.calls
        return {
            crawler: await calls.call(_waiting, self.buffer, crawler) for crawler in self.crawlers
        }


async def _load_filters(
    settings: SDISettings, buffer: Buffer, client: SDIClient, stats: Progress
) -> FilterSource:
    """The filters as a crawl loads them (the API, else the buffer's cache), kept fresh while flushing."""
    filters = FilterSource(settings, BufferCalls(buffer), client, stats=stats)
    await filters.load()
    filters.start()
    return filters


def _waiting(buffer: Buffer, crawler: str) -> int:
    counts = buffer.counts(crawler)
    return counts["pending"] + counts["in_flight"]


def _flush(ctx: Context) -> int:
    opts = ctx.opts
    settings = ctx.sdi_settings()
    if settings.dry_run:
        raise CommandError(
            "SDI_DRY_RUN: is on; flush would mark rows delivered without sending them, so it refuses"
        )
    if opts.timeout <= 0:
        raise CommandError("--timeout: must be more than 0 seconds")
    buffer = ctx.existing_buffer(settings)
    crawlers = [opts.crawler] if opts.crawler else sorted(buffer.crawlers_with_pending())
    total = sum(_waiting(buffer, c) for c in crawlers)
    if total == 0:
        buffer.close()
        return _report(ctx, Progress(0, bar=False), {c: 0 for c in crawlers}, interrupted=False)
    progress = Progress(total, bar=sys.stderr.isatty() and not ctx.json)
    handler = _LogHandler(progress)
    logger = logging.getLogger("scrapy_sdi")
    if not ctx.settings.getbool("LOG_ENABLED") and not getattr(opts, "nolog", False):
        logger.addHandler(handler)  # with -L or --logfile, Scrapy's own logging shows them
    client = ctx.client(settings)
    filters = run_blocking(_load_filters, settings, buffer, client, progress)
    flusher = Flusher(buffer, client, settings, crawlers, progress, filters)
    left = {} if filters.required_but_missing else _run(flusher, progress, opts.timeout)
    if left is None:  # the second Ctrl-C: the reactor thread may be mid-write, so touch nothing
        progress.close()
        ctx.error(
            "quit with batches in flight; their rows stay leased until the next flush or crawl on this buffer takes them back"
        )
        return 1
    run_blocking(_close, filters, client, buffer)
    logger.removeHandler(handler)
    progress.close()
    if filters.required_but_missing:
        raise CommandError(f"SDI_FILTERS_REQUIRED: {filters.unavailable}; nothing was sent")
    if flusher.last_error and sum(left.values()):
        ctx.error(f"last delivery error: {flusher.last_error}")
    return _report(ctx, progress, left, interrupted=flusher.interrupted)


def _run(flusher: Flusher, progress: Progress, timeout: float) -> dict[str, int] | None:
    """Drain, finishing the batches in flight on a first Ctrl-C; the rows left, or None after a second."""
    try:
        try:
            run_blocking(flusher.run, timeout)
        except KeyboardInterrupt:
            progress.write(
                f"Interrupted: waiting up to {flusher.settings.timeout:g}s for the batches in flight. "
                "Ctrl-C again quits now; the next flush or crawl then takes their rows back."
            )
            run_blocking(flusher.interrupt)
        return run_blocking(flusher.left)
    except KeyboardInterrupt:
        return None


async def _close(filters: FilterSource, client: SDIClient, buffer: Buffer) -> None:
    await filters.close()
    await client.close()
    await filters.calls.close()


def _report(ctx: Context, progress: Progress, left: dict[str, int], *, interrupted: bool) -> int:
    delivered = progress.get_value("sdi/items_delivered", 0)
    duplicates = progress.get_value("sdi/items_duplicate", 0)
    rejected = progress.get_value("sdi/items_rejected", 0)
    filtered = progress.get_value("sdi/items_filtered", 0)
    remaining = sum(left.values())
    if ctx.json:
        ctx.print_json(
            {
                "delivered": delivered,
                "duplicates": duplicates,
                "rejected": rejected,
                "filtered": filtered,
                "left": left,
                "interrupted": interrupted,
            }
        )
    else:
        line = (
            f"flush: {delivered} delivered ({duplicates} already known to the API), {rejected} rejected, "
            f"{filtered} excluded by the filters, {remaining} left pending"
        )
        print(line + (" (interrupted)" if interrupted else ""))
        if rejected:
            print("see them with `scrapy sdi export --state rejected`", file=sys.stderr)
    return 0 if remaining == 0 else 1


FLUSH = Action(
    "flush",
    "deliver the rows earlier crawls left pending, without crawling (Ctrl-C finishes the batches in flight, twice quits)",
    _flush_arguments,
    _flush,
)
