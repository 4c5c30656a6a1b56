"""The SDI API client: every call of the contract, over a transport (treq, or aiohttp without a reactor).

Coroutines here await Deferreds, so they run under ``Deferred.fromCoroutine`` in every mode;
Scrapy-facing code wraps them with ``maybe_deferred_to_future``. Authentication is handled once,
here: a 401 on any call renews the token (refresh, else log in again) in a single flight shared by
every concurrent caller, then resends once.
"""

from __future__ import annotations

import gzip
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from scrapy.utils.asyncio import call_later
from twisted.internet import defer

from scrapy_sdi.errors import (
    SDIAuthError,
    SDIBadRequest,
    SDIBatchTooLarge,
    SDIError,
    SDINetworkError,
    SDIRateLimited,
    SDIServiceError,
)
from scrapy_sdi.settings import check_api_url
from scrapy_sdi.transport import Reply, Transport, default_transport

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

STATUS_CHUNK = 1000  # the contract's limit of URLs per status lookup
_OUTCOMES = frozenset(("accepted", "duplicate", "rejected"))


class Outcome(NamedTuple):
    """The API's answer for one submitted result (a tuple: a batch makes a thousand of them)."""

    id: str
    status: str  # "accepted" | "duplicate" | "rejected"
    reason: str | None = None


