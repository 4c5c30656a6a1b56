"""Where results wait for delivery: a durable SQLite buffer, an in-memory one, and their interface.

Each result is one row moving through ``pending -> in_flight -> delivered | rejected`` (plus
``filtered`` and ``invalid`` rows that are kept but never sent). A claimed batch is a lease (owner
and expiry), so a process that dies mid-request leaves rows that the next claimer takes back and
resends under the same ids: the API answers ``duplicate`` and nothing is stored twice. It takes
them back at once when the owner is proven dead (:mod:`scrapy_sdi.owners`), else when the lease expires.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from time import monotonic, sleep
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

import orjson
import sqlite_utils

from scrapy_sdi.owners import OwnerLocks

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

logger = logging.getLogger(__name__)

PENDING, IN_FLIGHT, DELIVERED, REJECTED, FILTERED, INVALID = (
    "pending",
    "in_flight",
    "delivered",
    "rejected",
    "filtered",
    "invalid",
)
STATES = (PENDING, IN_FLIGHT, DELIVERED, REJECTED, FILTERED, INVALID)
#: States that make a URL "already seen" for dedup.
SEEN_STATES = (PENDING, IN_FLIGHT, DELIVERED, REJECTED)
#: Rows dedup skips when their URL was seen: a filtered one too, since the row already buffered
#: for that URL is matched when it is sent (a second, filtered row would only contradict it).
_DEDUPED = (PENDING, FILTERED)


@dataclass(slots=True)
class Row:
    """A result entering the buffer: its id, the crawler it belongs to, and its encoded JSON."""

    id: str
    crawler: str
    url: str
    payload: bytes
    state: str = PENDING
    reason: str | None = None
    #: The key of the filters this result passed (``FilterSet.key``); None: checked against none.
    filters_version: str | None = None


@dataclass(slots=True, frozen=True)
class Lease:
    """Rows stored already claimed: the delivery loop sends them from memory, with no claim query.

    ``enqueue`` stores the first ``limit`` rows it stores as pending in flight instead, leased to
    ``owner`` until ``until``, exactly as ``claim`` would have left them, and returns them in
    ``Enqueued.leased`` (the rows themselves are left as they came).
    """

    owner: str
    until: float
    limit: int


class Enqueued(list[bool]):
    """What ``enqueue`` did: one flag per row, True when it was stored (False: dedup skipped it),
    and ``leased``, the rows stored already claimed under the ``Lease``, in order.

    A list of the flags, so a caller that only asks what was stored reads it as before.
    """

    def __init__(self, stored: Iterable[bool] = (), leased: Sequence[Row] = ()) -> None:
        super().__init__(stored)
        self.leased: list[Row] = list(leased)


class Claimed(NamedTuple):
    """A row handed to one delivery attempt (a tuple: a claim makes a thousand of them)."""

    id: str
    payload: bytes
    attempts: int
    #: The key of the filters the row passed: delivery matches it again under other filters.
    filters_version: str | None = None


class BufferFault(Exception):
    """A buffer cannot do what was asked; the subclasses say what the caller does next."""


class BufferFileError(BufferFault):
    """The buffer's storage cannot be used; the message names it and says what to do."""


class BufferWriteError(BufferFault):
    """Results could not be stored (disk full, I/O error...); the message names the buffer."""


class BufferLocked(BufferFault):
    """Another process holds the buffer longer than the busy timeout: try again later, drop nothing."""


