"""The two ways bytes reach the API: treq on a Twisted reactor, aiohttp without one.

The client holds all the logic (auth, errors, outcomes, compression); a transport only sends one
request and returns the status, headers and body as a Deferred, so the client's coroutines run
the same under ``Deferred.fromCoroutine`` whichever transport carries them. Scrapy itself
downloads through aiohttp when ``TWISTED_REACTOR_ENABLED`` is False, and importing the reactor
is then forbidden, so the treq side imports it only when it is built.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import defer

from scrapy_sdi.errors import SDIConfigError, SDINetworkError


@dataclass(slots=True)
class Reply:
    code: int
    headers: dict[str, str]  # lower-case names, first value
    body: bytes


class Transport(Protocol):
    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> defer.Deferred[Reply]: ...

    def close(self) -> defer.Deferred[None]: ...


class TreqTransport:
    """One connection pool per client, on the running Twisted reactor."""

    def __init__(self, reactor: Any = None, *, max_connections: int = 16) -> None:
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = max_connections
        self._http = treq.client.HTTPClient(Agent(reactor, pool=self._pool))
        self._treq = treq

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> defer.Deferred[Reply]:
        return defer.Deferred.fromCoroutine(self._request(method, url, headers, body))

    async def _request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> Reply:
        from twisted.web.http_headers import Headers

        try:
            response = await self._http.request(
                method, url, data=body, headers=Headers({k: [v] for k, v in headers.items()})
            )
            content = await self._treq.content(response)
        except defer.CancelledError:
            raise
        except Exception as exc:  # every failure below HTTP: refused, reset, DNS, TLS...
            if _cancelled(exc):
                raise defer.CancelledError() from None
            raise SDINetworkError(_describe(exc)) from None
        names = {
            name.decode("latin-1").lower(): values[0].decode("latin-1")
            for name, values in response.headers.getAllRawHeaders()
        }
        return Reply(response.code, names, content)

    def close(self) -> defer.Deferred[None]:
        return self._pool.closeCachedConnections()


class AiohttpTransport:
    """aiohttp on the running asyncio loop, for Scrapy's reactorless mode."""

    def __init__(self, *, max_connections: int = 16) -> None:
        try:
            import aiohttp
        except ImportError:
            raise SDIConfigError(
                "TWISTED_REACTOR_ENABLED: without a Twisted reactor scrapy_sdi delivers through aiohttp; "
                "install it with: pip install aiohttp"
            ) from None
        self._aiohttp = aiohttp
        self._max_connections = max_connections
        self._session: Any = None

    def request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> defer.Deferred[Reply]:
        return defer.Deferred.fromFuture(
            asyncio.ensure_future(self._request(method, url, headers, body))
        )

    async def _request(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> Reply:
        aiohttp = self._aiohttp
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=True
            ) as response:
                content = await response.read()
                names = {k.lower(): v for k, v in response.headers.items()}
                return Reply(response.status, names, content)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise SDINetworkError(_describe(exc)) from None

    def close(self) -> defer.Deferred[None]:
        if self._session is None:
            return defer.succeed(None)
        session, self._session = self._session, None
        return defer.Deferred.fromFuture(asyncio.ensure_future(session.close()))


def default_transport() -> Transport:
    """treq when a Twisted reactor runs the crawl, aiohttp when Scrapy runs without one."""
    from scrapy.utils.reactor import is_reactor_installed

    if is_reactor_installed():
        return TreqTransport()
    return AiohttpTransport()


def _cancelled(exc: BaseException) -> bool:
    reasons = getattr(exc, "reasons", None) or []
    return any(r.check(defer.CancelledError) for r in reasons)


def _describe(exc: BaseException) -> str:
    reasons = getattr(exc, "reasons", None)
    if reasons:
        text = "response failed: " + ", ".join(
            f"{type(r.value).__name__}: {r.value}"[:200] for r in reasons
        )
    else:
        text = f"{type(exc).__name__}: {exc}"[:200]
    if "certificate verify failed" in text or "CERTIFICATE_VERIFY_FAILED" in text:
        text += " (the API's TLS certificate is not trusted; for a private CA set SSL_CERT_FILE to its bundle)"
    return text