class SDIClient:
    """One API session: a connection pool, tokens, and the contract's calls."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 30.0,
        compression_min_bytes: int | None = 16_384,
        stats: StatsCollector | None = None,
        transport: Transport | None = None,
    ) -> None:
        # credentials inside the URL would show in every transport error that names the host
        self.base_url = check_api_url("SDI_API_URL", base_url.rstrip("/"))
        self._username = username
        self._password = password
        self._timeout = timeout
        self._compression_min_bytes = compression_min_bytes
        self._stats = stats
        self._transport = transport if transport is not None else default_transport()
        self._access_token: str | None = None
        self._refresh_token: str | None = None
        self._expires_at = 0.0
        self._auth_lock = defer.DeferredLock()

    # -- the contract's calls -------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return _json_object(await self._call("GET", "/health", auth=False))

    async def login(self) -> None:
        """Log in with username and password; raises SDIAuthError when they are refused."""
        await self._auth_lock.acquire()
        try:
            await self._login()
        finally:
            self._auth_lock.release()

    async def filters(self, version: str | None = None) -> dict[str, Any] | None:
        """The API's filters, or None when ``version`` is still current (304)."""
        reply = await self.filters_reply(version)
        return None if reply is None else filters_answer(reply)

    async def filters_reply(self, version: str | None = None) -> Reply | None:
        """The API's filters answer unread, or None when ``version`` is still current (304): a
        long list is parsed with :func:`filters_answer` where it costs the loop nothing."""
        headers = {"If-None-Match": f'"{version}"'} if version else None  # the version is our ETag
        reply = await self._call("GET", "/filters", headers=headers, ok=(200, 304))
        return None if reply.code == 304 else reply

    async def submit(self, body: bytes) -> list[Outcome]:
        """POST one pre-encoded batch; return the outcomes the API gave (missing ids were not stored)."""
        reply = await self._call("POST", "/crawler-results", body=body)
        results = _json_object(reply).get("results")
        if not isinstance(results, list):
            raise SDIServiceError("crawler-results answer has no 'results' list", status=reply.code)
        outcomes = []
        for entry in results:
            if isinstance(entry, dict):
                id_, status = entry.get("id"), entry.get("status")
                if isinstance(id_, str) and status in _OUTCOMES:
                    reason = entry.get("reason")
                    outcomes.append(
                        Outcome(id_, status, reason if isinstance(reason, str) else None)
                    )
        return outcomes

    async def status_by_urls(self, urls: Iterable[str]) -> list[dict[str, Any]]:
        """Look up many URLs, in requests of at most 1000 each."""
        urls = list(urls)
        found: list[dict[str, Any]] = []
        for start in range(0, len(urls), STATUS_CHUNK):
            chunk = urls[start : start + STATUS_CHUNK]
            reply = await self._call(
                "POST", "/crawler-results/status", body=orjson.dumps({"urls": chunk})
            )
            found.extend(_json_list(reply, "results"))
        return found

    async def status_by_crawlers(self, crawlers: Sequence[str]) -> list[dict[str, Any]]:
        body = orjson.dumps({"crawlers": list(crawlers)})
        return _json_list(
            await self._call("POST", "/crawler-results/status", body=body), "crawlers"
        )

    async def status_codes(self) -> list[dict[str, Any]]:
        return _json_list(await self._call("GET", "/status-codes"), "codes")

    async def close(self) -> None:
        await self._transport.close()

    # -- authentication -------------------------------------------------------------------

    async def _login(self) -> None:
        creds = orjson.dumps({"username": self._username, "password": self._password})
        reply = await self._send("POST", "/auth/token", creds, None)
        if reply.code == 401:
            raise SDIAuthError(
                f"login refused for user {self._username!r}: invalid credentials", status=401
            )
        self._take_tokens(reply)
        self._inc("sdi/auth/logins")

    async def _refresh(self) -> bool:
        """Trade the refresh token for new tokens; False when the API refuses it."""
        if not self._refresh_token:
            return False
        reply = await self._send(
            "POST", "/auth/refresh", orjson.dumps({"refresh_token": self._refresh_token}), None
        )
        if reply.code == 401:
            return False
        self._take_tokens(reply)
        self._inc("sdi/auth/refreshes")
        return True

    async def _token(self, stale: str | None = None) -> str:
        """A usable access token; with ``stale``, one newer than it (single flight)."""
        if (
            self._access_token
            and self._access_token != stale
            and time.monotonic() < self._expires_at
        ):
            return self._access_token
        await self._auth_lock.acquire()
        try:
            current = self._access_token
            if current and current != stale and time.monotonic() < self._expires_at:
                return current  # someone renewed it while we waited
            if not await self._refresh():
                await self._login()
            assert self._access_token is not None
            return self._access_token
        finally:
            self._auth_lock.release()

    def _take_tokens(self, reply: Reply) -> None:
        body = _json_object(reply)
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if reply.code != 200 or not isinstance(access, str) or not isinstance(refresh, str):
            raise SDIServiceError(f"auth answered {reply.code} without tokens", status=reply.code)
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else 3600.0
        self._access_token, self._refresh_token = access, refresh
        # renew a little early rather than spend a request on a 401
        self._expires_at = time.monotonic() + max(lifetime * 0.9, lifetime - 30)

    # -- transport ------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        ok: tuple[int, ...] = (200,),
    ) -> Reply:
        token = await self._token() if auth else None
        reply = await self._send(method, path, body, token, headers)
        if reply.code == 401 and auth:
            token = await self._token(stale=token)
            reply = await self._send(method, path, body, token, headers)
            if reply.code == 401:
                raise SDIAuthError(
                    f"{method} {path}: still unauthorized after renewing the token", status=401
                )
        if reply.code not in ok:
            raise _error_for(method, path, reply)
        return reply

    async def _send(
        self,
        method: str,
        path: str,
        body: bytes | None,
        token: str | None,
        extra_headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
            if self._compression_min_bytes is not None and len(body) >= self._compression_min_bytes:
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        headers.update(extra_headers or {})
        d = self._transport.request(method, self.base_url + path, headers, body)
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = call_later(self._timeout, expire)
        try:
            reply = await d
        except (SDINetworkError, defer.CancelledError) as exc:
            if timed_out:
                raise SDINetworkError(
                    f"{method} {path}: no answer within {self._timeout:g}s"
                ) from None
            if isinstance(exc, defer.CancelledError):
                raise
            raise SDINetworkError(f"{method} {path}: {exc}") from None
        finally:
            timer.cancel()
        self._inc(f"sdi/response_status_count/{reply.code}")
        return reply

    def _inc(self, key: str) -> None:
        if self._stats is not None:
            self._stats.inc_value(key)


def filters_answer(reply: Reply) -> dict[str, Any]:
    """The filters answer's body, checked; pure, so it may run on any thread."""
    body = _json_object(reply)
    if not isinstance(body.get("filters"), list):
        raise SDIServiceError("filters answer has no 'filters' list", status=reply.code)
    return body


def _json_object(reply: Reply) -> dict[str, Any]:
    try:
        body = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        raise SDIServiceError(
            f"answer {reply.code} is not JSON: {reply.body[:80]!r}", status=reply.code
        ) from None
    if not isinstance(body, dict):
        raise SDIServiceError(f"answer {reply.code} is not a JSON object", status=reply.code)
    return body


def _json_list(reply: Reply, key: str) -> list[dict[str, Any]]:
    items = _json_object(reply).get(key)
    if not isinstance(items, list):
        raise SDIServiceError(f"answer has no {key!r} list", status=reply.code)
    return [item for item in items if isinstance(item, dict)]


def _error_for(method: str, path: str, reply: Reply) -> SDIError:
    """Map a non-success answer to the error a caller can act on."""
    code = reply.code
    try:
        detail = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        detail = None
    detail = detail if isinstance(detail, dict) else {}
    message = f"{method} {path}: {code} {str(detail.get('error', ''))[:200]}".rstrip()
    if code == 400:
        return SDIBadRequest(message, status=code)
    if code == 413:
        max_results = detail.get("max_results")
        return SDIBatchTooLarge(
            message, max_results=max_results if isinstance(max_results, int) else None
        )
    if code in (429, 503):
        retry_after = _retry_after(reply.headers)
        if code == 429 or retry_after is not None:
            return SDIRateLimited(message, status=code, retry_after=retry_after or 0.0)
    if code >= 500:
        return SDIServiceError(message, status=code)
    return SDIError(message, status=code)


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:  # an HTTP date: rare from APIs; treat as "soon"
        return None
