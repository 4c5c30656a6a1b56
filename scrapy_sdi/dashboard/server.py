"""The dashboard's Twisted Web site: routing, parameters, security checks and the pages' data.

One leaf resource routes every request. Database work runs in the reactor's thread pool on a
fresh read-only connection per request (to the SQLite file or the PostgreSQL database), so a slow
query never stalls the server and the crawls writing the buffer are never blocked. API calls
(health, remote status) run on the reactor.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import CannotListenError
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from scrapy_sdi import metrics
from scrapy_sdi.buffer import BufferFault
from scrapy_sdi.dashboard import chart, exports, queries, views
from scrapy_sdi.errors import SDIConfigError, SDIError
from scrapy_sdi.settings import check_api_url

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable, Mapping

    from twisted.web.server import Request

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.buffer_queries import BufferReader
    from scrapy_sdi.client import SDIClient
    from scrapy_sdi.requeue import Requeued
    from scrapy_sdi.settings import SDISettings

logger = logging.getLogger(__name__)

HEALTH_INTERVAL = 15.0
MAX_TEXT = 500
MAX_PAGE = 1_000_000
MAX_IDS = 10_000
WINDOWS = (
    ("all", "since the first outcome"),
    ("1h", "last hour"),
    ("6h", "6 hours"),
    ("24h", "24 hours"),
    ("7d", "7 days"),
    ("retention", "whole retention"),
)
_WINDOW_SECONDS = {"1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
_BACK_KEYS = ("state", "crawler", "q", "sort", "dir", "per_page")  # what a requeue may carry back
_ROW_STATES = {"all": queries.PROBLEM_STATES, "rejected": ("rejected",), "invalid": ("invalid",)}
_SECURITY_HEADERS = {
    b"Content-Security-Policy": b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"same-origin",  # "no-referrer" would make a browser send "Origin: null"
    b"Cross-Origin-Resource-Policy": b"same-origin",
}
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class DashboardError(Exception):
    """The dashboard cannot start; the message is the one line to show."""


class HTTPError(Exception):
    """An answer other than 200, with a message safe to show."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Response:
    body: bytes
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class Params:
    """Validated access to a request's query (or form) parameters: bad values are a 400."""

    def __init__(self, args: dict[bytes, list[bytes]]) -> None:
        self._args = args

    def all(self, name: str, *, max_length: int = MAX_TEXT) -> list[str]:
        values = []
        for raw in self._args.get(name.encode("ascii"), []):
            try:
                value = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPError(400, f"parameter {name}: not UTF-8 text") from None
            if len(value) > max_length:
                raise HTTPError(400, f"parameter {name}: longer than {max_length} characters")
            values.append(value.strip())
        return values

    def text(self, name: str, default: str = "", *, max_length: int = MAX_TEXT) -> str:
        values = self.all(name, max_length=max_length)
        return values[0] if values else default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        text = self.text(name)
        if not text:
            return default
        if not text.isdigit() or not low <= int(text) <= high:
            raise HTTPError(
                400, f"parameter {name}: {text!r} is not a whole number from {low} to {high}"
            )
        return int(text)

    def choice(self, name: str, default: str, allowed: Iterable[str]) -> str:
        allowed = list(allowed)
        value = self.text(name) or default
        if value not in allowed:
            raise HTTPError(400, f"parameter {name}: {value!r} is not one of {', '.join(allowed)}")
        return value


@dataclass
class Route:
    method: bytes
    handler: Callable[[Request, Params], Awaitable[Response]]
    json: bool = False


