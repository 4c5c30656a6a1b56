"""The SQL behind every dashboard page, on read-only connections to the buffer file.

Each page opens its own short read-only connection (``file:...?mode=ro``): in WAL mode a reader
never blocks the crawls writing to the same file, and a read-only connection cannot change it.
Every value reaches SQLite as a bound parameter; sort columns come from allow-lists. The writes,
:func:`requeue` (through the buffer, as ``scrapy sdi requeue``) and the one-time upgrade of a
buffer an older scrapy_sdi wrote, use their own short read-write connections with a busy timeout.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scrapy_sdi.buffer import SCHEMA_VERSION, STATES, BufferFileError, SQLiteBuffer, readonly_uri
from scrapy_sdi.filter_source import CACHE_KEY as FILTERS_CACHE_KEY
from scrapy_sdi.filter_source import cached_filters_info
from scrapy_sdi.requeue import Requeued
from scrapy_sdi.requeue import requeue as requeue_rows

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

#: States a user may look at, export and requeue on the problems page.
PROBLEM_STATES = ("rejected", "invalid")
#: Crawler-table columns a user may sort by -> the SQL expression (never user text).
CRAWLER_SORTS = {
    "crawler": "crawler",
    "buffered": "buffered",
    "delivered": "delivered",
    "rejected": "rejected",
    "invalid": "invalid",
    "filtered": "filtered",
    "pending": "pending",
    "last_delivery": "last_delivery",
}
#: Problem-row columns a user may sort by -> the SQL expression.
ROW_SORTS = {
    "created": "created_at",
    "rejected_at": "delivered_at",
    "attempts": "attempts",
    "crawler": "crawler",
    "url": "url",
    "reason": "reason",
    "state": "state",
}
#: Columns of one row in listings and exports, in order.
ROW_COLUMNS = ("id", "crawler", "url", "state", "attempts", "reason", "last_error", "outcome",
               "created_at", "delivered_at")
#: A row's payload, kept in a table of its own (schema 2).
_PAYLOAD = "(SELECT payload FROM payloads WHERE payloads.rowid = results.rowid)"
_SEARCHED = ("id", "crawler", "url", "reason", "last_error", f"CAST({_PAYLOAD} AS TEXT)")


class BufferUnavailable(Exception):
    """The buffer file cannot be read; the message is one line naming the file and the cause."""


@contextmanager
def open_readonly(path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the buffer file, closed on exit."""
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=busy_timeout, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BufferUnavailable(f"SDI buffer {path} cannot be opened read-only: {exc}") from None
    try:
        conn.execute("PRAGMA query_only = 1")
        yield conn
    finally:
        conn.close()


def check_buffer(path: str | os.PathLike[str]) -> None:
    """Raise BufferUnavailable with one clear line unless ``path`` is a readable SDI buffer."""
    target = Path(path)
    if not target.exists():
        raise BufferUnavailable(f"SDI buffer {target} does not exist; pass the path of a buffer file")
    if not target.is_file():
        raise BufferUnavailable(f"SDI buffer {target} is not a file")
    if not os.access(target, os.R_OK):
        raise BufferUnavailable(f"SDI buffer {target} is not readable by this user")
    try:
        with open_readonly(target) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise BufferUnavailable(f"SDI buffer {target} is not a readable SQLite buffer: {exc}") from None
    if version > SCHEMA_VERSION:
        raise BufferUnavailable(f"SDI buffer {target} has schema {version}, newer than this scrapy_sdi knows: upgrade")
    if not {"results", "meta"} <= tables:
        raise BufferUnavailable(f"SDI buffer {target} has no scrapy_sdi tables (results, meta): not an SDI buffer")
    if version < SCHEMA_VERSION:
        _upgrade(target)


def _upgrade(path: Path) -> None:
    """Bring a buffer of an older scrapy_sdi to this schema, as the next crawl on it would."""
    try:
        SQLiteBuffer(path).close()
    except BufferFileError as exc:
        raise BufferUnavailable(f"{exc} (its schema is older than this scrapy_sdi's and must be upgraded once)") from None


# -- overview -------------------------------------------------------------------------------


