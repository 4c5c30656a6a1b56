"""The viewer's read-only queries on a PostgreSQL buffer: the same answers as :class:`SQLiteReader`.

The schema belongs to :mod:`scrapy_sdi.buffer_postgres`; this module only reads it, on a
connection of its own whose transactions are read-only (``default_transaction_read_only``), so a
dashboard page or a check can never change the rows a fleet delivers. It never creates the
schema either: a database no crawl has used yet reads as schema 0 with no rows. Its errors leave
it typed (BufferLocked when the server is unreachable or busy, BufferFileError otherwise), one
line, the URL's password masked.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from scrapy_sdi.buffer import STATES, BufferFault, BufferFileError, BufferLocked
from scrapy_sdi.buffer_postgres import _secrets, display_url, readable_url
from scrapy_sdi.buffer_queries import (
    CRAWLER_SORTS,
    ROW_COLUMNS,
    SEARCHED,
    BufferReader,
    Selection,
    allowed,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import psycopg

_TABLES = ("sdi_results", "sdi_meta", "sdi_owners", "sdi_schema")
_SEARCHED_PG = (*SEARCHED, "convert_from(payload, 'UTF8')")


class PostgresReader(BufferReader):
    """One read-only connection to a PostgreSQL buffer and the queries a viewer runs on it."""

    def __init__(self, conn: psycopg.Connection[Any], url: str) -> None:
        self._conn = conn
        self._url = url

    @classmethod
    def connect(cls, url: str, *, connect_timeout: float = 10.0) -> PostgresReader:
        """A reader of the database at ``url``; BufferLocked (one line, password masked) when it
        cannot be reached. Close it after."""
        try:
            import psycopg
        except ImportError:
            raise BufferFileError(
                "SDI_BUFFER = 'postgres' needs psycopg 3: pip install 'scrapy_sdi[postgres]'"
            ) from None
        readable_url(url)
        try:
            conn = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, int(connect_timeout)),
                application_name="scrapy_sdi reader",
            )
        except psycopg.Error as exc:
            raise BufferLocked(
                f"PostgreSQL at {display_url(url)} unreachable: {_text(exc, url)}"
            ) from None
        try:
            # set after connecting, so that an options= the URL gives (search_path...) stays
            conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            conn.close()
            raise BufferLocked(f"PostgreSQL at {display_url(url)}: {_text(exc, url)}") from None
        return cls(conn, url)

    @property
    def location(self) -> str:
        return display_url(self._url)

    def close(self) -> None:
        import psycopg

        with suppress(psycopg.Error):  # a broken connection may fail to close; it is gone
            self._conn.close()

    def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise self._typed(exc) from None

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        import psycopg

        try:
            with self._conn.cursor() as cur:
                cur.execute(sql, params)
                names = [d.name for d in cur.description or ()]
                found = cur.fetchall()
        except psycopg.Error as exc:
            raise self._typed(exc) from None
        rows = [dict(zip(names, row, strict=True)) for row in found]
        for row in rows:
            if row.get("payload") is not None:
                row["payload"] = bytes(row["payload"])
        return rows

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        ((value,),) = self._rows(sql, params)
        return value

    def _typed(self, exc: Exception) -> BufferFault:
        import psycopg

        text = f"PostgreSQL at {self.location}: {_text(exc, self._url)}"
        if self._conn.closed or self._conn.broken or isinstance(exc, psycopg.OperationalError):
            return BufferLocked(text)
        return BufferFileError(text)

    def _has_schema(self) -> bool:
        return self._one("SELECT to_regclass('sdi_results') IS NOT NULL") is True

    # -- the store ----------------------------------------------------------------------------

    def schema(self) -> tuple[int, set[str]]:
        """The version in ``sdi_schema`` (0 before the first crawl) and the buffer's tables there."""
        tables = {
            name
            for (name,) in self._rows(
                "SELECT c.relname FROM pg_class c WHERE c.relkind IN ('r', 'p') "
                "AND c.relname = ANY(%s) AND pg_table_is_visible(c.oid)",
                (list(_TABLES),),
            )
        }
        if "sdi_schema" not in tables:
            return 0, tables
        return int(self._one("SELECT coalesce(max(version), 0) FROM sdi_schema")), tables

    def server(self) -> str:
        return f"PostgreSQL {self._one('SHOW server_version')}"

    def sizes(self) -> dict[str, int]:
        """The buffer's tables and their indexes on the server (``wal`` is the server's, not shown)."""
        size = self._one(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p') AND pg_table_is_visible(c.oid)",
            (list(_TABLES),),
        )
        return {"file": int(size), "wal": 0}

    def meta(self, key: str) -> str | None:
        if self._one("SELECT to_regclass('sdi_meta') IS NULL"):
            return None
        rows = self._rows("SELECT value FROM sdi_meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    # -- overview -----------------------------------------------------------------------------

    def state_totals(self) -> dict[str, int]:
        totals = dict.fromkeys(STATES, 0)
        if self._has_schema():
            totals.update(self._rows("SELECT state, count(*)::int FROM sdi_results GROUP BY state"))
        return totals

    def oldest_waiting(self) -> float | None:
        if not self._has_schema():
            return None
        return self._one(
            "SELECT min(created_at) FROM sdi_results WHERE state IN ('pending', 'in_flight')"
        )

    def crawler_count(self) -> int:
        if not self._has_schema():
            return 0
        return int(self._one("SELECT count(DISTINCT crawler) FROM sdi_results"))

    def crawler_rows(
        self, sort: str, *, descending: bool, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        column = allowed(sort, CRAWLER_SORTS, "sort")
        if not self._has_schema():
            return []
        order = "DESC" if descending else "ASC"
        return self._dicts(
            "SELECT crawler, count(*)::int AS buffered, "
            "count(*) FILTER (WHERE state = 'delivered')::int AS delivered, "
            "count(*) FILTER (WHERE state = 'rejected')::int AS rejected, "
            "count(*) FILTER (WHERE state = 'invalid')::int AS invalid, "
            "count(*) FILTER (WHERE state = 'filtered')::int AS filtered, "
            "count(*) FILTER (WHERE state IN ('pending', 'in_flight'))::int AS pending, "
            "max(delivered_at) FILTER (WHERE state = 'delivered') AS last_delivery "
            f"FROM sdi_results GROUP BY crawler ORDER BY {column} {order} NULLS LAST, crawler "
            "LIMIT %s OFFSET %s",
            (limit, offset),
        )

    def crawler_names(self) -> list[str]:
        if not self._has_schema():
            return []
        return [
            name
            for (name,) in self._rows("SELECT DISTINCT crawler FROM sdi_results ORDER BY crawler")
        ]

    # -- throughput ---------------------------------------------------------------------------

    def outcomes_per_bucket(
        self, start: float, bucket: int, until: float
    ) -> list[tuple[int, str, int]]:
        if not self._has_schema():
            return []
        return [
            (int(slot), state, int(n))
            for slot, state, n in self._rows(
                "SELECT floor((delivered_at - %(start)s) / %(bucket)s)::int AS slot, state, count(*) "
                "FROM sdi_results WHERE state IN ('delivered', 'rejected') "
                "AND delivered_at >= %(start)s AND delivered_at < %(until)s GROUP BY slot, state",
                {"start": start, "bucket": bucket, "until": until},
            )
        ]

    def first_outcome_time(self) -> float | None:
        if not self._has_schema():
            return None
        return self._one(
            "SELECT min(delivered_at) FROM sdi_results WHERE state IN ('delivered', 'rejected')"
        )

    # -- rows ---------------------------------------------------------------------------------

    def count(self, selection: Selection) -> int:
        where, params = _where(selection)
        if not self._has_schema():
            return 0
        return int(self._one(f"SELECT count(*) FROM sdi_results WHERE {where}", params))

    def rows(self, selection: Selection, *, limit: int, offset: int) -> list[dict[str, Any]]:
        where, params = _where(selection)
        order = _order(selection)
        if not self._has_schema():
            return []
        return self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)} FROM sdi_results WHERE {where} ORDER BY {order} "
            "LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )

    def rows_with_payloads(self, selection: Selection) -> list[dict[str, Any]]:
        where, params = _where(selection)
        order = _order(selection)
        if not self._has_schema():
            return []
        return self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)}, payload FROM sdi_results WHERE {where} ORDER BY {order}",
            params,
        )

    def row(self, row_id: str) -> dict[str, Any] | None:
        if not self._has_schema():
            return None
        rows = self._dicts(
            f"SELECT {', '.join(ROW_COLUMNS)}, ready_at, lease_owner, lease_until, payload "
            "FROM sdi_results WHERE id = %s ORDER BY seq DESC LIMIT 1",
            (row_id,),
        )
        return rows[0] if rows else None


def _where(selection: Selection) -> tuple[str, list[Any]]:
    clauses = ["state = ANY(%s)"]
    params: list[Any] = [list(selection.checked_states())]
    if selection.crawler:
        clauses.append("crawler = %s")
        params.append(selection.crawler)
    if selection.search:
        # ILIKE: case-insensitive as SQLite's LIKE is; the pattern's wildcards are escaped
        clauses.append("(" + " OR ".join(f"{c} ILIKE %s ESCAPE '\\'" for c in _SEARCHED_PG) + ")")
        params.extend([selection.pattern()] * len(_SEARCHED_PG))
    return " AND ".join(clauses), params


def _order(selection: Selection) -> str:
    direction = selection.direction
    return f"{selection.sort_column()} {direction} NULLS LAST, seq {direction}"


def _text(exc: BaseException, url: str) -> str:
    """The driver's message on one line, without the URL's passwords."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text
