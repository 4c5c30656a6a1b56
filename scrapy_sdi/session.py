"""One crawl's delivery, opened and closed in order: buffer, client, filters, audit log, Outbox.

The pipeline decides what becomes of each item; this holds what it hands the rows to, so that
the pipeline's hooks stay a few lines. A dry run opens a memory buffer and gives the Outbox no
client (it counts what would be sent). At close, what is left is said once, with what to do.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import defer

from scrapy_sdi.audit import AuditLog
from scrapy_sdi.buffer import MemoryBuffer, buffer_class, open_buffer
from scrapy_sdi.buffer_calls import BufferCalls
from scrapy_sdi.client import SDIClient
from scrapy_sdi.clock import Timers
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.filter_source import FilterSource
from scrapy_sdi.outbox import Outbox
from scrapy_sdi.status import record_remote_status

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)

#: Keys set to 0 at open, so the closing stats dump always shows them and they add up.
STARTING_STATS = (
    "sdi/items_buffered",
    "sdi/items_delivered",
    "sdi/items_duplicate",
    "sdi/items_rejected",
    "sdi/items_filtered",
    "sdi/items_invalid",
    "sdi/items_deduplicated",
    "sdi/items_unbuffered",
    "sdi/batches_sent",
    "sdi/batches_failed",
    "sdi/retries",
)
#: Seconds a blocking buffer is given to close after the close deadline has passed.
CLOSE_GRACE = 0.5
#: What a dry run counts instead of deliveries.
DRY_RUN_STATS = ("sdi/dry_run/items", "sdi/dry_run/batches")


class DeliverySession:
    """What a crawl's pipeline delivers through; ``open`` once, ``close`` once."""

    def __init__(self, settings: SDISettings, stats: StatsCollector) -> None:
        self.settings = settings
        self.stats = stats
        self.buffer: Buffer | None = None
        #: How the buffer is called: off the loop thread when it blocks.
        self.calls: BufferCalls | None = None
        self.client: SDIClient | None = None
        self.filters: FilterSource | None = None
        self.audit: AuditLog | None = None
        self.outbox: Outbox | None = None
        self._opened_at = time.time()

    async def open(self) -> Outbox:
        """Open everything and start delivering; BufferFileError when the buffer file is unusable."""
        settings = self.settings
        # a dry run must not mark anything delivered in the real buffer
        if settings.dry_run:
            calls = BufferCalls(MemoryBuffer())
        else:  # a backend that blocks connects on its own thread, as it is called later
            opening = BufferCalls.open(
                lambda: open_buffer(settings), blocking=buffer_class(settings.buffer).blocking
            )
            calls = await maybe_deferred_to_future(opening)
        self.calls, self.buffer = calls, calls.buffer
        buffer = calls.buffer
        _warn_plain_http(settings.api_url)
        self.client = SDIClient(
            settings.api_url,
            settings.username,
            settings.password,
            timeout=settings.timeout,
            compression_min_bytes=settings.compression_min_bytes if settings.compression else None,
            stats=self.stats,
        )
        if settings.dry_run:
            logger.info("SDI dry run: results are buffered and counted but never submitted")
        if settings.audit_log:
            self.audit = AuditLog(
                settings.audit_log,
                rotation=settings.audit_rotation,
                retention=settings.audit_retention,
            )
        self.filters = FilterSource(settings, calls, self.client, stats=self.stats)
        delivery = Delivery(
            buffer,
            None if settings.dry_run else self.client,
            settings,
            stats=self.stats,
            audit=self.audit.record if self.audit is not None else None,
            filters=self.filters,
            calls=calls,
        )
        self.outbox = Outbox(delivery, dedup=settings.dedup, stats=self.stats)
        await maybe_deferred_to_future(defer.Deferred.fromCoroutine(self.filters.load()))
        pruned = await maybe_deferred_to_future(calls.call(buffer.prune, settings.retention_days))
        if pruned:
            logger.info(
                "SDI buffer: pruned %(n)d delivered results older than %(days)g days",
                {"n": pruned, "days": settings.retention_days},
            )
        for key in STARTING_STATS + (DRY_RUN_STATS if settings.dry_run else ()):
            self.stats.set_value(key, 0)
        await maybe_deferred_to_future(self.outbox.start())
        self.filters.start()
        return self.outbox

    async def close(self) -> None:
        """The final flush, the status lookup, then the closing figures and what they mean."""
        if self.outbox is None or self.buffer is None or self.calls is None:
            return
        clock = Timers()
        deadline = clock.seconds() + self.settings.close_timeout
        left = await maybe_deferred_to_future(defer.Deferred.fromCoroutine(self._close()))
        self.stats.set_value("sdi/pending_at_close", left)
        unbuffered = self.stats.get_value("sdi/items_unbuffered", 0)
        if unbuffered:
            logger.warning(
                "SDI: %(n)d results were not buffered after the buffer failed; run the crawl again to find them",
                {"n": unbuffered},
            )
        if left and self.buffer.durable:
            logger.warning(
                "SDI: %(n)d results are still pending in %(path)s; the next run delivers them, "
                "or drain them now with `scrapy sdi flush`",
                {"n": left, "path": self.buffer.location},
            )
        elif left:
            self.stats.set_value("sdi/items_lost", left)
            logger.error(
                "SDI: %(n)d results were not delivered and are lost (SDI_BUFFER = 'memory')",
                {"n": left},
            )
        closing = clock.within(self.calls.close(), max(CLOSE_GRACE, deadline - clock.seconds()))
        try:
            await maybe_deferred_to_future(closing)
        except TimeoutError:
            logger.warning(
                "SDI buffer %(where)s did not answer before SDI_CLOSE_TIMEOUT; the calls made "
                "are left to finish on its thread, and what they did not record stays pending "
                "or leased for the next run",
                {"where": self.buffer.location},
            )

    async def _close(self) -> int:
        assert self.outbox is not None and self.filters is not None and self.calls is not None
        self.filters.stop()
        try:
            left = await self.outbox.close(self.settings.close_timeout)
            if self.settings.status_on_close and self.client is not None:
                await record_remote_status(
                    self.client,
                    self.calls,
                    self.stats,
                    crawler=self.settings.crawler_name,
                    since=self._opened_at,
                    timeout=max(self.settings.close_timeout, self.settings.timeout),
                )
            return left
        finally:
            await self.filters.close()
            if self.client is not None:
                await self.client.close()
            if self.audit is not None:
                self.audit.close()


def describe_buffer(settings: SDISettings, buffer: Buffer | None = None) -> str:
    """How the start line names the buffer (its location, a URL's password masked); a dry run creates none."""
    if settings.dry_run:
        return "dry run (results kept in memory, never sent)"
    if settings.buffer == "sqlite":
        return "buffer " + settings.buffer_path
    if buffer is not None and buffer.durable:
        return f"buffer {settings.buffer!r} at {buffer.location}"
    return f"buffer {settings.buffer!r}"


def _warn_plain_http(api_url: str) -> None:
    """Credentials sent over plain http to another machine can be read on the way."""
    from urllib.parse import urlsplit

    parts = urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http" and host not in ("localhost", "::1") and not host.startswith("127."):
        logger.warning(
            "SDI_API_URL uses plain http to %(host)s: credentials and results travel unencrypted; use https",
            {"host": host},
        )
