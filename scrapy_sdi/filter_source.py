"""Where the filters come from: the API, a cache in the buffer, and a periodic refresh.

A crawl must start when the API is down (the cached filters apply, with their age logged) and
must pick up new filters during a long crawl without ever running unfiltered because one refresh
failed.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from scrapy.utils.asyncio import create_looping_call
from twisted.internet import defer

from scrapy_sdi import formatting
from scrapy_sdi.buffer_calls import run_in_thread
from scrapy_sdi.client import filters_answer
from scrapy_sdi.errors import SDIError
from scrapy_sdi.filters import Filter, FilterSet, compile_filters

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_sdi.buffer_calls import BufferCalls
    from scrapy_sdi.client import SDIClient
    from scrapy_sdi.settings import SDISettings
    from scrapy_sdi.transport import Reply

logger = logging.getLogger(__name__)

CACHE_KEY = "filters"


class FilterSource:
    """Holds the current compiled filters and keeps them fresh."""

    def __init__(
        self,
        settings: SDISettings,
        calls: BufferCalls,
        client: SDIClient | None,
        *,
        stats: StatsCollector | None = None,
    ) -> None:
        self.settings = settings
        #: The buffer the filters are cached in, called through (off the loop thread if it blocks).
        self.calls = calls
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
        data = await self._read_cache()
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
            await self._fetch(self.current.version, off_loop=True)
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

    async def _fetch(self, version: str | None, *, off_loop: bool = False) -> None:
        """The API's filters, in force once compiled. ``off_loop`` (a refresh mid-crawl): the
        answer is parsed, compiled and encoded for the cache on a thread, as a long list takes
        hundreds of milliseconds of CPU the loop must not wait on; the filters in use stay in
        force until then, and still do if that fails. The initial load does it inline: nothing
        runs before filters are known then anyway."""
        assert self.client is not None
        ready: _Ready | None
        if off_loop:
            reply = await self.client.filters_reply(version)
            now = time.time()
            ready = (
                None
                if reply is None
                else await run_in_thread(_ready_from_reply, reply, self.settings.api_url, now)
            )
        else:
            data = await self.client.filters(version)
            now = time.time()
            ready = None if data is None else _ready(data, self.settings.api_url, now)
        if ready is None:  # 304: the filters in use are the API's current ones
            if self.source != "api":
                # e.g. loaded from the cache while the API was down, and unchanged since
                self.fetched_at = now
                self._set_source("api")
                self._write_cache(
                    self._cached_raw,
                    _cache_value(
                        self._cached_raw, self.current.version, now, self.settings.api_url
                    ),
                )
                logger.info(
                    "SDI filters: the API confirms the %(n)d filters in use (version %(version)s)",
                    {"n": self.current.count, "version": self.current.version},
                )
            return
        self._use(ready.raw, ready.filters.version, now, "api", compiled=ready.filters)
        self._write_cache(ready.raw, ready.cache_value)
        logger.info(
            "SDI filters: %(n)d loaded from the API (version %(version)s)",
            {"n": self.current.count, "version": self.current.version},
        )

    async def _read_cache(self) -> dict[str, Any] | None:
        """The cached API answer, or None when there is none or it cannot be used."""
        try:
            cached = await self.calls.call(self.calls.buffer.get_meta, CACHE_KEY)
        except Exception as exc:
            logger.warning(
                "SDI filters: could not read the cached filters in the buffer (%(error)s)",
                {"error": exc},
            )
            return None
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

    def _write_cache(self, raw: list[dict[str, Any]], value: str) -> None:
        """Keep the API's answer (``value``, see :func:`_cache_value`) for runs that start while
        the API is down; a failure only costs that. Not waited for: the filters apply at once,
        the cache is for the next run."""
        self._cached_raw = raw

        def failed(failure: Any) -> None:
            logger.warning(
                "SDI filters: could not cache the filters in the buffer (%(error)s)",
                {"error": failure.value},
            )

        self.calls.call(self.calls.buffer.set_meta, CACHE_KEY, value).addErrback(failed)

    def _use(
        self,
        raw: list[dict[str, Any]],
        version: Any,
        fetched_at: float | None,
        source: str,
        *,
        compiled: FilterSet | None = None,
    ) -> None:
        """Put ``raw`` in force (``compiled``: already compiled off the loop); on the loop thread."""
        self.current = compiled if compiled is not None else _compile(raw, version)
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


def _compile(raw: list[dict[str, Any]], version: Any) -> FilterSet:
    return compile_filters(raw, version=None if version is None else str(version))


class _Ready(NamedTuple):
    """An API answer made ready to put in force: its list, compiled, and its cache entry."""

    raw: list[dict[str, Any]]
    filters: FilterSet
    cache_value: str


def _ready(data: dict[str, Any], api_url: str, fetched_at: float) -> _Ready:
    raw, version = data["filters"], data.get("version")
    return _Ready(raw, _compile(raw, version), _cache_value(raw, version, fetched_at, api_url))


def _ready_from_reply(reply: Reply, api_url: str, fetched_at: float) -> _Ready:
    """Off the loop: parse, compile and encode a refresh's answer (pure, no shared state)."""
    return _ready(filters_answer(reply), api_url, fetched_at)


def _cache_value(raw: list[dict[str, Any]], version: Any, fetched_at: float, api_url: str) -> str:
    return orjson.dumps(
        {"filters": raw, "version": version, "fetched_at": fetched_at, "api_url": api_url}
    ).decode()


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
