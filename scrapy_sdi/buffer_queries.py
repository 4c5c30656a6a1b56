"""Named read-only queries on a buffer: what the dashboard and ``scrapy sdi check`` show, with none of their SQL.

The schema has one owner per backend (:mod:`scrapy_sdi.buffer`, :mod:`scrapy_sdi.buffer_postgres`:
tables, migrations, every write); a :class:`BufferReader` holds the reads that only a viewer
needs: listings with search, sorting and pages, outcomes per time bucket, one row with its
history. :class:`SQLiteReader` is a short read-only connection to a buffer file (``mode=ro`` and
``query_only``): in WAL mode it never blocks the crawls writing the same file and cannot change
it; the PostgreSQL reader lives beside its backend (:mod:`scrapy_sdi.buffer_postgres_queries`).
:func:`open_reader` opens the one ``SDI_BUFFER`` names. Every value reaches the database as a
bound parameter; the columns to sort by come from allow-lists. Errors leave a reader typed
(:mod:`scrapy_sdi.buffer`).
"""

from __future__ import annotations

import os
import sqlite3
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_sdi.buffer import STATES, BufferFault, BufferFileError, readonly_uri, sqlite_errors

if TYPE_CHECKING:
    from collections.abc import Sequence

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
ROW_COLUMNS = (
    "id",
    "crawler",
    "url",
    "state",
    "attempts",
    "reason",
    "last_error",
    "outcome",
    "created_at",
    "delivered_at",
)
#: Text columns a search looks in (the payload too, as text, added by each backend).
SEARCHED = ("id", "crawler", "url", "reason", "last_error")
#: A row's payload, kept in a table of its own (schema 2).
_PAYLOAD = "(SELECT payload FROM payloads WHERE payloads.rowid = results.rowid)"
_SEARCHED = (*SEARCHED, f"CAST({_PAYLOAD} AS TEXT)")


@dataclass(frozen=True)
class Selection:
    """Which rows a listing or an export covers: states, crawler, search text and order."""

    states: tuple[str, ...] = PROBLEM_STATES
    crawler: str | None = None
    search: str = ""
    sort: str = "created"
    descending: bool = True

    def checked_states(self) -> tuple[str, ...]:
        """The states, each one of the buffer's (ValueError otherwise)."""
        for state in self.states:
            if state not in STATES:
                raise ValueError(f"state: {state!r} is not one of {', '.join(STATES)}")
        return self.states

    def sort_column(self) -> str:
        """The column to sort by (allow-listed; ValueError otherwise)."""
        return allowed(self.sort, ROW_SORTS, "sort")

    @property
    def direction(self) -> str:
        return "DESC" if self.descending else "ASC"

    def pattern(self) -> str:
        """The search text as a LIKE pattern, its wildcards taken literally (escape ``\\``)."""
        return "%" + escape_like(self.search) + "%"