class Dashboard:
    """One running dashboard: the buffer it reads, its options, its per-run token, the API."""

    def __init__(
        self,
        source: queries.Source,
        *,
        allow_actions: bool = False,
        client: SDIClient | None = None,
        credentials: bool = False,
        retention_days: float = 30.0,
        allowed_hosts: frozenset[str] | None = None,
        field_map: Mapping[str, str] | None = None,
        dedup: bool = True,
    ) -> None:
        self.source = source
        #: What the pages' header names: the file, or the database's URL without its password.
        self.buffer_path = source.location
        #: How a requeue maps invalid rows again (SDI_FIELD_MAP, SDI_DEDUP), as the pipeline would.
        self.field_map = field_map
        self.dedup = dedup
        self.allow_actions = allow_actions
        self.client = client
        self.credentials = credentials
        self.retention_days = retention_days
        self.allowed_hosts = allowed_hosts
        #: The per-run token every action must carry (CSRF); never logged.
        self.token = secrets.token_urlsafe(32)
        self.health: dict[str, Any] | None = {"status": None} if client is not None else None
        self._codes: dict[int, dict[str, Any]] | None = None
        self._health_loop: task.LoopingCall | None = None
        self._static = _load_static()
        self._metrics = metrics.new_registry(
            metrics.BufferCollector(self._read_only_buffer, self._api_up)
        )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self.client is not None:
            self._health_loop = task.LoopingCall(self._check_health)
            self._health_loop.start(HEALTH_INTERVAL, now=True)

    async def stop(self) -> None:
        if self._health_loop is not None and self._health_loop.running:
            self._health_loop.stop()
        if self.client is not None:
            await self.client.close()

    def _check_health(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._health_once())

    async def _health_once(self) -> None:
        assert self.client is not None
        try:
            body = await self.client.health()
        except SDIError as exc:
            self.health = {"status": None, "error": str(exc)}
        else:
            self.health = {"status": str(body.get("status", "?")), "version": body.get("version")}

    def site(self) -> Site:
        site = Site(_Root(self))
        site.displayTracebacks = False
        return site

    # -- routing --------------------------------------------------------------------------

    def routes(self) -> dict[str, Route]:
        return {
            "/": Route(b"GET", self.overview_page),
            "/api/overview": Route(b"GET", self.overview_json, json=True),
            "/throughput": Route(b"GET", self.throughput_page),
            "/rows": Route(b"GET", self.rows_page),
            "/row": Route(b"GET", self.row_page),
            "/export": Route(b"GET", self.export),
            "/remote": Route(b"GET", self.remote_page),
            "/actions/requeue": Route(b"POST", self.requeue),
            "/metrics": Route(b"GET", self.prometheus),
            **{f"/static/{name}": Route(b"GET", self.static) for name in self._static},
        }

    # -- reading the buffer ---------------------------------------------------------------

    async def _read(self, func: Callable[..., Any], *args: Any) -> Any:
        """Run ``func(reader, *args)`` on a fresh read-only reader of the file in a worker thread."""

        def work() -> Any:
            with self.source.reader() as reader:
                return func(reader, *args)

        try:
            return await deferToThread(work)
        except (queries.BufferUnavailable, BufferFault) as exc:
            raise HTTPError(503, f"the buffer cannot be read right now: {exc}") from None

    # -- overview -------------------------------------------------------------------------

    def _overview_params(self, params: Params) -> dict[str, Any]:
        return {
            "sort": params.choice("sort", "crawler", queries.CRAWLER_SORTS),
            "dir": params.choice("dir", "asc", ("asc", "desc")),
            "page": params.integer("page", 1, 1, MAX_PAGE),
            "per_page": int(params.choice("per_page", "25", ("10", "25", "50", "100"))),
        }

    async def _overview_data(self, p: dict[str, Any]) -> dict[str, Any]:
        def read(reader: BufferReader) -> dict[str, Any]:
            now = time.time()
            return {
                "now": now,
                "totals": queries.state_totals(reader),
                "oldest_pending_age": queries.oldest_pending_age(reader, now),
                "filters": queries.filters_info(reader),
                "crawlers": queries.crawler_table(
                    reader,
                    sort=p["sort"],
                    descending=p["dir"] == "desc",
                    page=p["page"],
                    per_page=p["per_page"],
                ),
                "file_size": queries.sizes(reader),
            }

        data = await self._read(read)
        data["health"] = self.health
        return data

    async def overview_page(self, request: Request, params: Params) -> Response:
        p = self._overview_params(params)
        data = await self._overview_data(p)
        return Response(
            views.overview(
                data,
                _display(p, sort="crawler", dir="asc", per_page=25),
                buffer_path=self.buffer_path,
            )
        )

    async def overview_json(self, request: Request, params: Params) -> Response:
        p = self._overview_params(params)
        data = await self._overview_data(p)
        page = data["crawlers"]
        body = {
            "fields": views.overview_fields(data),
            "totals": data["totals"],
            "oldest_pending_age": data["oldest_pending_age"],
            "file_size": data["file_size"],
            "filters": data["filters"],
            "health": data["health"],
            "crawlers": {
                "rows": [views.crawler_cells(row) for row in page.rows],
                "page": page.page,
                "pages": page.pages,
                "total": page.total,
            },
        }
        return _json(body)

    # -- throughput -----------------------------------------------------------------------

    async def throughput_page(self, request: Request, params: Params) -> Response:
        window = params.choice("window", "all", (key for key, _ in WINDOWS))
        retention = self.retention_days * 86400

        def read(reader: BufferReader) -> dict[str, Any]:
            now = time.time()
            if window == "all":
                first = queries.first_outcome_time(reader)
                since = max(now - retention, first if first is not None else now - 3600)
            elif window == "retention":
                since = now - retention
            else:
                since = now - min(_WINDOW_SECONDS[window], retention)
            return {"chart": queries.throughput(reader, since, now), "until": now}

        data = await self._read(read)
        result = data["chart"]
        data["peak"] = max(
            (d + r for d, r in zip(result.delivered, result.rejected, strict=True)), default=0
        )
        data["svg"] = chart.svg(result)
        data["retention_days"] = self.retention_days
        return Response(
            views.throughput(data, {"window": window}, WINDOWS, buffer_path=self.buffer_path)
        )

    # -- rejected and invalid rows --------------------------------------------------------

    def _selection(self, params: Params) -> tuple[queries.Selection, dict[str, Any]]:
        p = {
            "state": params.choice("state", "all", _ROW_STATES),
            "crawler": params.text("crawler"),
            "q": params.text("q"),
            "sort": params.choice("sort", "created", queries.ROW_SORTS),
            "dir": params.choice("dir", "desc", ("asc", "desc")),
        }
        selection = queries.Selection(
            states=_ROW_STATES[p["state"]],
            crawler=p["crawler"] or None,
            search=p["q"],
            sort=p["sort"],
            descending=p["dir"] == "desc",
        )
        return selection, p

    async def rows_page(self, request: Request, params: Params) -> Response:
        selection, p = self._selection(params)
        p["page"] = params.integer("page", 1, 1, MAX_PAGE)
        p["per_page"] = int(params.choice("per_page", "50", ("25", "50", "100", "200")))
        requeued = params.integer("requeued", -1, 0, MAX_IDS)
        still_invalid = params.integer("invalid", 0, 0, MAX_IDS)

        def read(reader: BufferReader) -> dict[str, Any]:
            return {
                "page": queries.rows_page(
                    reader, selection, page=p["page"], per_page=p["per_page"]
                ),
                "crawlers": queries.crawler_names(reader),
            }

        data = await self._read(read)
        data["requeued"] = None if requeued < 0 else requeued
        data["still_invalid"] = still_invalid
        shown = _display(p, state="all", sort="created", dir="desc", per_page=50)
        return Response(
            views.rows(
                data,
                shown,
                buffer_path=self.buffer_path,
                token=self._action_token(),
                xlsx=exports.xlsx_available(),
            )
        )

    async def row_page(self, request: Request, params: Params) -> Response:
        row_id = params.text("id")
        if not row_id:
            raise HTTPError(
                400, "parameter id: missing; open a row from the rejected and invalid rows page"
            )
        row = await self._read(queries.row_detail, row_id)
        if row is None:
            raise HTTPError(404, f"no row with id {row_id!r} in the buffer")
        return Response(
            views.row_detail(row, buffer_path=self.buffer_path, token=self._action_token())
        )

    async def export(self, request: Request, params: Params) -> Response:
        fmt = params.choice("format", "csv", exports.FORMATS)
        selection, p = self._selection(params)
        if fmt == "xlsx" and not exports.xlsx_available():
            raise HTTPError(
                404, "XLSX export needs openpyxl, which is not installed here: pip install openpyxl"
            )

        def read(reader: BufferReader) -> bytes:
            return exports.render(fmt, queries.iter_selection(reader, selection))

        body = await self._read(read)
        content_type, ext = exports.FORMATS[fmt]
        name = f"sdi-{p['state']}-rows-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.{ext}"
        return Response(
            body,
            content_type=content_type,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    # -- remote status --------------------------------------------------------------------

    async def remote_page(self, request: Request, params: Params) -> Response:
        p: dict[str, Any] = {
            "crawler": params.text("crawler"),
            "q": params.text("q"),
            "page": params.integer("page", 1, 1, MAX_PAGE),
            "per_page": int(params.choice("per_page", "50", ("25", "50", "100"))),
        }

        def read(reader: BufferReader) -> dict[str, Any]:
            return {
                "page": queries.delivered_page(
                    reader,
                    crawler=p["crawler"] or None,
                    search=p["q"],
                    page=p["page"],
                    per_page=p["per_page"],
                ),
                "crawlers": queries.crawler_names(reader),
            }

        data = await self._read(read)
        urls = [row["url"] for row in data["page"].rows]
        data["statuses"], data["note"] = await self._lookup(urls)
        return Response(views.remote(data, _display(p, per_page=50), buffer_path=self.buffer_path))

    async def _lookup(self, urls: list[str]) -> tuple[dict[str, dict[str, Any]], str | None]:
        if self.client is None:
            return (
                {},
                "No API configured: pass --api-url (or set SDI_API_URL) to look up remote statuses.",
            )
        if not self.credentials:
            return (
                {},
                "API credentials are not set: set SDI_USERNAME and SDI_PASSWORD to look up remote statuses.",
            )
        if not urls:
            return {}, None
        try:
            if self._codes is None:
                self._codes = {
                    c["code"]: c for c in await self.client.status_codes() if "code" in c
                }
            found = await self.client.status_by_urls(urls)
        except SDIError as exc:
            return {}, f"The API's status lookup failed: {exc}"
        statuses = {}
        for entry in found:
            url = entry.get("url")
            if not isinstance(url, str):
                continue
            code = entry.get("status_code")
            described = self._codes.get(code, {}) if isinstance(code, int) else {}
            statuses[url] = {
                "status_code": code,
                "status": entry.get("status") or described.get("name"),
                "description": entry.get("description") or described.get("description") or "",
            }
        return statuses, f"Statuses of {len(urls)} URLs from {self.client.base_url}."

    # -- Prometheus -----------------------------------------------------------------------

    async def prometheus(self, request: Request, params: Params) -> Response:
        """The buffer's metrics, read in a worker thread; API health as the health loop last saw it."""
        try:
            body = await deferToThread(metrics.render, self._metrics)
        except BufferFault as exc:
            raise HTTPError(503, f"the buffer cannot be read right now: {exc}") from None
        return Response(body, content_type=metrics.CONTENT_TYPE_LATEST)

    def _read_only_buffer(self) -> Buffer:
        return self.source.metrics_buffer()

    def _api_up(self) -> bool | None:
        """A scrape never waits for the API: the answer of the last health check (every 15 s)."""
        return None if self.health is None else self.health.get("status") is not None

    # -- actions --------------------------------------------------------------------------

    def _action_token(self) -> str | None:
        return self.token if self.allow_actions else None

    async def requeue(self, request: Request, params: Params) -> Response:
        if not self.allow_actions:
            raise HTTPError(
                403, "Actions are off: start the dashboard with --allow-actions to requeue rows."
            )
        _check_origin(request)
        if not hmac.compare_digest(
            params.text("token").encode("utf-8"), self.token.encode("ascii")
        ):
            raise HTTPError(
                403, "The action token is missing or wrong: reload the page and try again."
            )
        ids = [i for i in params.all("id", max_length=MAX_TEXT) if i]
        if len(ids) > MAX_IDS:
            raise HTTPError(400, f"at most {MAX_IDS} rows per requeue")
        try:
            done = await deferToThread(self._requeue, ids)
        except BufferFault as exc:
            raise HTTPError(503, f"the buffer could not be changed right now: {exc}") from None
        logger.info(
            "Requeued %(n)d rows from the dashboard; %(invalid)d stay invalid",
            {"n": done.requeued, "invalid": done.still_invalid},
        )
        if params.text("back_to") == "row" and ids:
            location = "/row?" + urlencode({"id": ids[0]})
        else:
            kept = [
                (k, v)
                for k, v in parse_qsl(params.text("back", max_length=4 * MAX_TEXT))
                if k in _BACK_KEYS
            ]
            still = [("invalid", str(done.still_invalid))] if done.still_invalid else []
            location = "/rows?" + urlencode([*kept, ("requeued", str(done.requeued)), *still])
        return Response(b"", status=303, headers={"Location": location})

    def _requeue(self, ids: list[str]) -> Requeued:
        return queries.requeue_in(self.source.writable(), ids, self.field_map, self.dedup)

    # -- static files ---------------------------------------------------------------------

    async def static(self, request: Request, params: Params) -> Response:
        name = request.path.decode("ascii").rsplit("/", 1)[-1]
        body, content_type = self._static[name]
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-cache"})


class _Root(Resource):
    """Every request: host check, route, method check, then the handler's coroutine."""

    isLeaf = True

    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard
        self._routes = dashboard.routes()

    def render(self, request: Request) -> int:
        defer.Deferred.fromCoroutine(self._answer(request))
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        route = None
        try:
            route = self._route(request)
            method = b"GET" if request.method == b"HEAD" else request.method
            if method != route.method:
                raise HTTPError(
                    405, f"use {route.method.decode()} here", {"Allow": route.method.decode()}
                )
            response = await route.handler(request, Params(request.args or {}))
        except HTTPError as exc:
            response = self._error(exc, json=route is not None and route.json)
        except Exception:
            logger.exception("Dashboard error on %(path)r", {"path": request.path})
            response = self._error(
                HTTPError(500, "internal error; see the dashboard's log"),
                json=route is not None and route.json,
            )
        if not gone:
            _write(request, response)

    def _route(self, request: Request) -> Route:
        host = (request.getHeader("host") or "").lower()
        if self.dashboard.allowed_hosts is not None and host not in self.dashboard.allowed_hosts:
            raise HTTPError(
                421, "unexpected Host header: open the dashboard by its loopback address"
            )
        try:
            path = request.path.decode("ascii")
        except UnicodeDecodeError:
            raise HTTPError(404, "no such page") from None
        route = self._routes.get(path)
        if route is None:
            raise HTTPError(404, "no such page")
        return route

    def _error(self, exc: HTTPError, *, json: bool) -> Response:
        if json:
            return Response(
                orjson.dumps({"error": exc.message}),
                status=exc.status,
                content_type="application/json",
                headers=exc.headers,
            )
        body = views.error_page(exc.status, exc.message, buffer_path=self.dashboard.buffer_path)
        return Response(body, status=exc.status, headers=exc.headers)


def _write(request: Request, response: Response) -> None:
    request.setResponseCode(response.status)
    for name, value in _SECURITY_HEADERS.items():
        request.setHeader(name, value)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Type", response.content_type.encode("ascii"))
    for header, text in response.headers.items():
        request.setHeader(header.encode("ascii"), text.encode("utf-8"))
    request.setHeader(b"Content-Length", str(len(response.body)).encode("ascii"))
    request.write(response.body)
    request.finish()


def _json(body: Any) -> Response:
    return Response(orjson.dumps(body), content_type="application/json")


def _display(params: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """The parameters worth repeating in links: those that differ from their defaults."""
    return {k: v for k, v in params.items() if v not in ("", None) and defaults.get(k) != v}


def _check_origin(request: Request) -> None:
    """A browser names the page's origin on a POST: refuse one from another site."""
    origin = request.getHeader("origin")
    if origin is None:  # not a browser, or an old one: the token alone decides
        return
    host = request.getHeader("host") or ""
    if urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPError(403, "The action came from another site and was refused.")


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("scrapy_sdi.dashboard").joinpath("static")
    files = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


# -- starting -------------------------------------------------------------------------------


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False


def _allowed_hosts(bind: str, port: int) -> frozenset[str] | None:
    if not is_loopback(bind):
        return None  # reachable by other names on purpose
    names = {
        "127.0.0.1",
        "localhost",
        "[::1]",
        bind if ":" not in bind else f"[{bind.strip('[]')}]",
    }
    return frozenset({*names, *(f"{name}:{port}" for name in names)})


def build_dashboard(settings: SDISettings, *, allow_actions: bool) -> Dashboard:
    """Check the buffer and the API settings, then build the dashboard (nothing listens yet)."""
    try:
        source = queries.Source(settings)
        source.check()
    except queries.BufferUnavailable as exc:
        raise DashboardError(str(exc)) from None
    client = None
    if settings.api_url:
        try:
            check_api_url("API URL", settings.api_url)
        except SDIConfigError as exc:
            raise DashboardError(str(exc)) from None
        from scrapy_sdi.client import SDIClient

        client = SDIClient(
            settings.api_url, settings.username, settings.password, timeout=settings.timeout
        )
    return Dashboard(
        source,
        allow_actions=allow_actions,
        client=client,
        credentials=bool(settings.username and settings.password),
        retention_days=settings.retention_days,
        field_map=settings.field_map,
        dedup=settings.dedup,
    )


def serve(settings: SDISettings, *, port: int, bind: str, allow_actions: bool) -> int:
    """Serve until interrupted; bad input is one line on stderr and exit code 1."""
    from twisted.internet import reactor

    try:
        if not 0 <= port <= 65535:
            raise DashboardError(f"--port: {port} is not a port number from 0 to 65535")
        dashboard = build_dashboard(settings, allow_actions=allow_actions)
        try:
            # Twisted's annotations: a Site (ServerFactory of HTTP channels) does not match listenTCP's
            # ServerFactory of its default protocol type (Factory is invariant in it); it is one
            listening = reactor.listenTCP(port, dashboard.site(), interface=bind)  # type: ignore[arg-type]
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or exc.socketError
            raise DashboardError(f"cannot listen on {bind}:{port}: {reason}") from None
    except DashboardError as exc:
        print(f"SDI dashboard: {exc}", file=sys.stderr)
        return 1
    address = listening.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address)), address  # listenTCP's
    actual = address.port
    dashboard.allowed_hosts = _allowed_hosts(bind, actual)
    if not is_loopback(bind):
        print(
            f"Warning: the SDI dashboard is bound to {bind}, reachable from other hosts; "
            "bind to 127.0.0.1 unless that is intended",
            file=sys.stderr,
        )
    host = f"[{bind}]" if ":" in bind else bind
    print(
        f"SDI dashboard listening on http://{host}:{actual}/ "
        f"(buffer {dashboard.buffer_path}; actions {'on' if allow_actions else 'off'})",
        flush=True,
    )
    reactor.callWhenRunning(dashboard.start)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromCoroutine(dashboard.stop())
    )
    reactor.run()
    return 0
