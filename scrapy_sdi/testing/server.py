"""Reference SDI ingest server: the whole v1 wire contract, SQLite-backed, with fault switches.

It exists so the client can be proven over real HTTP against a server that follows
``sdi-api-contract.md`` to the letter, and so tests can make that server misbehave on purpose
(503/429, dropped connections, partial answers, poison results, short-lived tokens).

Run it with ``python -m scrapy_sdi.testing.server --port 0 --db sdi.db --user NAME:PASSWORD``;
it prints one line, ``SDI reference server listening on http://HOST:PORT/api/v1``, then serves.
``GET /openapi.yaml`` answers the contract it implements, as shipped in the package.
``build_site(config)`` gives the same server as a ``twisted.web.server.Site`` to embed in-process.

Besides the contract it serves an unauthenticated admin API under ``/_admin/`` for tests:
``GET results``, ``GET stats``, ``GET received`` (each batch as it arrived), ``GET|POST faults``, ``POST filters``, ``POST revoke``,
``POST status``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import importlib.resources
import json
import logging
import math
import random
import re
import secrets
import sqlite3
import sys
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import orjson
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorSSL, IReactorTime, ITCPTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_RESULTS_PATH = (API_PREFIX + "/crawler-results").encode()
ADMIN_PREFIX = "/_admin"
SERVER_VERSION = "scrapy_sdi-reference/1"
MAX_STATUS_LOOKUPS = 1000
MAX_ID_LENGTH = 128
RECEIVED_KEPT = 10_000  # batches whose arrival GET /_admin/received reports
#: What nginx answers a body over its client_max_body_size: HTML, not the contract's JSON.
PROXY_413_PAGE = (
    b"<html><head><title>413 Request Entity Too Large</title></head><body>"
    b"<center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>"
    b"</body></html>"
)

#: (code, name, description): the fixed list served by ``GET status-codes``.
STATUS_CODES: tuple[tuple[int, str, str], ...] = (
    (0, "received", "Stored, not yet looked at"),
    (1, "processing", "Being analysed automatically"),
    (2, "under_review", "Queued for analyst review"),
    (3, "confirmed", "Confirmed by an analyst"),
    (4, "dismissed", "Reviewed and found not relevant"),
    (5, "removed", "Taken down at the source"),
)
_STATUS_BY_CODE = {code: (name, desc) for code, name, desc in STATUS_CODES}


# --- configuration ------------------------------------------------------------------------------


def _rate(value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"expected a fraction between 0 and 1, got {value!r}")
    return rate


def _seconds(value: Any) -> float:
    seconds = float(value)
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return seconds


def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1 or isinstance(value, bool):
        raise ValueError(f"expected an integer >= 1, got {value!r}")
    return number


def _max_uses(value: Any) -> int | None:
    """``None`` or ``0`` means unlimited uses."""
    if value is None or int(value) == 0:
        return None
    return _positive_int(value)


def _pattern(value: Any) -> str | None:
    if value is None or value == "":
        return None
    re.compile(value)  # raises re.error (a ValueError) on a bad pattern
    return str(value)


def _seed(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass
class Faults:
    """Switches tests flip (CLI flags or ``POST /_admin/faults``) to make the server misbehave.

    Random faults only ever hit ``POST crawler-results``, so a client can always log in.
    """

    fail_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    omit_rate: float = 0.0
    garble_rate: float = 0.0
    reject_url_pattern: str | None = None
    bad_request_url_pattern: str | None = None
    latency: float = 0.0
    token_lifetime: float = 3600.0
    token_max_uses: int | None = None
    max_results: int = 1000
    max_bytes: int = 5 * 1024 * 1024
    proxy_max_bytes: int | None = None
    seed: int | None = None

    def update(self, changes: dict[str, Any]) -> None:
        """Validate every change first, then apply them all (all or nothing)."""
        unknown = sorted(set(changes) - set(FAULT_PARSERS))
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        parsed = {}
        for name, value in changes.items():
            try:
                parsed[name] = FAULT_PARSERS[name](value)
            except (TypeError, ValueError, re.error) as exc:
                raise ValueError(f"{name}: {exc}") from None
        for name, value in parsed.items():
            setattr(self, name, value)


#: How each fault setting is parsed, shared by the CLI flags and the admin API.
FAULT_PARSERS: dict[str, Callable[[Any], Any]] = {
    "fail_rate": _rate,
    "rate_limit_rate": _rate,
    "retry_after": _seconds,
    "drop_before_rate": _rate,
    "drop_after_rate": _rate,
    "omit_rate": _rate,
    "garble_rate": _rate,
    "reject_url_pattern": _pattern,
    "bad_request_url_pattern": _pattern,
    "latency": _seconds,
    "token_lifetime": _seconds,
    "token_max_uses": _max_uses,
    "max_results": _positive_int,
    "max_bytes": _positive_int,
    "proxy_max_bytes": _max_uses,
    "seed": _seed,
}
assert set(FAULT_PARSERS) == {f.name for f in fields(Faults)}

_FAULT_HELP = {
    "fail_rate": "fraction of crawler-results requests answered 503, nothing stored",
    "rate_limit_rate": "fraction answered 429 with Retry-After, nothing stored",
    "retry_after": "seconds sent in Retry-After on 429/503 (default 1; may be a fraction)",
    "drop_before_rate": "fraction whose connection is dropped before storing",
    "drop_after_rate": "fraction stored, then dropped without an answer",
    "omit_rate": "chance that each result is neither stored nor answered",
    "garble_rate": "fraction stored, then answered 200 with a broken body (not JSON, wrong shape, 2 MB of junk, or ids never sent), in turn",
    "reject_url_pattern": "regex: matching results not stored before are answered rejected",
    "bad_request_url_pattern": "regex: a batch with a matching url is answered 400 as a whole",
    "latency": "seconds every API answer is delayed (without blocking)",
    "token_lifetime": "seconds an access token lives (default 3600)",
    "token_max_uses": "an access token expires after this many authenticated uses (0: no limit)",
    "max_results": "results per batch before 413 (default 1000)",
    "max_bytes": "decompressed body bytes before 413 (default 5 MiB)",
    "proxy_max_bytes": "as a reverse proxy in front: request bodies over this many bytes as sent "
    "(before gunzip) are answered 413 with an HTML page, no max_results (0: none)",
    "seed": "seed of the random faults",
}


@dataclass
class ServerConfig:
    """Everything the server needs; ``build_site`` turns it into a Site."""

    host: str = "127.0.0.1"
    port: int = 0
    db_path: str = ":memory:"
    users: dict[str, str] = field(default_factory=dict)
    filters: list[dict[str, Any]] = field(default_factory=list)
    filters_version: str | None = None
    faults: Faults = field(default_factory=Faults)
    tls_cert: str | None = None  # PEM files: serve https, e.g. with a certificate from a private CA
    tls_key: str | None = None


def load_filters(path: str | Path) -> tuple[list[dict[str, Any]], str | None]:
    """Read a filters file: a JSON list of filters, or ``{"version": ..., "filters": [...]}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return _split_filters(data)