class BufferReader(ABC):
    """The read-only queries a viewer runs on a buffer, whatever holds it. Close it after."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the rows are, for messages and page headers (no password)."""

    @abstractmethod
    def close(self) -> None: ...

    # -- the store ---------------------------------------------------------------------------

    @abstractmethod
    def schema(self) -> tuple[int, set[str]]:
        """The schema version (0: none yet) and the tables there."""

    @abstractmethod
    def server(self) -> str:
        """The database engine and its version, e.g. ``PostgreSQL 16.4``."""

    @abstractmethod
    def sizes(self) -> dict[str, int]:
        """Bytes stored: ``file`` (the file, or the tables and indexes) and ``wal`` (0 when none)."""

    @abstractmethod
    def meta(self, key: str) -> str | None: ...

    # -- overview ----------------------------------------------------------------------------

    @abstractmethod
    def state_totals(self) -> dict[str, int]:
        """Rows per state, every state present (zero included)."""

    @abstractmethod
    def oldest_waiting(self) -> float | None:
        """When the oldest pending or in-flight row was buffered; None when there is none."""

    @abstractmethod
    def crawler_count(self) -> int: ...

    @abstractmethod
    def crawler_rows(
        self, sort: str, *, descending: bool, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Per crawler: buffered (all rows), delivered, rejected, invalid, filtered, pending (with
        in flight) and the time of the last delivery; sorted by an allow-listed column."""

    @abstractmethod
    def crawler_names(self) -> list[str]: ...

    # -- throughput --------------------------------------------------------------------------

    @abstractmethod
    def outcomes_per_bucket(
        self, start: float, bucket: int, until: float
    ) -> list[tuple[int, str, int]]:
        """(bucket number, state, rows) of delivered and rejected rows from ``start`` to ``until``,
        by ``delivered_at`` (also set on rejection)."""

    @abstractmethod
    def first_outcome_time(self) -> float | None: ...

    # -- rows --------------------------------------------------------------------------------

    @abstractmethod
    def count(self, selection: Selection) -> int: ...

    @abstractmethod
    def rows(self, selection: Selection, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """The rows a selection covers, in its order, without their payloads."""

    @abstractmethod
    def rows_with_payloads(self, selection: Selection) -> list[dict[str, Any]]:
        """Every row a selection covers, payload (bytes) included, for the downloads."""

    @abstractmethod
    def row(self, row_id: str) -> dict[str, Any] | None:
        """Everything the buffer knows about one row (payload as stored), or None."""


def open_reader(settings: Any) -> BufferReader:
    """A reader of the buffer ``settings`` (SDISettings) name; BufferFault (one line) when it
    cannot be opened. A SQLite file must exist: a reader creates nothing."""
    from scrapy_sdi.buffer_postgres import uses_postgres

    if uses_postgres(settings):
        from scrapy_sdi.buffer_postgres_queries import PostgresReader

        return PostgresReader.connect(settings.buffer_url)
    if settings.buffer == "sqlite":
        return SQLiteReader.connect(settings.buffer_path)
    raise BufferFileError(
        f"SDI_BUFFER: {settings.buffer!r} has no reader; only 'sqlite' and 'postgres' buffers can be viewed"
    )


class SQLiteReader(BufferReader):
    """One read-only connection to a buffer file and the queries a viewer runs on it."""

    def __init__(self, conn: sqlite3.Connection, path: str | os.PathLike[str] = "") -> None:
        self._conn = conn
        self._path = str(path)

    @classmethod
    def connect(cls, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> SQLiteReader:
        """A reader of the file at ``path``; BufferFileError when it cannot be opened. Close it after."""
        try:
            conn = sqlite3.connect(
                readonly_uri(path), uri=True, timeout=busy_timeout, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise BufferFileError(f"SDI buffer {path} cannot be opened read-only: {exc}") from None
        try:
            with sqlite_errors():
                conn.execute("PRAGMA query_only = 1")
        except BufferFault:
            conn.close()
            raise
        return cls(conn, path)

    @property
    def location(self) -> str:
        return self._path

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        with sqlite_errors():
            return self._conn.execute(sql, params).fetchall()

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with sqlite_errors():
            cursor = self._conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        ((value,),) = self._rows(sql, params)
        return value

    # -- the file ---------------------------------------------------------------------------

    def schema(self) -> tuple[int, set[str]]:
        """The file's schema version and its tables (an SDI buffer has ``results`` and ``meta``)."""
        version = self._one("PRAGMA user_version")
        return version, {
            name for (name,) in self._rows("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    def server(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def sizes(self) -> dict[str, int]:
        """Bytes of the buffer file and of its write-ahead log (0 when there is none)."""
        wal = Path(self._path + "-wal")
        return {
            "file": Path(self._path).stat().st_size,
            "wal": wal.stat().st_size if wal.exists() else 0,
        }

    def meta(self, key: str) -> str | None:
        rows = self._rows("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    # -- overview ---------------------------------------------------------------------------

    def state_totals(self) -> dict[str, int]:
        """Rows per state, every state present (zero included)."""
        totals = dict.fromkeys(STATES, 0)
        totals.update(self._rows("SELECT state, count(*) FROM results GROUP BY state"))
        return totals

    def oldest_waiting(self) -> float | None:
        """When the oldest pending or in-flight row was buffered; None when there is none."""
        return self._one(
            "SELECT min(created_at) FROM results WHERE state IN ('pending', 'in_flight')"
        )

    def crawler_count(self) -> int:
        return self._one("SELECT count(DISTINCT crawler) FROM results")

    def crawler_rows(
        self, sort: str, *, descending: bool, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        """Per crawler: buffered (all rows), delivered, rejected, invalid, filtered, pending (with
        in flight) and the time of the last delivery; sorted by an allow-listed column."""
        column = allowed(sort, CRAWLER_SORTS, "sort")
        order = "DESC" if descending else "ASC"
        return self._dicts(
            "SELECT crawler, count(*) AS buffered, "
            "sum(state = 'delivered') AS delivered, sum(state = 'rejected') AS rejected, "
            "sum(state = 'invalid') AS invalid, sum(state = 'filtered') AS filtered, "
            "sum(state IN ('pending', 'in_flight')) AS pending, "
            "max(CASE WHEN state = 'delivered' THEN delivered_at END) AS last_delivery "
            f"FROM results GROUP BY crawler ORDER BY {column} {order} NULLS LAST, crawler LIMIT ? OFFSET ?",
            (limit, offset),
        )

    def crawler_names(self) -> list[str]:
        return [
            name for (name,) in self._rows("SELECT DISTINCT crawler FROM results ORDER BY crawler")
        ]

    # -- throughput -------------------------------------------------------------------------

    def outcomes_per_bucket(
        self, start: float, bucket: int, until: float
    ) -> list[tuple[int, str, int]]:
        """(bucket number, state, rows) of delivered and rejected rows from ``start`` to ``until``,
        by ``delivered_at`` (also set on rejection)."""
        return self._rows(
            "SELECT CAST((delivered_at - :start) / :bucket AS INTEGER) AS slot, state, count(*) FROM results "
            "WHERE state IN ('delivered', 'rejected') AND delivered_at >= :start AND delivered_at < :until "
            "GROUP BY slot, state",
            {"start": start, "bucket": bucket, "until": until},
        )

    def first_outcome_time(self) -> float | None:
        return self._one(
            "SELECT min(delivered_at) FROM results WHERE state IN ('delivered', 'rejected')"
        )

    # -- rows -------------------------------------------------------------------------------

    def count(self, selection: Selection) -> int:
        where, params = _where(selection)
        return self._one(f"SELECT count(*) FROM results WHERE {where}", params)

    def rows(self, selection: Selection, *, limit: int, offset: int) -> list[dict[str, Any]]:
        """The rows a selection covers, in its order, without their payloads."""
        where, params = _where(selection)
        return self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)} FROM results WHERE {where} ORDER BY {_order(selection)} LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )

    def rows_with_payloads(self, selection: Selection) -> list[dict[str, Any]]:
        """Every row a selection covers, payload (bytes) included, for the downloads."""
        where, params = _where(selection)
        return self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)}, {_PAYLOAD} AS payload FROM results WHERE {where} ORDER BY {_order(selection)}",
            params,
        )

    def row(self, row_id: str) -> dict[str, Any] | None:
        """Everything the buffer knows about one row (payload as stored), or None."""
        rows = self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)}, ready_at, lease_owner, lease_until, {_PAYLOAD} AS payload "
            "FROM results WHERE id = ?",
            (row_id,),
        )
        return rows[0] if rows else None


def _where(selection: Selection) -> tuple[str, list[Any]]:
    states = selection.checked_states()
    clauses = [f"state IN ({','.join('?' * len(states))})"]
    params: list[Any] = list(states)
    if selection.crawler:
        clauses.append("crawler = ?")
        params.append(selection.crawler)
    if selection.search:
        clauses.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in _SEARCHED) + ")")
        params.extend([selection.pattern()] * len(_SEARCHED))
    return " AND ".join(clauses), params


def _order(selection: Selection) -> str:
    direction = selection.direction
    return f"{selection.sort_column()} {direction} NULLS LAST, rowid {direction}"


def allowed(key: str, choices: dict[str, str], name: str) -> str:
    """The SQL expression an allow-listed key stands for; ValueError naming the choices otherwise."""
    if key not in choices:
        raise ValueError(f"{name}: {key!r} is not one of {', '.join(choices)}")
    return choices[key]


def escape_like(text: str) -> str:
    """``text`` inside a LIKE pattern with ``ESCAPE '\\'``: its ``%``, ``_`` and ``\\`` taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