def state_totals(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per state, every state present (zero included)."""
    totals = dict.fromkeys(STATES, 0)
    for state, n in conn.execute("SELECT state, count(*) FROM results GROUP BY state"):
        totals[state] = n
    return totals


def oldest_pending_age(conn: sqlite3.Connection, now: float | None = None) -> float | None:
    """Seconds since the oldest pending or in-flight row was buffered; None when there is none."""
    (oldest,) = conn.execute(
        "SELECT min(created_at) FROM results WHERE state IN ('pending', 'in_flight')"
    ).fetchone()
    if oldest is None:
        return None
    return max(0.0, (time.time() if now is None else now) - oldest)


def file_sizes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of the buffer file and of its write-ahead log (0 when there is none)."""
    wal = Path(str(path) + "-wal")
    return {"file": Path(path).stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}


def filters_info(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """Version, count and fetch time of the cached filters; None when none are cached."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (FILTERS_CACHE_KEY,)).fetchone()
    return cached_filters_info(None if row is None else row[0])


@dataclass(frozen=True)
class Page:
    """One page of a listing: its rows, the number of matching rows, and where it is."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))


def crawler_table(
    conn: sqlite3.Connection, *, sort: str = "crawler", descending: bool = False, page: int = 1, per_page: int = 25
) -> Page:
    """Per crawler: buffered (all rows), delivered, rejected, invalid, filtered, pending (with
    in flight) and the time of the last delivery; sorted by an allow-listed column."""
    column = _allowed(sort, CRAWLER_SORTS, "sort")
    order = "DESC" if descending else "ASC"
    (total,) = conn.execute("SELECT count(DISTINCT crawler) FROM results").fetchone()
    cursor = conn.execute(
        "SELECT crawler, count(*) AS buffered, "
        "sum(state = 'delivered') AS delivered, sum(state = 'rejected') AS rejected, "
        "sum(state = 'invalid') AS invalid, sum(state = 'filtered') AS filtered, "
        "sum(state IN ('pending', 'in_flight')) AS pending, "
        "max(CASE WHEN state = 'delivered' THEN delivered_at END) AS last_delivery "
        f"FROM results GROUP BY crawler ORDER BY {column} {order} NULLS LAST, crawler LIMIT ? OFFSET ?",
        (per_page, (page - 1) * per_page),
    )
    return Page(_dicts(cursor), total, page, per_page)


# -- throughput -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    """Delivered and rejected rows per bucket of ``bucket`` seconds from ``start`` (aligned)."""

    start: float
    bucket: int
    delivered: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)

    @property
    def minutes_per_bucket(self) -> int:
        return self.bucket // 60


def throughput(conn: sqlite3.Connection, since: float, until: float, *, max_buckets: int = 360) -> Throughput:
    """Outcomes per minute between two unix times, from ``delivered_at`` (also set on rejection).

    When the span has more than ``max_buckets`` minutes, buckets grow to whole multiples of a
    minute so the chart stays readable; the counts are then per bucket.
    """
    minutes = max(1, math.ceil((until - since) / 60))
    bucket = 60 * max(1, math.ceil(minutes / max_buckets))
    start = math.floor(since / bucket) * bucket
    n = max(1, math.ceil((until - start) / bucket))
    delivered, rejected = [0] * n, [0] * n
    cursor = conn.execute(
        "SELECT CAST((delivered_at - :start) / :bucket AS INTEGER) AS slot, state, count(*) FROM results "
        "WHERE state IN ('delivered', 'rejected') AND delivered_at >= :start AND delivered_at < :until "
        "GROUP BY slot, state",
        {"start": start, "bucket": bucket, "until": start + n * bucket},
    )
    for slot, state, count in cursor:
        if 0 <= slot < n:
            (delivered if state == "delivered" else rejected)[slot] += count
    return Throughput(start, bucket, delivered, rejected)


def first_outcome_time(conn: sqlite3.Connection) -> float | None:
    (first,) = conn.execute(
        "SELECT min(delivered_at) FROM results WHERE state IN ('delivered', 'rejected')"
    ).fetchone()
    return first


# -- rows -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which rows a listing or an export covers: states, crawler, search text and order."""

    states: tuple[str, ...] = PROBLEM_STATES
    crawler: str | None = None
    search: str = ""
    sort: str = "created"
    descending: bool = True

    def where(self) -> tuple[str, list[Any]]:
        for state in self.states:
            if state not in STATES:
                raise ValueError(f"state: {state!r} is not one of {', '.join(STATES)}")
        clauses = [f"state IN ({','.join('?' * len(self.states))})"]
        params: list[Any] = list(self.states)
        if self.crawler:
            clauses.append("crawler = ?")
            params.append(self.crawler)
        if self.search:
            pattern = "%" + _escape_like(self.search) + "%"
            clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED) + ")")
            params.extend([pattern] * len(_SEARCHED))
        return " AND ".join(clauses), params

    def order(self) -> str:
        column = _allowed(self.sort, ROW_SORTS, "sort")
        return f"{column} {'DESC' if self.descending else 'ASC'} NULLS LAST, rowid {'DESC' if self.descending else 'ASC'}"