def _split_filters(data: Any) -> tuple[list[dict[str, Any]], str | None]:
    version = None
    if isinstance(data, dict):
        version, data = data.get("version"), data.get("filters")
    if not isinstance(data, list) or not all(isinstance(f, dict) for f in data):
        raise ValueError("filters must be a list of objects or {'version', 'filters'}")
    if version is not None and not isinstance(version, str):
        raise ValueError("filters version must be a string")
    return data, version


# --- storage ------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,  -- unique: ResultStore checks its set of ids (an index cost ~40% per row)
    crawler TEXT NOT NULL,
    url TEXT NOT NULL,
    filename TEXT NOT NULL,
    referrer TEXT,
    description TEXT,
    uploader TEXT,
    crawled_at TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    status_code INTEGER NOT NULL DEFAULT 0,
    submitted_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_url ON results (url);
CREATE INDEX IF NOT EXISTS results_crawler ON results (crawler);
"""
_RESULT_COLUMNS = (
    "id",
    "crawler",
    "url",
    "filename",
    "referrer",
    "description",
    "uploader",
    "crawled_at",
    "extra",
    "status_code",
    "submitted_at",
)


class ResultStore:
    """Stored crawler results, one row per id, in SQLite so they survive a restart."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # A test double on loopback: a committed batch survives the server's own death (kill -9,
        # the WAL is in the OS cache), not a power cut. The fsyncs of each checkpoint made up a
        # third of its time per result once the id index outgrew the batches (1M rows).
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA busy_timeout=5000")
        # Random ids land all over the unique index: a batch of 1000 dirties most of its pages.
        # A 64 MB cache keeps them from being read back, and a checkpoint every ~40 MB of WAL
        # (not the default 4 MB, i.e. after almost every batch) writes each page once per
        # many batches.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.execute("PRAGMA wal_autocheckpoint=10000")
        self._db.executescript(_SCHEMA)
        # Every stored id, to keep each id once. A unique index on random ids cost ~7 of ~19 µs
        # per result at 1,000,000 stored (each batch dirties a page per id); the set costs ~90 MB
        # per million ids and a read of the ids at start, which a test double can afford.
        self._ids: set[str] = {id_ for (id_,) in self._db.execute("SELECT id FROM results")}

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One batch is stored atomically: everything or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __contains__(self, id_: str) -> bool:
        """Whether ``id_`` was stored: a resent id is a duplicate before anything else."""
        return id_ in self._ids

    def insert_many(
        self, crawler: str, results: list[dict[str, Any]], submitted_at: str
    ) -> list[bool]:
        """Store the results whose id is new, in one transaction; for each, whether it was new.

        One ``executemany``, not an INSERT per result (the statement overhead was most of the
        server's time per batch). The same id twice in one batch: the second is a duplicate.
        """
        new: list[bool] = []
        fresh: set[str] = set()
        rows = []
        for r in results:
            id_ = r["id"]
            is_new = id_ not in self._ids and id_ not in fresh
            new.append(is_new)
            if is_new:
                fresh.add(id_)
                rows.append(
                    (
                        id_,
                        crawler,
                        r["url"],
                        r["filename"],
                        r.get("referrer"),
                        r.get("description"),
                        r.get("uploader"),
                        r.get("crawled_at"),
                        json.dumps(r["extra"]) if r.get("extra") else "{}",
                        submitted_at,
                    )
                )
        if rows:
            with self.transaction():
                self._db.executemany(
                    "INSERT INTO results (id, crawler, url, filename, referrer, description, uploader,"
                    " crawled_at, extra, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            self._ids |= fresh  # only once committed: a failed batch stored nothing
        return new

    def all_results(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM results ORDER BY seq").fetchall()
        return [self._row_dict(row) for row in rows]

    def latest_by_url(self, urls: list[str]) -> dict[str, dict[str, Any]]:
        """The most recently submitted result for each known url."""
        found: dict[str, dict[str, Any]] = {}
        for url in set(urls):
            row = self._db.execute(
                "SELECT * FROM results WHERE url = :url ORDER BY seq DESC LIMIT 1", {"url": url}
            ).fetchone()
            if row is not None:
                found[url] = self._row_dict(row)
        return found

    def counts_by_status(self, crawler: str) -> dict[int, int]:
        rows = self._db.execute(
            "SELECT status_code, COUNT(*) AS n FROM results WHERE crawler = :crawler"
            " GROUP BY status_code",
            {"crawler": crawler},
        ).fetchall()
        return {row["status_code"]: row["n"] for row in rows}

    def set_status(self, url: str, code: int) -> int:
        """Change every result stored for ``url``; returns how many there were."""
        with self.transaction():
            cursor = self._db.execute(
                "UPDATE results SET status_code = :code WHERE url = :url",
                {"code": code, "url": url},
            )
        return cursor.rowcount

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
        data = {name: row[name] for name in _RESULT_COLUMNS}
        data["extra"] = json.loads(data["extra"])
        return data


# --- tokens and counters ------------------------------------------------------------------------


@dataclass
class _AccessToken:
    user: str
    expires_at: float
    uses: int = 0


class TokenRegistry:
    """Access and refresh tokens, in memory: a restart invalidates them, as the contract allows."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, str] = {}

    def issue(self, user: str, lifetime: float) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._access[access] = _AccessToken(user, self._clock.seconds() + lifetime)
        self._refresh[refresh] = user
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "Bearer",
            "expires_in": math.ceil(lifetime),
        }

    def rotate(self, refresh_token: str, lifetime: float) -> dict[str, Any] | None:
        """A refresh token works once: it is replaced by the new pair."""
        user = self._refresh.pop(refresh_token, None)
        return None if user is None else self.issue(user, lifetime)

    def use(self, access_token: str | None, max_uses: int | None) -> str | None:
        """Count one authenticated use; the error code when the token is not (or no longer) good."""
        key = access_token or ""
        token = self._access.get(key)
        if token is None:
            return "unauthorized"
        token.uses += 1
        if token.expires_at <= self._clock.seconds() or (max_uses and token.uses > max_uses):
            del self._access[key]
            return "token_expired"
        return None

    def revoke_all(self, access_only: bool = False) -> None:
        """Forget tokens; with ``access_only`` the refresh tokens still work (an access-token expiry)."""
        self._access.clear()
        if not access_only:
            self._refresh.clear()


class ServerStats:
    """Counters served by ``GET /_admin/stats`` so tests can assert on what the server saw."""

    def __init__(self) -> None:
        self.requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.batches: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        #: The last RECEIVED_KEPT ``POST crawler-results`` as received: ``GET /_admin/received``.
        self.received: deque[dict[str, Any]] = deque(maxlen=RECEIVED_KEPT)

    def as_dict(self) -> dict[str, Any]:
        names = (
            "accepted",
            "duplicates",
            "rejected",
            "omitted",
            "logins",
            "login_failures",
            "refreshes",
            "refresh_failures",
            "garbled",
        )
        return {
            **{name: self.counters[name] for name in names},
            "requests": {path: dict(counts) for path, counts in sorted(self.requests.items())},
            "batches": dict(self.batches),
        }


# --- HTTP ---------------------------------------------------------------------------------------


@dataclass
class _Answer:
    """What to send back; ``drop`` aborts the connection instead of answering."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    raw: bytes | None = None  # sent as is instead of JSON (garbled answers)

    @property
    def label(self) -> str:
        return "dropped" if self.drop else str(self.status)


class _BadBody(Exception):
    def __init__(self, answer: _Answer) -> None:
        super().__init__(answer.status)
        self.answer = answer


@functools.cache
def _openapi_document() -> bytes:
    """The wire contract this server implements, as shipped in the package."""
    return importlib.resources.files("scrapy_sdi").joinpath("openapi.yaml").read_bytes()


def _error(status: int, error: str, **extra: Any) -> _Answer:
    return _Answer(status, {"error": error, **extra})


def _now_iso(clock: IReactorTime) -> str:
    return datetime.fromtimestamp(clock.seconds(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _batch_error(data: Any) -> str | None:
    """Why a crawler-results body is structurally malformed, or None when it is well formed."""
    if not isinstance(data, dict):
        return "body must be a JSON object"
    if not isinstance(data.get("crawler"), str) or not data["crawler"]:
        return "crawler must be a non-empty string"
    results = data.get("results")
    if not isinstance(results, list) or not results:
        return "results must be a non-empty list"
    for index, result in enumerate(results):
        problem = _result_error(result)
        if problem:
            return f"results[{index}]: {problem}"
    return None


def _result_error(result: Any) -> str | None:
    if not isinstance(result, dict):
        return "must be an object"
    rid = result.get("id")
    if not isinstance(rid, str) or not 1 <= len(rid) <= MAX_ID_LENGTH:
        return f"id must be a string of 1-{MAX_ID_LENGTH} characters"
    for name in ("url", "filename"):
        if not isinstance(result.get(name), str):
            return f"{name} must be a string"
    for name in ("referrer", "description", "uploader", "crawled_at"):
        if not _is_str_or_none(result.get(name)):
            return f"{name} must be a string or null"
    if not isinstance(result.get("extra", {}), dict):
        return "extra must be an object"
    return None


def _wire_bytes(request: Request) -> int:
    """The size of a request's body as sent (compressed, when it was)."""
    content = request.content  # a BytesIO, or a temporary file for a large body
    if content is None:
        return 0
    where = content.tell()
    size = content.seek(0, 2)
    content.seek(where)
    return size


def _header(request: Request, name: bytes) -> str | None:
    """A request header as text; bytes that are not UTF-8 must not fail the request (a 500)."""
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _etag_matches(header: str | None, version: str) -> bool:
    """If-None-Match may carry the bare version, a quoted ETag, a weak one, a list, or ``*``."""
    if header is None:
        return False
    for tag in header.split(","):
        tag = tag.strip()
        tag = tag[2:] if tag.startswith("W/") else tag
        if tag == "*" or tag.strip('"') == version:
            return True
    return False


Handler = Callable[[Request, bytes], _Answer]


class SDIResource(Resource):
    """The whole server as one leaf resource: routes on (path, method), then answers JSON."""

    isLeaf = True

    def __init__(self, config: ServerConfig, store: ResultStore, clock: IReactorTime) -> None:
        super().__init__()
        self.config = config
        self.faults = config.faults
        self.store = store
        self.clock = clock
        self.tokens = TokenRegistry(clock)
        self.stats = ServerStats()
        self._rng = random.Random(config.faults.seed)
        self._batches: deque[Request] = deque()  # POST crawler-results waiting for their turn
        self._filters_serial = 1
        self._filters_version = config.filters_version or self._version_of(config.filters)
        self._routes: dict[str, dict[str, tuple[Handler, bool]]] = {
            API_PREFIX + "/auth/token": {"POST": (self._auth_token, False)},
            API_PREFIX + "/auth/refresh": {"POST": (self._auth_refresh, False)},
            API_PREFIX + "/health": {"GET": (self._health, False)},
            API_PREFIX + "/filters": {"GET": (self._filters, True)},
            API_PREFIX + "/crawler-results": {"POST": (self._crawler_results, True)},
            API_PREFIX + "/crawler-results/status": {"POST": (self._status_lookup, True)},
            API_PREFIX + "/status-codes": {"GET": (self._status_codes, True)},
            ADMIN_PREFIX + "/results": {"GET": (self._admin_results, False)},
            ADMIN_PREFIX + "/stats": {"GET": (self._admin_stats, False)},
            ADMIN_PREFIX + "/received": {"GET": (self._admin_received, False)},
            ADMIN_PREFIX + "/faults": {
                "GET": (self._admin_get_faults, False),
                "POST": (self._admin_set_faults, False),
            },
            ADMIN_PREFIX + "/filters": {"POST": (self._admin_filters, False)},
            ADMIN_PREFIX + "/revoke": {"POST": (self._admin_revoke, False)},
            ADMIN_PREFIX + "/status": {"POST": (self._admin_status, False)},
            "/openapi.yaml": {"GET": (self._openapi, False)},
        }

    # plumbing

    def render(self, request: Request) -> int:
        """Answer at once, except batches of results: they wait their turn (``_store_next``)."""
        if self._proxy_refuses(request):
            return NOT_DONE_YET
        if request.method == b"POST" and request.path == _RESULTS_PATH:
            self._batches.append(request)
            request.notifyFinish().addErrback(lambda _: self._forget(request))
            if len(self._batches) == 1:
                self.clock.callLater(0, self._store_next)
            return NOT_DONE_YET
        self._answer(request)
        return NOT_DONE_YET

    def _proxy_refuses(self, request: Request) -> bool:
        """A reverse proxy's body limit (``proxy_max_bytes``): 413 as HTML before the API sees it."""
        limit = self.faults.proxy_max_bytes
        if not limit or _wire_bytes(request) <= limit:
            return False
        answer = _Answer(413, raw=PROXY_413_PAGE, headers={"Content-Type": "text/html"})
        path = request.path.decode("utf-8", "replace")
        self.stats.requests[path if path in self._routes else "(unknown)"][answer.label] += 1
        if request.path == _RESULTS_PATH:
            self.stats.batches[answer.label] += 1
            self._note_received(request, answer, None)
        self._send(request, answer)
        return True

    def _store_next(self) -> None:
        """Handle one queued batch per turn of the reactor.

        An answer reaches the socket only when the reactor next polls. Storing every batch that
        arrived in one poll before returning held all their answers back until the last one was
        stored, so the client idled meanwhile, then the server while the client caught up: the
        two took turns on a 2-core machine. One batch per turn lets each answer leave while the
        next batch is stored.
        """
        if not self._batches:
            return
        request = self._batches.popleft()
        if self._batches:
            self.clock.callLater(0, self._store_next)
        self._answer(request)

    def _forget(self, request: Request) -> None:
        """The client went away before its batch's turn: store nothing, it will resend."""
        if request in self._batches:
            self._batches.remove(request)

    def _answer(self, request: Request) -> None:
        path = request.path.decode("utf-8", "replace")
        answer = self._dispatch(request.method.decode("ascii", "replace"), path, request)
        is_api = path.startswith(API_PREFIX + "/")
        if is_api:
            self.stats.requests[path if path in self._routes else "(unknown)"][answer.label] += 1
        delay = self.faults.latency if is_api else 0.0
        if delay <= 0:
            self._send(request, answer)
            return
        call = self.clock.callLater(delay, self._send, request, answer)
        request.notifyFinish().addErrback(lambda _: call.cancel() if call.active() else None)

    def _dispatch(self, method: str, path: str, request: Request) -> _Answer:
        methods = self._routes.get(path)
        if methods is None:
            return _error(404, "not_found")
        if method not in methods:
            answer = _error(405, "method_not_allowed")
            answer.headers["Allow"] = ", ".join(sorted(methods))
            return answer
        handler, needs_auth = methods[method]
        if needs_auth:
            problem = self.tokens.use(self._bearer(request), self.faults.token_max_uses)
            if problem:
                return _error(401, problem)
        limit = self.faults.max_bytes if path.startswith(API_PREFIX) else None
        try:
            return handler(request, self._read_body(request, limit))
        except _BadBody as exc:
            return exc.answer
        except Exception:
            logger.exception(
                "Unexpected error answering %(method)s %(path)s", {"method": method, "path": path}
            )
            return _error(500, "internal_error")

    def _send(self, request: Request, answer: _Answer) -> None:
        if answer.drop:
            logger.debug("Dropping the connection of %(path)r", {"path": request.path})
            # a TCP (or TLS over TCP) connection: ITransport alone has no abortConnection
            cast(ITCPTransport, request.transport).abortConnection()
            return
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name, value)
        if answer.status == 304:
            request.defaultContentType = None  # no body, so no Content-Type (not text/html)
            request.finish()
            return
        body = answer.raw if answer.raw is not None else orjson.dumps(answer.body)
        if "Content-Type" not in answer.headers:
            request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(body)))
        request.write(body)
        request.finish()

    @staticmethod
    def _bearer(request: Request) -> str | None:
        header = (_header(request, b"authorization") or "").strip()
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def _read_body(self, request: Request, limit: int | None) -> bytes:
        """The request body, gunzipped when sent gzip; the byte limit applies after gunzip."""
        raw = request.content.read() if request.content is not None else b""
        encoding = (_header(request, b"content-encoding") or "identity").strip().lower()
        if encoding == "gzip":
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            try:
                body = inflater.decompress(raw, 0 if limit is None else limit + 1)
            except zlib.error:
                raise _BadBody(_error(400, "body is not valid gzip")) from None
            if not inflater.eof and (limit is None or len(body) <= limit):
                raise _BadBody(_error(400, "body is not valid gzip"))
        elif encoding == "identity":
            body = raw
        else:
            raise _BadBody(_error(415, "unsupported_content_encoding"))
        if limit is not None and len(body) > limit:
            raise _BadBody(self._too_large())
        return body

    def _too_large(self) -> _Answer:
        return _error(413, "too_large", max_results=self.faults.max_results)

    @staticmethod
    def _json(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _BadBody(_error(400, "body is not valid JSON")) from None

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self._rng.random() < rate

    # contract

    def _auth_token(self, request: Request, body: bytes) -> _Answer:
        data = self._json(body)
        if not isinstance(data, dict) or not all(
            isinstance(data.get(k), str) for k in ("username", "password")
        ):
            return _error(400, "body must be an object with string username and password")
        expected = self.config.users.get(data["username"])
        if expected is None or not hmac.compare_digest(
            expected.encode("utf-8"), data["password"].encode("utf-8")
        ):
            self.stats.counters["login_failures"] += 1
            return _error(401, "invalid_credentials")
        self.stats.counters["logins"] += 1
        return _Answer(200, self.tokens.issue(data["username"], self.faults.token_lifetime))

    def _auth_refresh(self, request: Request, body: bytes) -> _Answer:
        data = self._json(body)
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
            return _error(400, "body must be an object with a string refresh_token")
        tokens = self.tokens.rotate(data["refresh_token"], self.faults.token_lifetime)
        if tokens is None:
            self.stats.counters["refresh_failures"] += 1
            return _error(401, "invalid_refresh_token")
        self.stats.counters["refreshes"] += 1
        return _Answer(200, tokens)

    def _health(self, request: Request, body: bytes) -> _Answer:
        return _Answer(200, {"status": "ok", "version": SERVER_VERSION})

    def _filters(self, request: Request, body: bytes) -> _Answer:
        version = self._filters_version
        headers = {"ETag": f'"{version}"', "Cache-Control": "no-cache"}
        if _etag_matches(_header(request, b"if-none-match"), version):
            return _Answer(304, headers=headers)
        return _Answer(200, {"version": version, "filters": self.config.filters}, headers)

    def _crawler_results(self, request: Request, body: bytes) -> _Answer:
        answer = self._random_fault()
        if answer is None:
            answer = self._store_batch(self._json(body))
        self.stats.batches[answer.label] += 1
        self._note_received(request, answer, body)
        return answer

    def _note_received(self, request: Request, answer: _Answer, body: bytes | None) -> None:
        """What arrived, when, and how it was answered: tests check what was really sent."""
        self.stats.received.append(
            {
                "at": self.clock.seconds(),
                "status": answer.label,
                "content_encoding": _header(request, b"content-encoding"),
                "wire_bytes": _wire_bytes(request),
                "body_bytes": None if body is None else len(body),
                "body_sha256": None if body is None else hashlib.sha256(body).hexdigest(),
            }
        )

    def _random_fault(self) -> _Answer | None:
        retry_after = {"Retry-After": format(self.faults.retry_after, "g")}
        if self._roll(self.faults.fail_rate):
            return _Answer(503, {"error": "service_unavailable"}, retry_after)
        if self._roll(self.faults.rate_limit_rate):
            return _Answer(429, {"error": "rate_limited"}, retry_after)
        if self._roll(self.faults.drop_before_rate):
            return _Answer(0, drop=True)
        return None

    def _store_batch(self, data: Any) -> _Answer:
        results = data.get("results") if isinstance(data, dict) else None
        if isinstance(results, list) and len(results) > self.faults.max_results:
            return self._too_large()
        problem = _batch_error(data)
        if problem:
            return _error(400, problem)
        poison = self.faults.bad_request_url_pattern
        for result in data["results"]:
            if poison and re.search(poison, result["url"]):
                return _error(400, f"result {result['id']!r} cannot be processed")
        outcomes = self._store_results(data["crawler"], data["results"])
        if self._roll(self.faults.drop_after_rate):
            return _Answer(0, drop=True)
        if self._roll(self.faults.garble_rate):
            return self._garbled()
        return _Answer(200, {"results": outcomes})

    def _garbled(self) -> _Answer:
        """A 200 that does not follow the contract, each kind in turn."""
        kind = self.stats.counters["garbled"] % 4
        self.stats.counters["garbled"] += 1
        if kind == 0:
            return _Answer(200, raw=b"<html>Internal proxy page</html>")
        if kind == 1:
            return _Answer(200, {"result": "ok"})
        if kind == 2:
            return _Answer(200, {"results": [], "junk": "x" * 2_000_000})
        return _Answer(
            200, {"results": [{"id": f"never-sent-{i}", "status": "accepted"} for i in range(3)]}
        )

    def _store_results(self, crawler: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        outcomes, kept, kept_outcomes = [], [], []
        reject = self.faults.reject_url_pattern
        for result in results:
            if self._roll(self.faults.omit_rate):
                self.stats.counters["omitted"] += 1
            # an id accepted before is answered duplicate, never rejected: each id is stored once
            elif reject and result["id"] not in self.store and re.search(reject, result["url"]):
                self.stats.counters["rejected"] += 1
                outcomes.append(
                    {
                        "id": result["id"],
                        "status": "rejected",
                        "reason": f"url matches the rejected pattern {reject!r}",
                    }
                )
            else:
                outcome = {"id": result["id"], "status": "accepted"}
                outcomes.append(outcome)
                kept.append(result)
                kept_outcomes.append(outcome)
        new = self.store.insert_many(crawler, kept, _now_iso(self.clock)) if kept else []
        for outcome, is_new in zip(kept_outcomes, new, strict=True):
            if not is_new:
                outcome["status"] = "duplicate"
        accepted = sum(new)
        self.stats.counters["accepted"] += accepted
        self.stats.counters["duplicates"] += len(new) - accepted
        logger.debug(
            "Batch of %(n)d results from %(crawler)r stored",
            {"n": len(results), "crawler": crawler},
        )
        return outcomes

    def _status_lookup(self, request: Request, body: bytes) -> _Answer:
        data = self._json(body)
        if not isinstance(data, dict) or not ({"urls", "crawlers"} & data.keys()):
            return _error(400, "body must be an object with urls or crawlers")
        answer: dict[str, Any] = {}
        for key, lookup in (("urls", self._lookup_urls), ("crawlers", self._lookup_crawlers)):
            if key not in data:
                continue
            values = data[key]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                return _error(400, f"{key} must be a list of strings")
            if len(values) > MAX_STATUS_LOOKUPS:
                return _error(400, f"at most {MAX_STATUS_LOOKUPS} {key} per request")
            answer.update(lookup(values))
        return _Answer(200, answer)

    def _lookup_urls(self, urls: list[str]) -> dict[str, Any]:
        found = self.store.latest_by_url(urls)
        entries = []
        for url in urls:
            row = found.get(url)
            if row is None:
                entries.append({"url": url, "status_code": None, "status": "not_found"})
                continue
            name, description = _STATUS_BY_CODE[row["status_code"]]
            entries.append(
                {
                    "url": url,
                    "status_code": row["status_code"],
                    "status": name,
                    "description": description,
                    "crawler": row["crawler"],
                    "submitted_at": row["submitted_at"],
                }
            )
        return {"results": entries}

    def _lookup_crawlers(self, crawlers: list[str]) -> dict[str, Any]:
        entries = []
        for crawler in crawlers:
            counts = self.store.counts_by_status(crawler)
            by_status = {_STATUS_BY_CODE[code][0]: n for code, n in sorted(counts.items())}
            entries.append(
                {"crawler": crawler, "total": sum(counts.values()), "by_status": by_status}
            )
        return {"crawlers": entries}

    @staticmethod
    def _openapi(request: Request, body: bytes) -> _Answer:
        return _Answer(200, raw=_openapi_document(), headers={"Content-Type": "application/yaml"})

    def _status_codes(self, request: Request, body: bytes) -> _Answer:
        codes = [{"code": c, "name": n, "description": d} for c, n, d in STATUS_CODES]
        return _Answer(200, {"codes": codes})

    # admin (tests only, no auth)

    def _admin_results(self, request: Request, body: bytes) -> _Answer:
        results = self.store.all_results()
        return _Answer(200, {"count": len(results), "results": results})

    def _admin_stats(self, request: Request, body: bytes) -> _Answer:
        return _Answer(200, self.stats.as_dict())

    def _admin_received(self, request: Request, body: bytes) -> _Answer:
        return _Answer(200, {"received": list(self.stats.received)})

    def _admin_get_faults(self, request: Request, body: bytes) -> _Answer:
        return _Answer(200, asdict(self.faults))

    def _admin_set_faults(self, request: Request, body: bytes) -> _Answer:
        data = self._json(body)
        if not isinstance(data, dict):
            return _error(400, "body must be an object of fault settings")
        try:
            self.faults.update(data)
        except ValueError as exc:
            return _error(400, str(exc))
        if "seed" in data:
            self._rng.seed(self.faults.seed)
        logger.info("Faults set: %(faults)s", {"faults": data})
        return _Answer(200, asdict(self.faults))

    def _admin_filters(self, request: Request, body: bytes) -> _Answer:
        try:
            filters, version = _split_filters(self._json(body))
        except ValueError as exc:
            return _error(400, str(exc))
        self._filters_serial += 1
        self.config.filters = filters
        self._filters_version = version or self._version_of(filters)
        return _Answer(200, {"version": self._filters_version, "count": len(filters)})

    def _admin_revoke(self, request: Request, body: bytes) -> _Answer:
        try:
            options = json.loads(body or b"{}")
        except ValueError:
            options = {}
        self.tokens.revoke_all(
            access_only=bool(isinstance(options, dict) and options.get("access_only"))
        )
        return _Answer(200, {"revoked": True})

    def _admin_status(self, request: Request, body: bytes) -> _Answer:
        data = self._json(body)
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return _error(400, "body must be an object with url and status_code")
        code = data.get("status_code")
        if isinstance(code, bool) or code not in _STATUS_BY_CODE:
            return _error(400, f"status_code must be one of {sorted(_STATUS_BY_CODE)}")
        updated = self.store.set_status(data["url"], code)
        if not updated:
            return _error(404, "not_found")
        return _Answer(200, {"updated": updated})

    def _version_of(self, filters: list[dict[str, Any]]) -> str:
        """A new serial on every replacement, plus a digest of the content."""
        digest = hashlib.sha256(json.dumps(filters, sort_keys=True).encode("utf-8")).hexdigest()
        return f"{self._filters_serial}-{digest[:12]}"


def build_site(config: ServerConfig, *, clock: IReactorTime | None = None) -> Site:
    """The server as a Site, to listen on in-process; ``site.resource.store`` holds the data.

    Batches of results are stored on a later turn of ``clock``: advance a fake one to have them
    answered.
    """
    if clock is None:
        from twisted.internet import reactor

        clock = IReactorTime(reactor)
    store = ResultStore(config.db_path)
    site = Site(SDIResource(config, store, clock))
    site.displayTracebacks = False
    return site


# --- command line -------------------------------------------------------------------------------


def _user(value: str) -> tuple[str, str]:
    name, sep, password = value.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError("expected NAME:PASSWORD")
    return name, password


def _argument_type(parser: Callable[[Any], Any]) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            return parser(value)
        except (ValueError, re.error) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = parser.__name__
    return parse


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    """Turn command-line flags into a ServerConfig (``--fail-rate`` sets ``faults.fail_rate``)."""
    parser = argparse.ArgumentParser(
        prog="python -m scrapy_sdi.testing.server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--db", default=":memory:", help="SQLite file for stored results")
    parser.add_argument(
        "--user",
        type=_user,
        action="append",
        default=[],
        metavar="NAME:PASSWORD",
        help="an account; repeatable",
    )
    parser.add_argument(
        "--filters",
        metavar="FILE",
        help="JSON list of filters, or {'version': ..., 'filters': [...]}",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve https with this certificate (chain) file; needs --tls-key",
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    defaults = Faults()
    for name, converter in FAULT_PARSERS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=_argument_type(converter),
            default=getattr(defaults, name),
            metavar=name.split("_")[-1].upper(),
            help=_FAULT_HELP[name],
        )
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    faults = Faults(**{name: getattr(args, name) for name in FAULT_PARSERS})
    filters, version = load_filters(args.filters) if args.filters else ([], None)
    return ServerConfig(
        host=args.host,
        port=args.port,
        db_path=args.db,
        users=dict(args.user),
        filters=filters,
        filters_version=version,
        faults=faults,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM; the one stdout line tells the caller the base URL."""
    from twisted.internet import reactor
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    config = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    if not config.users:
        logger.warning("No --user NAME:PASSWORD given: nobody can log in")
    site = build_site(config, clock=reactor)
    if config.tls_cert and config.tls_key:
        from twisted.internet import ssl

        pem = Path(config.tls_cert).read_bytes() + b"\n" + Path(config.tls_key).read_bytes()
        port = IReactorSSL(reactor).listenSSL(
            config.port, site, ssl.PrivateCertificate.loadPEM(pem).options(), interface=config.host
        )
    else:
        # Twisted's annotations: a Site (ServerFactory of HTTP channels) does not match listenTCP's
        # ServerFactory of its default protocol type (Factory is invariant in it); it is one
        port = reactor.listenTCP(config.port, site, interface=config.host)  # type: ignore[arg-type]
    reactor.addSystemEventTrigger("after", "shutdown", site.resource.store.close)
    scheme = "https" if config.tls_cert else "http"
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address)), address  # listenTCP's, listenSSL's
    url = f"{scheme}://{config.host}:{address.port}{API_PREFIX}"
    sys.stdout.write(f"SDI reference server listening on {url}\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
