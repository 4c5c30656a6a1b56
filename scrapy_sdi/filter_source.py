"""Where the filters come from: the API, a cache in the buffer, and a periodic refresh.

A crawl must start when the API is down (the cached filters apply, with their age logged) and
must pick up new filters during a long crawl without ever running unfiltered because one refresh
failed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from scrapy.utils.asyncio import create_looping_call
from twisted.internet import defer

from scrapy_sdi import formatting
from scrapy_sdi.errors import SDIError
from scrapy_sdi.filters import Filter, FilterSet, compile_filters

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.client import SDIClient
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)

CACHE_KEY = "filters"


class FilterSource:
    """Holds the current compiled filters and keeps them fresh."""

    def __init__(
        self,
        settings: SDISettings,
        buffer: Buffer,
        client: SDIClient | None,
        *,
        stats: StatsCollector | None = None,
    ) -> None:
        self.settings = settings
        self.buffer = buffer
        self.client = client
        self.stats = stats
        self.current: FilterSet = compile_filters([])
        self.source = "none"  # "api" | "cache" | "none" | "disabled"
        self.fetched_at: float | None = None
        self._cached_raw: list[dict[str, Any]] = []  # the raw list behind ``current``, as cached
        #: Why no filters could be loaded (source "none"), for the caller that refuses to go on.
        self.unavailable: str | None = None
        self._loop: Any = None
        self._refreshing: defer.Deferred[None] | None = None

    @property
    def required_but_missing(self) -> bool:
        return (
            self.settings.filters_enabled
            and self.settings.filters_required
            and self.source == "none"
        )

    def match(self, url: str, filename: str) -> Filter | None:
        return self.current.match(url, filename)

    def in_force(self) -> FilterSet | None:
        """The filters a result must pass now, or None when none are known or filtering is off.

        Rows remember the key of what they passed, so a result is matched again at sending only
        when other filters are in force by then (see Delivery).
        """
        return self.current if self.source in ("api", "cache") else None

    async def load(self) -> None:
        """At spider open: the API's filters, else the cached ones, else none (and say so)."""
        if not self.settings.filters_enabled or self.client is None:
            self._set_source("disabled" if not self.settings.filters_enabled else "none")
            if self.settings.filters_enabled:
                self._none_available("no API client")
            return
        try:
            await self._fetch(None)
            return
        except SDIError as exc:
            error = exc
        data = self._read_cache()
        if data is not None:
            fetched_at = data.get("fetched_at")
            fetched_at = float(fetched_at) if isinstance(fetched_at, (int, float)) else None
            self._use(data["filters"], data.get("version"), fetched_at, "cache")
            age = (
                "of unknown age"
                if fetched_at is None
                else formatting.age(time.time() - fetched_at) + " old"
            )
            logger.warning(
                "SDI filters: API unavailable (%(error)s); using %(n)d cached filters, %(age)s",
                {"error": error, "n": self.current.count, "age": age},
            )
            return
        self._set_source("none")
        self._none_available(f"API unavailable ({error}) and no cached filters")

    def _none_available(self, why: str) -> None:
        """Keep why for the caller that refuses to go on (SDI_FILTERS_REQUIRED); else warn once."""
        self.unavailable = why
        if not self.settings.filters_required:
            logger.warning(
                "SDI filters: %(why)s; results pass unfiltered until filters can be loaded",
                {"why": why},
            )

    def start(self) -> None:
        interval = self.settings.filters_refresh_interval
        if interval > 0 and self.client is not None and self.settings.filters_enabled:
            self._loop = create_looping_call(self._refresh)
            self._loop.start(interval, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    async def close(self) -> None:
        self.stop()
        if self._refreshing is not None:
            await self._refreshing

    def _refresh(self) -> None:
        """Start one refresh unless one is still running; a failure keeps the current filters."""
        if self._refreshing is None:
            self._refreshing = defer.Deferred.fromCoroutine(self._refresh_once())

    async def _refresh_once(self) -> None:
        # Never let an exception out: nobody awaits a refresh, so it would only vanish.
        try:
            await self._fetch(self.current.version)
        except SDIError as exc:
            self._inc("sdi/filters_refresh_failures")
            logger.warning(
                "SDI filters: refresh failed (%(error)s); keeping %(n)d current filters",
                {"error": exc, "n": self.current.count},
            )
        except Exception:
            self._inc("sdi/filters_refresh_failures")
            logger.exception(
                "SDI filters: refresh failed unexpectedly; keeping %(n)d current filters",
                {"n": self.current.count},
            )
        finally:
            self._refreshing = None

    async def _fetch(self, version: str | None) -> None:
        assert self.client is not None
        data = await self.client.filters(version)
        now = time.time()
        if data is None:  # 304: the filters in use are the API's current ones
            if self.source != "api":
                # e.g. loaded from the cache while the API was down, and unchanged since
                self.fetched_at = now
                self._set_source("api")
                self._write_cache(self._cached_raw, self.current.version, now)
                logger.info(
                    "SDI filters: the API confirms the %(n)d filters in use (version %(version)s)",
                    {"n": self.current.count, "version": self.current.version},
                )
            return
        self._use(data["filters"], data.get("version"), now, "api")
        self._write_cache(data["filters"], data.get("version"), now)
        logger.info(
            "SDI filters: %(n)d loaded from the API (version %(version)s)",
            {"n": self.current.count, "version": self.current.version},
        )

    def _read_cache(self) -> dict[str, Any] | None:
        """The cached API answer, or None when there is none or it cannot be used."""
        cached = self.buffer.get_meta(CACHE_KEY)
        if cached is None:
            return None
        try:
            data = orjson.loads(cached)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("filters"), list):
            logger.warning(
                "SDI filters: the cached filters in the buffer are unreadable; ignoring them"
            )
            return None
        if data.get("api_url", self.settings.api_url) != self.settings.api_url:
            logger.warning(
                "SDI filters: the cached filters came from another API (%(url)s); ignoring them",
                {"url": data.get("api_url")},
            )
            return None
        return data

    def _write_cache(self, raw: list[dict[str, Any]], version: Any, fetched_at: float) -> None:
        """Keep the API's answer for runs that start while the API is down; a failure only costs that."""
        self._cached_raw = raw
        try:
            self.buffer.set_meta(
                CACHE_KEY,
                orjson.dumps(
                    {
                        "filters": raw,
                        "version": version,
                        "fetched_at": fetched_at,
                        "api_url": self.settings.api_url,
                    }
                ).decode(),
            )
        except Exception as exc:
            logger.warning(
                "SDI filters: could not cache the filters in the buffer (%(error)s)", {"error": exc}
            )

    def _use(
        self, raw: list[dict[str, Any]], version: Any, fetched_at: float | None, source: str
    ) -> None:
        self.current = compile_filters(raw, version=None if version is None else str(version))
        self._cached_raw = raw
        self.fetched_at = fetched_at
        self._set_source(source)

    def _inc(self, key: str) -> None:
        if self.stats is not None:
            self.stats.inc_value(key)

    def _set_source(self, source: str) -> None:
        self.source = source
        if self.stats is not None:
            self.stats.set_value("sdi/filters_source", source)
            self.stats.set_value("sdi/filters_count", self.current.count)
            if self.current.version is not None:
                self.stats.set_value("sdi/filters_version", self.current.version)


def cached_filters_info(cached: str | None) -> dict[str, Any] | None:
    """Version, count and fetch time of the filters cached in a buffer's meta table.

    For the dashboard and the metrics, which show how old the filters a crawl starting now
    would fall back on are; None when nothing is cached.
    """
    if cached is None:
        return None
    try:
        data = orjson.loads(cached)
    except orjson.JSONDecodeError:
        return {
            "version": None,
            "count": None,
            "fetched_at": None,
            "error": "the cached filters are not JSON",
        }
    if not isinstance(data, dict):
        return {
            "version": None,
            "count": None,
            "fetched_at": None,
            "error": "the cached filters are not an object",
        }
    filters = data.get("filters")
    fetched_at = data.get("fetched_at")
    return {
        "version": None if data.get("version") is None else str(data["version"]),
        "count": len(filters) if isinstance(filters, list) else None,
        "fetched_at": fetched_at if isinstance(fetched_at, (int, float)) else None,
    }