def rows_page(conn: sqlite3.Connection, selection: Selection, *, page: int = 1, per_page: int = 50) -> Page:
    """One page of the rows a selection covers (without their payloads)."""
    where, params = selection.where()
    order = selection.order()
    (total,) = conn.execute(f"SELECT count(*) FROM results WHERE {where}", params).fetchone()
    cursor = conn.execute(
        f"SELECT {', '.join(ROW_COLUMNS)} FROM results WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
        (*params, per_page, (page - 1) * per_page),
    )
    return Page(_dicts(cursor), total, page, per_page)


def iter_selection(conn: sqlite3.Connection, selection: Selection) -> Iterator[dict[str, Any]]:
    """Every row of a selection, payload included (as text), for the downloads."""
    where, params = selection.where()
    cursor = conn.execute(
        f"SELECT {', '.join(ROW_COLUMNS)}, {_PAYLOAD} AS payload FROM results WHERE {where} ORDER BY {selection.order()}",
        params,
    )
    for row in _dicts(cursor):
        row["payload"] = payload_text(row["payload"])
        yield row


def row_detail(conn: sqlite3.Connection, row_id: str) -> dict[str, Any] | None:
    """Everything the buffer knows about one row, or None."""
    cursor = conn.execute(
        f"SELECT {', '.join(ROW_COLUMNS)}, ready_at, lease_owner, lease_until, {_PAYLOAD} AS payload "
        "FROM results WHERE id = ?",
        (row_id,),
    )
    rows = _dicts(cursor)
    if not rows:
        return None
    row = rows[0]
    row["payload"] = payload_text(row["payload"], pretty=True)
    return row


def payload_text(payload: bytes | str | None, *, pretty: bool = False) -> str:
    """A payload as text: pretty JSON when it is JSON, else the bytes decoded leniently."""
    if payload is None:
        return ""
    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    if pretty:
        try:
            return orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode("utf-8")
        except orjson.JSONDecodeError:
            pass
    return raw.decode("utf-8", errors="replace")


def delivered_page(
    conn: sqlite3.Connection, *, crawler: str | None = None, search: str = "", page: int = 1, per_page: int = 50
) -> Page:
    """Delivered rows, newest first, for the remote status page."""
    selection = Selection(states=("delivered",), crawler=crawler, search=search, sort="rejected_at")
    return rows_page(conn, selection, page=page, per_page=per_page)


def crawler_names(conn: sqlite3.Connection) -> list[str]:
    return [name for (name,) in conn.execute("SELECT DISTINCT crawler FROM results ORDER BY crawler")]


# -- the one write --------------------------------------------------------------------------


def requeue(
    path: str | os.PathLike[str],
    ids: Sequence[str],
    *,
    field_map: Mapping[str, str] | None = None,
    dedup: bool = True,
    busy_timeout: float = 10.0,
) -> Requeued:
    """Put the given rejected rows back to pending, and the given invalid rows once mapped again.

    The same path as ``scrapy sdi requeue`` (:func:`scrapy_sdi.requeue.requeue`), on a short
    read-write connection whose ``BEGIN IMMEDIATE`` waits on the busy timeout for a crawl's write.
    Rows in any other state are left alone, so a stale page cannot resend a delivered row.
    """
    ids = list(dict.fromkeys(ids))
    if not ids:
        return Requeued(0)
    buffer = SQLiteBuffer(path, busy_timeout=busy_timeout)
    try:
        rejected = requeue_rows(buffer, "rejected", ids=ids)
        invalid = requeue_rows(buffer, "invalid", field_map=field_map, dedup=dedup, ids=ids)
    finally:
        buffer.close()
    return Requeued(rejected.requeued + invalid.requeued, invalid.still_invalid)


# -- helpers --------------------------------------------------------------------------------


def _allowed(key: str, allowed: dict[str, str], name: str) -> str:
    if key not in allowed:
        raise ValueError(f"{name}: {key!r} is not one of {', '.join(allowed)}")
    return allowed[key]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