class Buffer(ABC):
    """What the pipeline, the delivery loop, the commands and the metrics need from a buffer.

    ``SDI_BUFFER`` may name any subclass. It is built in one way: ``cls.from_settings(settings)``
    (``settings`` is the frozen :class:`scrapy_sdi.settings.SDISettings`); the default calls
    ``cls()``, so a backend that needs settings (a path, a DSN) overrides ``from_settings``.

    Every method is synchronous. The crawl calls them through
    :class:`scrapy_sdi.buffer_calls.BufferCalls`: on the loop thread when they are short, on one
    worker thread of their own, one at a time, when the backend sets ``blocking``. A backend
    raises the typed errors of this module, never its driver's: :class:`BufferLocked` when another
    process holds it (the caller retries), :class:`BufferWriteError` when results cannot be
    stored, :class:`BufferFileError` when its storage cannot be used at all.
    ``scrapy_sdi.testing.buffer_contract`` holds the behaviour every backend must show.
    """

    #: Whether rows survive the process (the memory buffer says no).
    durable = True
    #: Whether a call may wait on something outside the process (a database server): its calls
    #: then run off the crawl's loop thread. SQLite and memory answer in microseconds and stay inline.
    blocking: bool = False
    #: Methods a ``blocking`` backend lets run on a second worker thread, concurrently with the
    #: others (each thread has a connection of its own), so that storing results never waits
    #: behind them. Their callers must not rely on their order against the other calls.
    side_lane: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Any) -> Buffer:
        """The buffer ``settings`` (SDISettings) describe; raises BufferFileError when it cannot be used."""
        return cls()

    @property
    def location(self) -> str:
        """Where the rows are kept, for messages: a file's path, or by default the class's dotted path."""
        return f"{type(self).__module__}.{type(self).__qualname__}"

    @abstractmethod
    def enqueue(self, rows: Sequence[Row], dedup: bool, lease: Lease | None = None) -> Enqueued:
        """Store rows in one transaction; return for each whether it was stored (False: a seen URL).

        With a ``lease``, its first ``lease.limit`` stored pending rows are stored claimed (see
        Lease) and returned in ``Enqueued.leased``; the rows passed in are never changed.
        """

    @abstractmethod
    def claim(
        self,
        crawler: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        ignore_ready_at: bool = False,
    ) -> list[Claimed]:
        """Lease up to ``limit`` ready pending rows of ``crawler`` to ``owner``, oldest first."""

    @abstractmethod
    def ack(self, delivered: dict[str, str], rejected: dict[str, str | None]) -> None:
        """Record outcomes: id -> 'accepted'/'duplicate', and id -> rejection reason."""

    @abstractmethod
    def release(self, ids: Iterable[str], error: str, delay: float) -> None:
        """Give leased rows back as pending, one attempt more, not claimable for ``delay`` seconds."""

    @abstractmethod
    def counts(self, crawler: str | None = None) -> dict[str, int]:
        """Rows per state (every state present, zero included)."""

    @abstractmethod
    def export(
        self,
        state: str,
        crawler: str | None = None,
        since: float | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Rows in ``state`` (buffered at or after ``since``, among ``ids``) as dicts (id, crawler, url, state, attempts, reason, payload...)."""

    @abstractmethod
    def requeue(
        self, state: str, crawler: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        """Put rows of ``state`` back to pending as they are; return how many.

        Invalid rows hold an item's fields, not a result: they go through :meth:`replace_invalid`
        (see ``scrapy_sdi.requeue``), and asking for them here raises ValueError.
        """

    @abstractmethod
    def replace_invalid(self, rows: Mapping[str, Row], dedup: bool) -> Counter[str]:
        """Rewrite invalid rows mapped again: old id -> the row (new id, url, payload, state, reason).

        Only rows still invalid change, in one transaction; a row that stays invalid keeps its
        payload (its item's fields) and takes the new reason. With ``dedup``, a row made pending
        whose URL its crawler already buffered stays invalid, saying so (as the pipeline skips
        it). Returns the changed rows' new states, counted.
        """

    @abstractmethod
    def outstanding(self, crawler: str, created_before: float) -> int:
        """Rows of ``crawler`` buffered before a time that are still pending or in flight.

        A closing run waits for these: its own rows and those left by runs before it, but not
        the rows that other live jobs sharing the buffer keep adding.
        """

    @abstractmethod
    def crawlers_with_pending(self) -> list[str]:
        """Crawler names that have pending or in-flight rows."""

    def counts_by_crawler(self) -> dict[str, dict[str, int]]:
        """Rows per state of each crawler; this default knows only the crawlers with rows waiting."""
        return {name: self.counts(name) for name in self.crawlers_with_pending()}

    def hold_owner(self, owner: str) -> None:
        """Prove ``owner`` alive until ``close``, so other processes leave its leases alone.

        By default liveness cannot be proven: a dead owner's leases come back after SDI_LEASE_TIMEOUT.
        """
        return None

    def reclaim_dead(self) -> int:
        """Put rows leased to owners proven dead back to pending at once; return how many.

        Cheap, but not free: the delivery loop calls it at start and when a claim finds nothing.
        """
        return 0

    def prune(self, older_than_days: float) -> int:
        """Forget delivered rows older than the retention; return how many."""
        return 0

    def mark_filtered(self, reasons: dict[str, str]) -> None:
        """Leased rows the filters in force exclude: id -> the filter's description; never sent.

        Buffers should keep them as ``filtered``; this default records them as rejected with that
        reason, which also keeps them from ever being sent (or resent without a requeue).
        """
        self.ack({}, {id_: f"excluded by {reason}" for id_, reason in reasons.items()})

    def get_meta(self, key: str) -> str | None:
        """The value stored under ``key`` (the filters cache), or None; by default nothing is kept."""
        return None

    def set_meta(self, key: str, value: str) -> None:
        """Keep ``value`` under ``key`` across runs, when the buffer can."""
        return None

    def oldest_pending_age(self, crawler: str | None = None) -> float | None:
        """Seconds since the oldest pending or in-flight row was buffered; None: none, or unknown."""
        return None

    def size_bytes(self) -> int | None:
        """Bytes the buffer takes on disk; None when it keeps no file (memory) or cannot say."""
        return None

    def check_integrity(self) -> str | None:
        """What is wrong with the stored data (``scrapy sdi check``); None when nothing is, or unknown."""
        return None

    def close(self) -> None:
        """Release what the buffer holds; rows of a durable buffer stay stored."""
        return None


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put a (new) file in WAL mode, waiting up to ``busy_timeout`` for other processes doing it.

    SQLite answers "database is locked" at once, without its busy handler, when another
    connection holds the write lock of a file still in rollback mode (it is switching that file
    to WAL itself): the switch first reads, and a reader may not wait for a writer. So it is
    retried here until the timeout, as any other write would wait (on the real clock: tests
    replace this module's ``time``).
    """
    deadline = monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or monotonic() >= deadline:
                raise
        sleep(min(delay, max(0.0, deadline - monotonic())))
        delay = min(delay * 2, 0.05)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


# -- SQLite ---------------------------------------------------------------------------------

SCHEMA_VERSION = 4
_MIGRATIONS = {
    1: [
        """CREATE TABLE IF NOT EXISTS results (
            rowid INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            crawler TEXT NOT NULL,
            url TEXT NOT NULL,
            payload BLOB NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            ready_at REAL NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until REAL,
            reason TEXT,
            last_error TEXT,
            outcome TEXT,
            created_at REAL NOT NULL,
            delivered_at REAL
        )""",
        # Every index costs each insert a B-tree update (a unique index on the random ids alone
        # doubled the cost of a row): rows are found by rowid, waiting rows through two small
        # partial indexes, and seen URLs through the one full index the dedup check needs.
        "CREATE INDEX IF NOT EXISTS ix_results_pending ON results (crawler, rowid) WHERE state = 'pending'",
        "CREATE INDEX IF NOT EXISTS ix_results_lease ON results (lease_until) WHERE state = 'in_flight'",
        "CREATE INDEX IF NOT EXISTS ix_results_url ON results (crawler, url)",
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    # Payloads in a table of their own, under their row's rowid: a claim and an ack rewrite the
    # pages of their rows, ~10 rows to a page with a typical payload, ~25 without (claim + ack
    # ~11 -> ~8.5 us per row). Deleting a row deletes its payload.
    2: [
        "CREATE TABLE payloads (rowid INTEGER PRIMARY KEY, payload BLOB NOT NULL)",
        "INSERT INTO payloads (rowid, payload) SELECT rowid, payload FROM results",
        "ALTER TABLE results DROP COLUMN payload",
        "CREATE TRIGGER results_delete AFTER DELETE ON results BEGIN DELETE FROM payloads WHERE rowid = old.rowid; END",
    ],
    # The key of the filters a row passed (NULL: none known, or an older scrapy_sdi): delivery
    # matches a claimed row again only when other filters are in force, instead of decoding and
    # matching every row it sends.
    3: ["ALTER TABLE results ADD COLUMN filters_version TEXT"],
    # Leases kept per batch (its owner, expiry and rowids) instead of by an index on every row in
    # flight: the index cost a claim an insert and an ack a delete per row (claim + ack 3.2 ->
    # 2.75 us of CPU per row). The rows keep their lease_owner and lease_until: a lease's rows
    # are those of its list still in flight under it. Rows leased before the upgrade get theirs.
    4: [
        "CREATE TABLE leases (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, until REAL NOT NULL, rowids TEXT NOT NULL)",
        "INSERT INTO leases (owner, until, rowids) SELECT coalesce(lease_owner, ''), coalesce(lease_until, 0), "
        "json_group_array(rowid) FROM results WHERE state = 'in_flight' GROUP BY lease_owner, lease_until",
        "DROP INDEX IF EXISTS ix_results_lease",
    ],
}
_DEDUP_CHUNK = 500  # SQLite's bound-parameter limit is far above this
#: Rows changed (inserted, updated, deleted) between two checkpoints: ~1000 pages of the log.
_CHECKPOINT_CHANGES = 10_000
#: Pages of the log past which the committing connection checkpoints itself (SQLite's default
#: is 1000; the checkpointer's thread keeps it below this).
_BACKSTOP_PAGES = 10_000
#: The rowids of the leases (``l``), to which a WHERE may be added: rows in flight are found by them.
_LEASED = "SELECT j.value FROM leases AS l, json_each(l.rowids) AS j"
#: A claimed row's (id, payload, attempts, filters_version, rowid): its parts, read in C.
_ID, _ROWID, _CLAIMED = itemgetter(0), itemgetter(4), itemgetter(0, 1, 2, 3)


class SQLiteBuffer(Buffer):
    """Rows in one SQLite file in WAL mode, safe to share between processes on one host."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, readonly: bool = False
    ) -> None:
        """Open (create, upgrade) the file; ``readonly`` opens an existing one for reading only.

        A read-only buffer (metrics, dashboards) never takes the write lock, not even for the
        upgrade check, so reading it never delays a crawl's commit.
        """
        self.path = Path(path)
        try:
            if readonly:
                conn = sqlite3.connect(
                    readonly_uri(self.path), uri=True, timeout=busy_timeout, check_same_thread=False
                )
                conn.execute("PRAGMA query_only = 1")
                self.db = sqlite_utils.Database(conn)
                try:
                    self._check_schema()
                except BufferFileError:
                    conn.close()
                    raise
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if not self.path.exists():
                    self.path.touch(mode=0o600)
                conn = sqlite3.connect(
                    str(self.path),
                    isolation_level=None,
                    timeout=busy_timeout,
                    check_same_thread=False,
                )
                self.db = sqlite_utils.Database(conn)
                _switch_to_wal(conn, busy_timeout)
                conn.execute("PRAGMA synchronous=NORMAL")
                # the checkpointer's thread copies the log into the file; this connection does
                # it only when that thread has fallen far behind
                conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_PAGES}")
                self._migrate()
        except (OSError, sqlite3.DatabaseError) as exc:
            hint = (
                "it is not a SQLite database: move it aside, or set SDI_BUFFER_RECOVER = True to have it moved"
                if _is_not_a_database(self.path)
                else "check that the directory exists and is writable, and that the disk has room"
            )
            raise BufferFileError(
                f"SDI buffer {self.path} cannot be used ({exc}); {hint}"
            ) from None
        # The hot path (enqueue, claim, ack, release) runs stdlib sqlite3 on this connection:
        # executemany over tuples, one statement per batch, no layer per call or per row.
        # sqlite-utils (self.db) serves only reads that want rows as dicts (export).
        self._conn = conn
        self._leased: dict[str, int] = {}  # id -> rowid of the rows this process claimed
        #: lease id -> (first rowid, last rowid, rows, owner, until) of the leases this process took
        self._leases: dict[int, tuple[int, int, int, str, float]] = {}
        self._owners = OwnerLocks(self.path.with_name(self.path.name + ".owners"))
        self._checkpointer = None if readonly else _Checkpointer(self.path, busy_timeout)
        self._changes = 0  # conn.total_changes at the last checkpoint asked for

    @classmethod
    def from_settings(cls, settings: Any) -> SQLiteBuffer:
        try:
            return cls(settings.buffer_path)
        except BufferFileError:
            if not settings.buffer_recover or not _is_not_a_database(settings.buffer_path):
                raise
        aside = f"{settings.buffer_path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(settings.buffer_path, aside)  # kept for inspection, never deleted
        logger.warning(
            "SDI buffer %(path)s is not a database; moved aside to %(aside)s, starting a fresh one",
            {"path": settings.buffer_path, "aside": aside},
        )
        return cls(settings.buffer_path)

    @property
    def location(self) -> str:
        return str(self.path)

    def size_bytes(self) -> int | None:
        """The file and its write-ahead log."""
        return sum(
            os.path.getsize(p) for p in (str(self.path), f"{self.path}-wal") if os.path.exists(p)
        )

    def check_integrity(self) -> str | None:
        with sqlite_errors():
            (integrity,) = self._conn.execute("PRAGMA integrity_check").fetchone()
        return None if integrity == "ok" else integrity

    def _migrate(self) -> None:
        conn = self.db.conn
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BufferFileError(
                    f"SDI buffer {self.path} has schema {version}, newer than this scrapy_sdi knows ({SCHEMA_VERSION}): upgrade scrapy_sdi"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")

    def _check_schema(self) -> None:
        """A read-only buffer cannot be upgraded: it must already have this scrapy_sdi's schema."""
        (version,) = self.db.conn.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            raise BufferFileError(
                f"SDI buffer {self.path} has schema {version}, this scrapy_sdi reads {SCHEMA_VERSION}: "
                + (
                    "upgrade scrapy_sdi"
                    if version > SCHEMA_VERSION
                    else "open it once with `scrapy sdi buffer` to upgrade it"
                )
            )

    def enqueue(self, rows: Sequence[Row], dedup: bool, lease: Lease | None = None) -> Enqueued:
        now = time.time()
        to_lease = lease.limit if lease is not None else 0
        owner, until = (lease.owner, lease.until) if lease is not None else (None, None)
        with _transaction(self._conn, self._written):
            seen = self._seen_urls(rows) if dedup else set()
            # rowids given here, not by SQLite, so the leased rows can be acked by rowid
            (rowid,) = self._conn.execute("SELECT coalesce(max(rowid), 0) FROM results").fetchone()
            stored: list[bool] = []
            fresh: list[tuple[Any, ...]] = []
            payloads: list[tuple[int, bytes]] = []
            leased: list[tuple[Row, int]] = []
            for row in rows:
                key = (row.crawler, row.url)
                is_new = not (dedup and row.state in _DEDUPED and key in seen)
                if is_new and dedup and row.state == PENDING:
                    seen.add(key)  # a URL twice in one group
                stored.append(is_new)
                if not is_new:
                    continue
                rowid += 1
                if to_lease and row.state == PENDING:
                    to_lease -= 1
                    leased.append((row, rowid))
                    fresh.append(
                        (
                            rowid,
                            row.id,
                            row.crawler,
                            row.url,
                            IN_FLIGHT,
                            None,
                            now,
                            owner,
                            until,
                            row.filters_version,
                        )
                    )
                else:
                    fresh.append(
                        (
                            rowid,
                            row.id,
                            row.crawler,
                            row.url,
                            row.state,
                            row.reason,
                            now,
                            None,
                            None,
                            row.filters_version,
                        )
                    )
                payloads.append((rowid, row.payload))
            self._conn.executemany(
                "INSERT INTO results (rowid, id, crawler, url, state, reason, created_at, lease_owner, lease_until, filters_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                fresh,
            )
            self._conn.executemany("INSERT INTO payloads (rowid, payload) VALUES (?, ?)", payloads)
            if leased:
                lease_id = self._record_lease(owner, until, [rowid for _, rowid in leased])
        if leased:  # only once committed: a retried group must start as it came
            ids = [row.id for row, _ in leased]
            self._hold(ids, [rowid for _, rowid in leased], lease_id, owner, until)
        return Enqueued(stored, [row for row, _ in leased])

    def _record_lease(self, owner: Any, until: Any, rowids: list[int]) -> int:
        """One row of ``leases`` for rows just leased; returns its id."""
        cursor = self._conn.execute(
            "INSERT INTO leases (owner, until, rowids) VALUES (?, ?, ?)",
            (owner, until, orjson.dumps(rowids).decode()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def _hold(
        self, ids: list[str], rowids: list[int], lease_id: int, owner: Any, until: Any
    ) -> None:
        """Remember rows this process leased (ascending rowids), to settle them by rowid and
        end their lease once none of them is left in flight."""
        self._leased.update(zip(ids, rowids, strict=True))
        self._leases[lease_id] = (rowids[0], rowids[-1], len(rowids), owner, until)

    def _seen_urls(self, rows: Sequence[Row]) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        by_crawler: dict[str, list[str]] = {}
        for row in rows:
            if row.state in _DEDUPED:
                by_crawler.setdefault(row.crawler, []).append(row.url)
        for crawler, urls in by_crawler.items():
            for chunk in _chunks(urls, _DEDUP_CHUNK):
                marks = ",".join("?" * len(chunk))
                cursor = self._conn.execute(
                    # the url index, never the state one: that would read every pending row
                    f"SELECT url FROM results INDEXED BY ix_results_url "
                    f"WHERE crawler = ? AND url IN ({marks}) AND state IN (?, ?, ?, ?)",
                    (crawler, *chunk, *SEEN_STATES),
                )
                seen.update((crawler, url) for (url,) in cursor)
        return seen

    def claim(
        self,
        crawler: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        ignore_ready_at: bool = False,
    ) -> list[Claimed]:
        now = time.time()
        ready = float("inf") if ignore_ready_at else now
        with _transaction(self._conn, self._written):
            if self._conn.execute(
                "SELECT 1 FROM leases WHERE until < ? LIMIT 1", (now,)
            ).fetchone():
                self._conn.execute(
                    "UPDATE results SET state = 'pending', lease_owner = NULL, lease_until = NULL "
                    f"WHERE rowid IN ({_LEASED} WHERE l.until < ?) AND state = 'in_flight' AND lease_until < ?",
                    (now, now),
                )
                self._conn.execute("DELETE FROM leases WHERE until < ?", (now,))
            for lease_id in [k for k, lease in self._leases.items() if lease[4] < now]:
                del self._leases[lease_id]  # ended here or by another process's claim
            # read the oldest ready rows in order with their payloads, then lease them by rowid
            rows = self._conn.execute(
                "SELECT id, payload, attempts, filters_version, rowid FROM results INDEXED BY ix_results_pending "
                "JOIN payloads USING (rowid) WHERE state = 'pending' AND crawler = ? AND ready_at <= ? "
                "ORDER BY rowid LIMIT ?",
                (crawler, ready, limit),
            ).fetchall()
            if not rows:
                return []
            rowids = list(map(_ROWID, rows))
            until = now + lease_seconds
            lease_id = self._record_lease(owner, until, rowids)
            self._conn.execute(
                "UPDATE results SET state = 'in_flight', lease_owner = ?, lease_until = ? "
                f"WHERE rowid IN ({_LEASED} WHERE l.id = ?)",
                (owner, until, lease_id),
            )
        self._hold(list(map(_ID, rows)), rowids, lease_id, owner, until)
        # Claimed rows made in C (tuple.__new__ on the row's first four columns), not by a call
        # of Claimed's own __new__ per row: a quarter of the claim's Python time.
        return list(map(tuple.__new__, repeat(Claimed), map(_CLAIMED, rows)))

    def hold_owner(self, owner: str) -> None:
        self._owners.hold(owner)

    def reclaim_dead(self) -> int:
        return self._owners.reclaim_dead(self._take_back)

    def _take_back(self, owner: str) -> int:
        """A dead owner's rows back to pending, as an expired lease: no attempt counted (the
        process may have died before sending), and ready at once."""
        with _transaction(self._conn, self._written):
            cursor = self._conn.execute(
                "UPDATE results SET state = 'pending', lease_owner = NULL, lease_until = NULL "
                f"WHERE rowid IN ({_LEASED} WHERE l.owner = ?) AND state = 'in_flight' AND lease_owner = ?",
                (owner, owner),
            )
            self._conn.execute("DELETE FROM leases WHERE owner = ?", (owner,))
        return cursor.rowcount

    def _update(self, sql: str, params: tuple[Any, ...], ids: Iterable[str]) -> list[int]:
        """Run ``sql`` on the rows of ``ids`` in one statement (two when some were not claimed here).

        Rows this process claimed are found by rowid; any other id costs one scan for all of them.
        The keys travel as one JSON array (``json_each``): a statement per row cost more than
        the row's own update. Returns the rowids of the rows this process had leased.
        """
        ids = ids if isinstance(ids, list) else list(ids)
        found: list[int | None] = list(map(self._leased.pop, ids, repeat(None)))
        rowids: list[int] = found  # type: ignore[assignment]  # no None left once filtered
        others: list[str] = []
        if None in found:
            others = [id_ for id_, rowid in zip(ids, found, strict=True) if rowid is None]
            rowids = [rowid for rowid in found if rowid is not None]
        for column, keys in (("rowid", rowids), ("id", others)):
            if keys:
                where = f"{column} IN (SELECT value FROM json_each(?))"
                self._conn.execute(sql.format(where=where), (*params, orjson.dumps(keys)))
        return rowids

    def _end_leases(self, settled: list[int]) -> None:
        """Leases of this process among whose rows some were just settled: those with none left in
        flight end. A lease's rows are looked at by rowid range when they are close together
        (a claim of a backlog, a group commit), else by its list."""
        if not settled or not self._leases:
            return
        low, high = min(settled), max(settled)
        ended = []
        for lease_id, (first, last, n, owner, until) in self._leases.items():
            if first > high or last < low:
                continue
            params: tuple[int, ...]
            if last - first < 4 * n:
                where, params = "rowid BETWEEN ? AND ?", (first, last)
            else:
                where, params = (
                    "rowid IN (SELECT value FROM json_each((SELECT rowids FROM leases WHERE id = ?)))",
                    (lease_id,),
                )
            if not self._conn.execute(
                f"SELECT 1 FROM results WHERE {where} AND state = 'in_flight' "
                "AND lease_until = ? AND lease_owner = ? LIMIT 1",
                (*params, until, owner),
            ).fetchone():
                ended.append(lease_id)
        if ended:
            for lease_id in ended:
                del self._leases[lease_id]
            self._conn.execute(
                "DELETE FROM leases WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(ended),),
            )

    def ack(self, delivered: dict[str, str], rejected: dict[str, str | None]) -> None:
        now = time.time()
        settled: list[int] = []
        with _transaction(self._conn, self._written):
            for outcome, ids in _group(delivered).items():
                settled += self._update(
                    "UPDATE results SET state = 'delivered', outcome = ?, delivered_at = ?, attempts = attempts + 1, "
                    "lease_owner = NULL, lease_until = NULL, last_error = NULL WHERE {where}",
                    (outcome, now),
                    ids,
                )
            for reason, ids in _group(rejected).items():
                settled += self._update(
                    "UPDATE results SET state = 'rejected', reason = ?, delivered_at = ?, attempts = attempts + 1, "
                    "lease_owner = NULL, lease_until = NULL WHERE {where}",
                    (reason, now),
                    ids,
                )
            self._end_leases(settled)

    def mark_filtered(self, reasons: dict[str, str]) -> None:
        settled: list[int] = []
        with _transaction(self._conn, self._written):
            for reason, ids in _group(reasons).items():
                settled += self._update(
                    "UPDATE results SET state = 'filtered', reason = ?, lease_owner = NULL, lease_until = NULL "
                    "WHERE {where} AND state IN ('pending', 'in_flight')",
                    (reason,),
                    ids,
                )
            self._end_leases(settled)

    def release(self, ids: Iterable[str], error: str, delay: float) -> None:
        ready_at = time.time() + delay
        with _transaction(self._conn, self._written):
            settled = self._update(
                "UPDATE results SET state = 'pending', attempts = attempts + 1, ready_at = ?, last_error = ?, "
                "lease_owner = NULL, lease_until = NULL WHERE {where} AND state = 'in_flight'",
                (ready_at, error),
                ids,
            )
            self._end_leases(settled)

    def counts(self, crawler: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        where, params = ("WHERE crawler = ?", (crawler,)) if crawler is not None else ("", ())
        with sqlite_errors():
            for state, n in self._conn.execute(
                f"SELECT state, count(*) FROM results {where} GROUP BY state", params
            ):
                counts[state] = n
        return counts

    def counts_by_crawler(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        with sqlite_errors():
            for crawler, state, n in self._conn.execute(
                "SELECT crawler, state, count(*) FROM results GROUP BY crawler, state"
            ):
                table.setdefault(crawler, dict.fromkeys(STATES, 0))[state] = n
        return table

    def oldest_pending_age(self, crawler: str | None = None) -> float | None:
        where, params = ("AND crawler = ?", (crawler,)) if crawler is not None else ("", ())
        with sqlite_errors():
            (oldest,) = self._conn.execute(
                f"SELECT min(t) FROM (SELECT min(created_at) AS t FROM results WHERE state = 'pending' {where} "
                f"UNION ALL SELECT min(created_at) FROM results WHERE rowid IN ({_LEASED}) AND state = 'in_flight' {where})",
                params * 2,
            ).fetchone()
        return None if oldest is None else max(0.0, time.time() - oldest)

    def export(
        self,
        state: str,
        crawler: str | None = None,
        since: float | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        where, params = ("AND crawler = ?", (crawler,)) if crawler is not None else ("", ())
        if since is not None:
            where, params = where + " AND created_at >= ?", (*params, since)
        if ids is not None:
            where, params = (
                where + " AND id IN (SELECT value FROM json_each(?))",
                (*params, orjson.dumps(list(ids))),
            )
        with sqlite_errors():
            yield from self.db.query(
                "SELECT id, crawler, url, state, attempts, reason, last_error, outcome, created_at, delivered_at, "
                f"payload FROM results JOIN payloads USING (rowid) WHERE state = ? {where} ORDER BY rowid",
                (state, *params),
            )

    def requeue(
        self, state: str, crawler: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        _refuse_invalid(state)
        clauses, params = ["state = ?"], [state]
        if crawler is not None:
            clauses.append("crawler = ?")
            params.append(crawler)
        if ids is not None:
            if not ids:
                return 0
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            params.extend(ids)
        with _transaction(self._conn, self._written):
            cursor = self._conn.execute(
                "UPDATE results SET state = 'pending', ready_at = 0, reason = NULL, lease_owner = NULL, "
                # a requeued row is matched again against the filters in force when it is sent
                f"lease_until = NULL, filters_version = NULL WHERE {' AND '.join(clauses)}",
                params,
            )
        return cursor.rowcount

    def replace_invalid(self, rows: Mapping[str, Row], dedup: bool) -> Counter[str]:
        if not rows:
            return Counter()
        with _transaction(self._conn, self._written):
            found = self._conn.execute(
                "SELECT rowid, id FROM results WHERE state = 'invalid' AND id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(list(rows)),),
            ).fetchall()
            seen = self._seen_urls([rows[id_] for _, id_ in found]) if dedup else set()
            changed = [(_unless_seen(id_, rows[id_], seen, dedup), rowid) for rowid, id_ in found]
            self._conn.executemany(
                "UPDATE results SET id = ?, url = ?, state = ?, reason = ?, ready_at = 0, lease_owner = NULL, "
                "lease_until = NULL WHERE rowid = ?",
                [(row.id, row.url, row.state, row.reason, rowid) for row, rowid in changed],
            )
            self._conn.executemany(  # a row that stays invalid keeps its item's fields
                "UPDATE payloads SET payload = ? WHERE rowid = ?",
                [(row.payload, rowid) for row, rowid in changed if row.state == PENDING],
            )
        return Counter(row.state for row, _ in changed)

    def outstanding(self, crawler: str, created_before: float) -> int:
        # one count per partial index: a combined IN () would scan the table
        with sqlite_errors():
            (n,) = self._conn.execute(
                "SELECT (SELECT count(*) FROM results WHERE state = 'pending' AND crawler = :c AND created_at <= :t)"
                f" + (SELECT count(*) FROM results WHERE rowid IN ({_LEASED})"
                "    AND state = 'in_flight' AND crawler = :c AND created_at <= :t)",
                {"c": crawler, "t": created_before},
            ).fetchone()
        return n

    def crawlers_with_pending(self) -> list[str]:
        with sqlite_errors():
            return [
                c
                for (c,) in self._conn.execute(
                    "SELECT crawler FROM results WHERE state = 'pending' UNION "
                    f"SELECT crawler FROM results WHERE rowid IN ({_LEASED}) AND state = 'in_flight'"
                )
            ]

    def prune(self, older_than_days: float) -> int:
        cutoff = time.time() - older_than_days * 86400
        with _transaction(self._conn, self._written):
            cursor = self._conn.execute(
                "DELETE FROM results WHERE state = 'delivered' AND delivered_at < ?", (cutoff,)
            )
        return cursor.rowcount

    def get_meta(self, key: str) -> str | None:
        with sqlite_errors():
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with _transaction(self._conn, self._written):
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def _written(self) -> None:
        """A write transaction committed: past enough changed rows, the log is checkpointed."""
        if self._checkpointer is not None:
            changes = self._conn.total_changes
            if changes - self._changes >= _CHECKPOINT_CHANGES:
                self._changes = changes
                self._checkpointer.nudge()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self._conn.close()
        self._owners.close()


def _refuse_invalid(state: str) -> None:
    if state == INVALID:
        raise ValueError(
            "invalid rows are mapped again before they are requeued: use scrapy_sdi.requeue.requeue"
        )


def _unless_seen(old_id: str, row: Row, seen: set[tuple[str, str]], dedup: bool) -> Row:
    """``row``, or, when its crawler already buffered its URL, the invalid row saying so (the pipeline skips it)."""
    if not dedup or row.state != PENDING:
        return row
    key = (row.crawler, row.url)
    if key in seen:
        reason = f"{row.url} is already buffered for {row.crawler} (SDI_DEDUP): not sent again"
        return Row(old_id, row.crawler, row.url, row.payload, INVALID, reason)
    seen.add(key)  # a URL twice among the rows
    return row


def _group(values: dict[str, Any]) -> dict[Any, list[str]]:
    """Ids by their value (outcome, reason): one UPDATE per distinct value."""
    groups: dict[Any, list[str]] = {}
    for id_, value in values.items():
        groups.setdefault(value, []).append(id_)
    return groups


def readonly_uri(path: str | os.PathLike[str]) -> str:
    """The URI of a read-only connection to a buffer file (readers never block WAL writers)."""
    return "file:" + quote(str(Path(path).resolve())) + "?mode=ro"


def _is_not_a_database(path: str | os.PathLike[str]) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return bool(head) and head != b"SQLite format 3\x00"


def _typed(exc: sqlite3.Error, other: type[BufferFault]) -> BufferFault:
    """The interface's error for a SQLite one: callers never read SQLite's messages.

    SQLITE_BUSY and SQLITE_LOCKED are told by their text, which Python 3.10 (no
    ``sqlite_errorcode``) also gives; every other error becomes ``other``, with SQLite's message.
    """
    text = str(exc)
    return BufferLocked(text) if "locked" in text or "busy" in text else other(text)


@contextmanager
def sqlite_errors() -> Iterator[None]:
    """Statements outside a transaction (reads): SQLite's errors become the interface's.

    For the buffer modules only (this one and :mod:`scrapy_sdi.buffer_queries`).
    """
    try:
        yield
    except sqlite3.Error as exc:
        raise _typed(exc, BufferFileError) from exc


class _Checkpointer:
    """Copies the write-ahead log into the file on a thread of its own (PASSIVE checkpoints).

    SQLite checkpoints in the connection that commits, once the log holds 1000 pages: the crawl's
    thread then waited for two fsyncs (~15 ms on a VM's disk) every few thousand results. Here a
    checkpoint runs when the buffer has changed enough rows, while the crawl goes on; the crawl's
    connection still checkpoints if this one falls far behind (``_BACKSTOP_PAGES``).
    """

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self._conn = sqlite3.connect(
            str(path), isolation_level=None, timeout=busy_timeout, check_same_thread=False
        )
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sdi-checkpoint", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._closing:
                    return
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the crawl's connection checkpoints instead
                    logger.debug("SDI buffer checkpoint failed: %(error)s", {"error": exc})
        finally:
            self._conn.close()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join()


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception: writers queue on the busy timeout.

    SQLite's errors leave it typed: BufferLocked past the busy timeout, else BufferWriteError.
    """

    def __init__(
        self, conn: sqlite3.Connection, committed: Callable[[], None] | None = None
    ) -> None:
        self.conn = conn
        self.committed = committed

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _typed(exc, BufferWriteError) from exc
        return self.conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: object
    ) -> None:
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")
                if self.committed is not None:
                    self.committed()
            elif self.conn.in_transaction:  # SQLite has already rolled back after e.g. SQLITE_FULL
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as error:
            raise _typed(error, BufferWriteError) from error
        if isinstance(exc, sqlite3.Error):
            raise _typed(exc, BufferWriteError) from exc


# -- memory ---------------------------------------------------------------------------------


class MemoryBuffer(Buffer):
    """The same behaviour without durability: what is undelivered at exit is lost (and counted)."""

    durable = False

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._pending: dict[str, dict[str, None]] = {}  # crawler -> ids, oldest first
        self._leased: dict[str, float] = {}  # id -> lease expiry
        self._seen: set[tuple[str, str]] = set()
        self._meta: dict[str, str] = {}
        self._seq = itertools.count()  # arrival order, restored when a row comes back
        self._unsorted: set[str] = set()  # crawlers whose queue got a row back out of order

    @property
    def location(self) -> str:
        return "memory"

    def enqueue(self, rows: Sequence[Row], dedup: bool, lease: Lease | None = None) -> Enqueued:
        stored: list[bool] = []
        leased: list[Row] = []
        now = time.time()
        to_lease = lease.limit if lease is not None else 0
        for row in rows:
            key = (row.crawler, row.url)
            is_new = not (dedup and row.state in _DEDUPED and key in self._seen)
            stored.append(is_new)
            if not is_new:
                continue
            self._rows[row.id] = {
                "id": row.id,
                "crawler": row.crawler,
                "url": row.url,
                "payload": row.payload,
                "state": row.state,
                "attempts": 0,
                "ready_at": 0.0,
                "reason": row.reason,
                "last_error": None,
                "outcome": None,
                "created_at": now,
                "delivered_at": None,
                "seq": next(self._seq),
                "filters_version": row.filters_version,
            }
            if row.state != PENDING:
                continue
            self._seen.add(key)
            if to_lease and lease is not None:
                to_lease -= 1
                self._rows[row.id]["state"] = IN_FLIGHT
                self._leased[row.id] = lease.until
                leased.append(row)
            else:
                self._pending.setdefault(row.crawler, {})[row.id] = None
        return Enqueued(stored, leased)

    def _to_pending(self, row: dict[str, Any]) -> None:
        row["state"] = PENDING
        self._leased.pop(row["id"], None)
        self._pending.setdefault(row["crawler"], {})[row["id"]] = None
        self._unsorted.add(row["crawler"])
        self._seen.add((row["crawler"], row["url"]))

    def claim(
        self,
        crawler: str,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        ignore_ready_at: bool = False,
    ) -> list[Claimed]:
        now = time.time()
        for id_ in [i for i, until in self._leased.items() if until < now]:
            self._to_pending(self._rows[id_])
        if crawler in self._unsorted:
            self._unsorted.discard(crawler)
            ids = sorted(self._pending.get(crawler, {}), key=lambda i: self._rows[i]["seq"])
            self._pending[crawler] = dict.fromkeys(ids)
        queue = self._pending.get(crawler, {})
        claimed: list[Claimed] = []
        for id_ in list(queue):
            if len(claimed) >= limit:
                break
            row = self._rows[id_]
            if ignore_ready_at or row["ready_at"] <= now:
                del queue[id_]
                row["state"] = IN_FLIGHT
                self._leased[id_] = now + lease_seconds
                claimed.append(
                    Claimed(id_, row["payload"], row["attempts"], row["filters_version"])
                )
        return claimed

    def ack(self, delivered: dict[str, str], rejected: dict[str, str | None]) -> None:
        now = time.time()
        for id_, outcome in delivered.items():
            self._leased.pop(id_, None)
            row = self._rows[id_]
            self._pending.get(row["crawler"], {}).pop(id_, None)  # acked after its lease ran out
            row.update(
                state=DELIVERED, outcome=outcome, delivered_at=now, attempts=row["attempts"] + 1
            )
        for id_, reason in rejected.items():
            self._leased.pop(id_, None)
            row = self._rows[id_]
            self._pending.get(row["crawler"], {}).pop(id_, None)
            row.update(
                state=REJECTED, reason=reason, delivered_at=now, attempts=row["attempts"] + 1
            )

    def mark_filtered(self, reasons: dict[str, str]) -> None:
        for id_, reason in reasons.items():
            row = self._rows[id_]
            if row["state"] in (PENDING, IN_FLIGHT):
                self._leased.pop(id_, None)
                self._pending.get(row["crawler"], {}).pop(id_, None)
                # as in SQLite: filtered is not seen
                self._seen.discard((row["crawler"], row["url"]))
                row.update(state=FILTERED, reason=reason)

    def release(self, ids: Iterable[str], error: str, delay: float) -> None:
        ready_at = time.time() + delay
        for id_ in ids:
            row = self._rows[id_]
            if row["state"] == IN_FLIGHT:
                row.update(ready_at=ready_at, last_error=error, attempts=row["attempts"] + 1)
                self._to_pending(row)

    def counts(self, crawler: str | None = None) -> dict[str, int]:
        counts = Counter(
            r["state"] for r in self._rows.values() if crawler is None or r["crawler"] == crawler
        )
        return {state: counts.get(state, 0) for state in STATES}

    def export(
        self,
        state: str,
        crawler: str | None = None,
        since: float | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        wanted = set(ids) if ids is not None else None
        for row in list(self._rows.values()):
            if (
                row["state"] == state
                and (crawler is None or row["crawler"] == crawler)
                and (since is None or row["created_at"] >= since)
                and (wanted is None or row["id"] in wanted)
            ):
                yield {
                    k: v for k, v in row.items() if k not in ("ready_at", "seq", "filters_version")
                }

    def requeue(
        self, state: str, crawler: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        _refuse_invalid(state)
        if ids is not None and not ids:
            return 0
        wanted = set(ids) if ids is not None else None
        n = 0
        for row in self._rows.values():
            if (
                row["state"] == state
                and (crawler is None or row["crawler"] == crawler)
                and (wanted is None or row["id"] in wanted)
            ):
                row.update(ready_at=0.0, reason=None, filters_version=None)
                self._to_pending(row)
                n += 1
        return n

    def replace_invalid(self, rows: Mapping[str, Row], dedup: bool) -> Counter[str]:
        changed: Counter[str] = Counter()
        for old_id, mapped in rows.items():
            row = self._rows.get(old_id)
            if row is None or row["state"] != INVALID:
                continue
            new = _unless_seen(old_id, mapped, self._seen, dedup)
            del self._rows[old_id]
            row.update(id=new.id, url=new.url, state=new.state, reason=new.reason, ready_at=0.0)
            self._rows[new.id] = row
            if new.state == PENDING:
                row["payload"] = new.payload
                self._to_pending(row)
            changed[new.state] += 1
        return changed

    def outstanding(self, crawler: str, created_before: float) -> int:
        queued = len(self._pending.get(crawler, ()))
        leased = sum(1 for id_ in self._leased if self._rows[id_]["crawler"] == crawler)
        return queued + leased  # a memory buffer holds this process's rows only

    def crawlers_with_pending(self) -> list[str]:
        return sorted(
            {r["crawler"] for r in self._rows.values() if r["state"] in (PENDING, IN_FLIGHT)}
        )

    def oldest_pending_age(self, crawler: str | None = None) -> float | None:
        ages = [
            r["created_at"]
            for r in self._rows.values()
            if r["state"] in (PENDING, IN_FLIGHT) and (crawler is None or r["crawler"] == crawler)
        ]
        return max(0.0, time.time() - min(ages)) if ages else None

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value


BUFFERS: dict[str, type[Buffer]] = {"sqlite": SQLiteBuffer, "memory": MemoryBuffer}


def buffer_class(name: str) -> type[Buffer]:
    """The class SDI_BUFFER names: a built-in name or a dotted class path (like FEED_STORAGES).

    Settings resolve it when they are read, so a bad name stops the crawl before anything starts.
    """
    from scrapy.utils.misc import load_object

    from scrapy_sdi.errors import SDIConfigError

    if name in BUFFERS:
        return BUFFERS[name]
    if name == "postgres":  # imported only when chosen: psycopg is an extra
        from scrapy_sdi.buffer_postgres import PostgresBuffer

        return PostgresBuffer
    try:
        cls = load_object(name)
    except (ImportError, NameError, ValueError, AttributeError) as exc:
        raise SDIConfigError(
            f"SDI_BUFFER: {name!r} is neither 'sqlite', 'memory', 'postgres' nor an importable class: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Buffer)):
        raise SDIConfigError(f"SDI_BUFFER: {name!r} is not a subclass of scrapy_sdi.buffer.Buffer")
    return cls


def open_buffer(settings: Any) -> Buffer:
    """Build the buffer SDI_BUFFER names (checked when the settings were read)."""
    return buffer_class(settings.buffer).from_settings(settings)
