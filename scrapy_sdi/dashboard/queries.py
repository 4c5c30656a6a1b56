"""What every dashboard page reads from the buffer, through its named read-only queries.

Each page opens its own short reader (:class:`scrapy_sdi.buffer_queries.BufferReader`, a
read-only connection to the SQLite file or the PostgreSQL database, see :class:`Source`): a
reader never blocks the crawls writing to the same buffer, and cannot change it. The SQL, its
allow-lists of sort columns and its bound parameters live with the schema in the buffer modules;
this module shapes their answers into pages and charts. The writes, :func:`requeue` (through the
buffer, as ``scrapy sdi requeue``) and the one-time upgrade of a buffer an older scrapy_sdi
wrote, open the buffer read-write for a moment.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scrapy_sdi.buffer import (
    SCHEMA_VERSION,
    BufferFault,
    BufferFileError,
    SQLiteBuffer,
    open_buffer,
)
from scrapy_sdi.buffer_queries import (
    CRAWLER_SORTS,
    PROBLEM_STATES,
    ROW_COLUMNS,
    ROW_SORTS,
    BufferReader,
    Selection,
    SQLiteReader,
    open_reader,
)
from scrapy_sdi.filter_source import CACHE_KEY as FILTERS_CACHE_KEY
from scrapy_sdi.filter_source import cached_filters_info
from scrapy_sdi.requeue import Requeued
from scrapy_sdi.requeue import requeue as requeue_rows

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from scrapy_sdi.buffer import Buffer
    from scrapy_sdi.settings import SDISettings

__all__ = [
    "CRAWLER_SORTS",
    "PROBLEM_STATES",
    "ROW_COLUMNS",
    "ROW_SORTS",
    "BufferUnavailable",
    "Page",
    "Selection",
    "Source",
    "Throughput",
    "check_buffer",
    "crawler_names",
    "crawler_table",
    "delivered_page",
    "file_sizes",
    "filters_info",
    "first_outcome_time",
    "iter_selection",
    "oldest_pending_age",
    "open_readonly",
    "payload_text",
    "requeue",
    "requeue_in",
    "row_detail",
    "rows_page",
    "sizes",
    "state_totals",
    "throughput",
]


class BufferUnavailable(Exception):
    """The buffer cannot be read; the message is one line naming the buffer and the cause."""


@contextmanager
def open_readonly(
    path: str | os.PathLike[str], *, busy_timeout: float = 5.0
) -> Iterator[BufferReader]:
    """A reader of the buffer file, closed on exit."""
    try:
        reader = SQLiteReader.connect(path, busy_timeout=busy_timeout)
    except BufferFault as exc:
        raise BufferUnavailable(str(exc)) from None
    try:
        yield reader
    finally:
        reader.close()


class Source:
    """The buffer a dashboard shows (SDI_BUFFER: a SQLite file or a PostgreSQL database), opened
    anew for each page; ``location`` names it without its password."""

    def __init__(self, settings: SDISettings) -> None:
        from scrapy_sdi.buffer_postgres import uses_postgres

        self.postgres = uses_postgres(settings)
        if settings.buffer != "sqlite" and not self.postgres:
            raise BufferUnavailable(
                f"SDI_BUFFER is {settings.buffer!r}: the dashboard reads a 'sqlite' or 'postgres' buffer"
            )
        self._settings = settings
        self.location = str(settings.buffer_path)
        if self.postgres:
            from scrapy_sdi.buffer_postgres import display_url

            self.location = display_url(settings.buffer_url)

    def check(self) -> None:
        """Raise BufferUnavailable with one clear line unless the buffer can be read."""
        if not self.postgres:
            check_buffer(self._settings.buffer_path)
            return
        from scrapy_sdi.buffer_postgres import SCHEMA_VERSION as PG_SCHEMA

        with self.reader() as reader:
            version, _ = reader.schema()
        if version > PG_SCHEMA:
            raise BufferUnavailable(
                f"SDI buffer {self.location} has schema {version}, newer than this scrapy_sdi knows: upgrade"
            )

    @contextmanager
    def reader(self) -> Iterator[BufferReader]:
        """A read-only reader of the buffer, closed on exit."""
        if not self.postgres:
            with open_readonly(self._settings.buffer_path) as sqlite_reader:
                yield sqlite_reader
            return
        try:
            reader = open_reader(self._settings)
        except BufferFault as exc:
            raise BufferUnavailable(str(exc)) from None
        try:
            yield reader
        finally:
            reader.close()

    def metrics_buffer(self) -> Buffer:
        """The buffer the metrics read, opened read-only (a file, or the database)."""
        if not self.postgres:
            return SQLiteBuffer(self._settings.buffer_path, readonly=True, busy_timeout=5.0)
        from scrapy_sdi.buffer_postgres import PostgresBuffer

        return PostgresBuffer(self._settings.buffer_url, readonly=True)

    def writable(self) -> Buffer:
        """The buffer opened read-write for one action (a file's write waits its busy timeout)."""
        if not self.postgres:
            return SQLiteBuffer(self._settings.buffer_path, busy_timeout=10.0)
        return open_buffer(self._settings)


def check_buffer(path: str | os.PathLike[str]) -> None:
    """Raise BufferUnavailable with one clear line unless ``path`` is a readable SDI buffer."""
    target = Path(path)
    if not target.exists():
        raise BufferUnavailable(
            f"SDI buffer {target} does not exist; pass the path of a buffer file"
        )
    if not target.is_file():
        raise BufferUnavailable(f"SDI buffer {target} is not a file")
    if not os.access(target, os.R_OK):
        raise BufferUnavailable(f"SDI buffer {target} is not readable by this user")
    try:
        with open_readonly(target) as reader:
            version, tables = reader.schema()
    except BufferFault as exc:
        raise BufferUnavailable(
            f"SDI buffer {target} is not a readable SQLite buffer: {exc}"
        ) from None
    if version > SCHEMA_VERSION:
        raise BufferUnavailable(
            f"SDI buffer {target} has schema {version}, newer than this scrapy_sdi knows: upgrade"
        )
    if not {"results", "meta"} <= tables:
        raise BufferUnavailable(
            f"SDI buffer {target} has no scrapy_sdi tables (results, meta): not an SDI buffer"
        )
    if version < SCHEMA_VERSION:
        _upgrade(target)


def _upgrade(path: Path) -> None:
    """Bring a buffer of an older scrapy_sdi to this schema, as the next crawl on it would."""
    try:
        SQLiteBuffer(path).close()
    except BufferFileError as exc:
        raise BufferUnavailable(
            f"{exc} (its schema is older than this scrapy_sdi's and must be upgraded once)"
        ) from None


# -- overview -------------------------------------------------------------------------------


def state_totals(reader: BufferReader) -> dict[str, int]:
    """Rows per state, every state present (zero included)."""
    return reader.state_totals()


def oldest_pending_age(reader: BufferReader, now: float | None = None) -> float | None:
    """Seconds since the oldest pending or in-flight row was buffered; None when there is none."""
    oldest = reader.oldest_waiting()
    if oldest is None:
        return None
    return max(0.0, (time.time() if now is None else now) - oldest)


def file_sizes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Bytes of the buffer file and of its write-ahead log (0 when there is none)."""
    wal = Path(str(path) + "-wal")
    return {"file": Path(path).stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}


def sizes(reader: BufferReader) -> dict[str, int]:
    """Bytes the buffer holds (``file``) and its write-ahead log (``wal``, 0 when none is shown)."""
    return reader.sizes()


def filters_info(reader: BufferReader) -> dict[str, Any] | None:
    """Version, count and fetch time of the cached filters; None when none are cached."""
    return cached_filters_info(reader.meta(FILTERS_CACHE_KEY))


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
    reader: BufferReader,
    *,
    sort: str = "crawler",
    descending: bool = False,
    page: int = 1,
    per_page: int = 25,
) -> Page:
    """Per crawler: buffered (all rows), delivered, rejected, invalid, filtered, pending (with
    in flight) and the time of the last delivery; sorted by an allow-listed column."""
    rows = reader.crawler_rows(
        sort, descending=descending, limit=per_page, offset=(page - 1) * per_page
    )
    return Page(rows, reader.crawler_count(), page, per_page)


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


def throughput(
    reader: BufferReader, since: float, until: float, *, max_buckets: int = 360
) -> Throughput:
    """Outcomes per minute between two unix times, from ``delivered_at`` (also set on rejection).

    When the span has more than ``max_buckets`` minutes, buckets grow to whole multiples of a
    minute so the chart stays readable; the counts are then per bucket.
    """
    minutes = max(1, math.ceil((until - since) / 60))
    bucket = 60 * max(1, math.ceil(minutes / max_buckets))
    start = math.floor(since / bucket) * bucket
    n = max(1, math.ceil((until - start) / bucket))
    delivered, rejected = [0] * n, [0] * n
    for slot, state, count in reader.outcomes_per_bucket(start, bucket, start + n * bucket):
        if 0 <= slot < n:
            (delivered if state == "delivered" else rejected)[slot] += count
    return Throughput(start, bucket, delivered, rejected)


def first_outcome_time(reader: BufferReader) -> float | None:
    return reader.first_outcome_time()


# -- rows -----------------------------------------------------------------------------------


def rows_page(
    reader: BufferReader, selection: Selection, *, page: int = 1, per_page: int = 50
) -> Page:
    """One page of the rows a selection covers (without their payloads)."""
    total = reader.count(selection)
    return Page(
        reader.rows(selection, limit=per_page, offset=(page - 1) * per_page), total, page, per_page
    )


def iter_selection(reader: BufferReader, selection: Selection) -> Iterator[dict[str, Any]]:
    """Every row of a selection, payload included (as text), for the downloads."""
    for row in reader.rows_with_payloads(selection):
        row["payload"] = payload_text(row["payload"])
        yield row


def row_detail(reader: BufferReader, row_id: str) -> dict[str, Any] | None:
    """Everything the buffer knows about one row, or None."""
    row = reader.row(row_id)
    if row is None:
        return None
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
    reader: BufferReader,
    *,
    crawler: str | None = None,
    search: str = "",
    page: int = 1,
    per_page: int = 50,
) -> Page:
    """Delivered rows, newest first, for the remote status page."""
    selection = Selection(states=("delivered",), crawler=crawler, search=search, sort="rejected_at")
    return rows_page(reader, selection, page=page, per_page=per_page)


def crawler_names(reader: BufferReader) -> list[str]:
    return reader.crawler_names()


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
    if not ids:
        return Requeued(0)
    return requeue_in(SQLiteBuffer(path, busy_timeout=busy_timeout), ids, field_map, dedup)


def requeue_in(
    buffer: Buffer,
    ids: Sequence[str],
    field_map: Mapping[str, str] | None = None,
    dedup: bool = True,
) -> Requeued:
    """:func:`requeue` on an open buffer of any backend, which it closes."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        buffer.close()
        return Requeued(0)
    try:
        rejected = requeue_rows(buffer, "rejected", ids=ids)
        invalid = requeue_rows(buffer, "invalid", field_map=field_map, dedup=dedup, ids=ids)
    finally:
        buffer.close()
    return Requeued(rejected.requeued + invalid.requeued, invalid.still_invalid)
