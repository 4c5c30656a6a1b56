"""A buffer on a PostgreSQL server, shared by every worker of a fleet whose disks do not last.

Same rows, states, ids and outcomes as the SQLite buffer (:mod:`scrapy_sdi.buffer`). Dedup is a
partial unique index on ``(crawler, url)`` over the rows that hold their URL, so concurrent
workers enqueueing the same URL store it once (``INSERT … ON CONFLICT DO NOTHING``). Claims take
rows with ``FOR UPDATE SKIP LOCKED`` in short transactions, so workers never wait on each other.
Each lease owner holds a session-level advisory lock while it lives; the server drops it when
the worker's connection dies, so whoever finds an owner's lock free takes its rows back at once.
PgBouncer in transaction pooling would hand that session to others: it is not supported.

The driver is psycopg 3 (``scrapy_sdi[postgres]``); its calls wait on the network, so the buffer
says it is ``blocking`` and the crawl runs it off the loop thread.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import Counter
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import parse_qsl, unquote, urlsplit

from scrapy_sdi.buffer import (
    _DEDUPED,
    FILTERED,
    IN_FLIGHT,
    PENDING,
    STATES,
    Buffer,
    BufferFault,
    BufferFileError,
    BufferLocked,
    BufferWriteError,
    Claimed,
    Enqueued,
    Lease,
    Row,
    _group,
    _refuse_invalid,
    _unless_seen,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    import psycopg

SCHEMA_VERSION = 1
_SEEN = "('pending', 'in_flight', 'delivered', 'rejected')"
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE sdi_results (
            seq bigserial PRIMARY KEY,
            id text NOT NULL,
            crawler text NOT NULL,
            url text NOT NULL,
            payload bytea NOT NULL,
            state text NOT NULL,
            holds_url boolean NOT NULL DEFAULT false,
            attempts integer NOT NULL DEFAULT 0,
            ready_at double precision NOT NULL DEFAULT 0,
            lease_owner text,
            lease_until double precision,
            reason text,
            last_error text,
            outcome text,
            created_at double precision NOT NULL,
            delivered_at double precision,
            filters_version text
        )""",
        # a row holds its URL while it is in a seen state and was stored with dedup
        f"CREATE UNIQUE INDEX sdi_results_url ON sdi_results (crawler, url) WHERE holds_url AND state IN {_SEEN}",
        "CREATE INDEX sdi_results_id ON sdi_results (id)",
        "CREATE INDEX sdi_results_pending ON sdi_results (crawler, seq) WHERE state = 'pending'",
        "CREATE INDEX sdi_results_lease ON sdi_results (lease_owner, lease_until) WHERE state = 'in_flight'",
        "CREATE INDEX sdi_results_delivered ON sdi_results (delivered_at) WHERE state = 'delivered'",
        "CREATE TABLE sdi_meta (key text PRIMARY KEY, value text NOT NULL)",
        "CREATE TABLE sdi_owners (owner text PRIMARY KEY, lock_key bigint NOT NULL, since double precision NOT NULL)",
    ],
}
#: Any number: the advisory lock serialising schema upgrades of one database.
_MIGRATION_LOCK = 0x5D1_5C4E
#: The rows whose id is in the array parameter, found by one index probe per id (OFFSET 0 keeps the
#: planner from a hash join over the whole table, which it picks on a table without statistics).
#: Array parameters go in binary (``%b``): psycopg writes a text array element by element in
#: Python (a bytea array of 100 payloads: 1.5 ms of CPU), a binary one in a few µs.
_BY_IDS = (
    "seq IN (SELECT h.seq FROM unnest(%b::text[]) AS u(id) CROSS JOIN LATERAL "
    "(SELECT x.seq FROM sdi_results x WHERE x.id = u.id OFFSET 0) AS h)"
)
_COLUMNS = "id, crawler, url, state, attempts, reason, last_error, outcome, created_at, delivered_at, payload"


def display_url(url: str) -> str:
    """``url`` with its password masked, in the userinfo and in any ``password=`` parameter."""
    url = re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return url.replace(parts.netloc, f"{user.partition(':')[0]}:***@{host}", 1)


#: Shorter passwords are not replaced in the driver's messages: replacing ``1`` would show
#: ``127.0.0.1`` as ``***27.0.0.***`` and so the password. libpq quotes no password once the URL
#: has parsed (readable_url), so the replacement is only a second net, for passwords that cannot
#: occur in a message by chance.
_MIN_SCRUBBED = 12


def _secrets(url: str) -> list[str]:
    """The long passwords ``url`` holds, as written and decoded, to scrub from the driver's messages."""
    found = []
    try:
        parts = urlsplit(url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password" and v]
    except ValueError:
        pass
    return [secret for secret in found if len(secret) >= _MIN_SCRUBBED]


def readable_url(url: str) -> None:
    """BufferFileError unless libpq can read ``url``. libpq's own message would quote the part it
    cannot read, the password perhaps (``invalid percent-encoded token``): it is not shown."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(url)
    except psycopg.Error:
        raise BufferFileError(
            f"SDI_BUFFER_URL {display_url(url)} cannot be read by libpq (its message is not "
            "shown: it may quote the password); check the URL's percent-encoding and parameters"
        ) from None


@overload
def pg_text(value: str) -> str: ...
@overload
def pg_text(value: None) -> None: ...
def pg_text(value: str | None) -> str | None:
    """``value`` as PostgreSQL's text can hold it: each NUL (an invalid item's URL, an error's
    text may carry one) becomes U+FFFD. Payloads are bytea and keep their bytes."""
    return value if value is None or "\x00" not in value else value.replace("\x00", "\ufffd")


def _pg_reasons(values: dict[str, Any]) -> dict[str, Any]:
    return {id_: pg_text(v) if isinstance(v, str) else v for id_, v in values.items()}


def psycopg_errors() -> type[Exception]:
    """psycopg's base error class (the driver is imported only when the buffer is used)."""
    import psycopg

    return psycopg.Error


def uses_postgres(settings: Any) -> bool:
    """Whether SDI_BUFFER (of ``settings``, SDISettings) is 'postgres' or a subclass of it."""
    from scrapy_sdi.buffer import buffer_class

    return issubclass(buffer_class(settings.buffer), PostgresBuffer)


def lock_key(owner: str) -> int:
    """The advisory lock of a lease owner: 63 bits of a hash, never negative."""
    digest = hashlib.blake2b(f"scrapy_sdi owner {owner}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _lookup_needed(rows: Sequence[Row], lease: Lease | None) -> bool:
    """Whether a dedup lookup must precede the INSERT of ``rows``. Its unique index (the same
    condition as the lookup's) makes the INSERT skip a pending row whose URL is held. The lookup
    adds only two things: a filtered row is skipped when its URL is held (it holds none itself,
    so nothing conflicts), and a pending row so skipped takes no lease slot from a later one,
    which matters only when the lease is smaller than the group's pending rows. Without either,
    as in a crawl whose delivery keeps up, the lookup is a statement and a round trip for
    nothing."""
    if any(row.state == FILTERED for row in rows):
        return True
    if lease is None:
        return False
    return lease.limit < sum(1 for row in rows if row.state == PENDING)


class PostgresBuffer(Buffer):
    """Rows in tables ``sdi_results``, ``sdi_meta``, ``sdi_owners``, ``sdi_schema`` of one database."""

    blocking = True
    #: Acks run on a second connection, on a thread of their own (BufferCalls): a group's commit
    #: never waits behind a batch's ack. The owners' advisory locks stay on the first one.
    side_lane = frozenset({"ack"})

    def __init__(self, url: str, *, connect_timeout: float = 10.0, readonly: bool = False) -> None:
        """Connect, create or upgrade the schema; BufferFileError (one line) when that fails.

        ``readonly`` (metrics, viewers) changes nothing, the schema included: every transaction
        is read-only, and a database without the schema, or with a newer one, is refused.
        """
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise BufferFileError(
                "SDI_BUFFER = 'postgres' needs psycopg 3: pip install 'scrapy_sdi[postgres]'"
            ) from None
        self.url = url
        self._timeout = connect_timeout
        self._readonly = readonly
        # a connection per calling thread (BufferCalls' worker and, for acks, its side lane);
        # the owners' advisory locks are held on the home thread's, the one that took them
        self._conns: dict[int, psycopg.Connection[Any]] = {}
        self._home = threading.get_ident()
        self._held: dict[str, int] = {}  # owner -> its advisory lock key
        try:
            readable_url(url)
            self._connection()
            if readonly:
                self._check_schema()
            else:
                self._migrate()
        except BufferFault as exc:
            self.close()
            raise BufferFileError(f"SDI buffer {self.location} cannot be used: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Any) -> PostgresBuffer:
        url = getattr(settings, "buffer_url", None)
        if not url:
            raise BufferFileError(
                "SDI_BUFFER = 'postgres' needs SDI_BUFFER_URL (postgresql://user:password@host/db)"
            )
        return cls(url)

    @property
    def location(self) -> str:
        return display_url(self.url)

    # -- the connection ------------------------------------------------------------------------

    @property
    def _conn(self) -> psycopg.Connection[Any] | None:
        """The calling thread's connection, if it opened one."""
        return self._conns.get(threading.get_ident())

    @_conn.setter
    def _conn(self, conn: psycopg.Connection[Any] | None) -> None:
        if conn is None:
            self._conns.pop(threading.get_ident(), None)
        else:
            self._conns[threading.get_ident()] = conn

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection, or a new one holding the advisory locks of the owners held."""
        import psycopg

        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, int(self._timeout)),
                application_name="scrapy_sdi",
            )
            # after connecting, as the rest: an options= of the URL stays in force.
            # Every statement takes milliseconds; where the planner misjudges one (a table
            # without statistics), JIT compiling it took ~70 ms each time.
            conn.execute("SET jit = off")
            if self._readonly:
                conn.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise BufferLocked(
                f"PostgreSQL at {self.location} unreachable: {self._text(exc)}"
            ) from None
        self._conn = conn
        if threading.get_ident() == self._home:
            for owner in self._held:
                self._lock_owner(owner)
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg_errors()):  # a broken connection may fail to close; it is gone
                self._conn.close()
        self._conn = None

    def _text(self, exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        for secret in _secrets(self.url):
            text = text.replace(secret, "***")
        return text

    def _typed(self, exc: Exception, other: type[BufferFault]) -> BufferFault:
        """The interface's error for a psycopg one; a lost connection is dropped, for the next call."""
        import psycopg

        if isinstance(exc, BufferFault):
            return exc
        text = f"PostgreSQL at {self.location}: {self._text(exc)}"
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            return BufferLocked(text)
        if isinstance(
            exc,
            (
                psycopg.errors.LockNotAvailable,
                psycopg.errors.DeadlockDetected,
                psycopg.errors.SerializationFailure,
                psycopg.errors.QueryCanceled,
                psycopg.OperationalError,
            ),
        ):
            return BufferLocked(text)
        return other(text)

    @contextmanager
    def _tx(
        self, other: type[BufferFault] = BufferWriteError, *, atomic: bool = True
    ) -> Iterator[psycopg.Cursor[Any]]:
        """One short transaction; psycopg's errors leave it typed (lost connection: BufferLocked).

        ``atomic=False``: each statement is a transaction of its own (the connection is in
        autocommit), for callers whose statements need not stand or fall together. That spares
        the BEGIN and COMMIT, each a round trip to a server sharing the crawl's CPUs.
        """
        import psycopg

        try:
            conn = self._connection()
            if atomic:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            else:
                with conn.cursor() as cur:
                    yield cur
        except (psycopg.Error, BufferFault) as exc:
            raise self._typed(exc, other) from None

    def _read(self) -> AbstractContextManager[psycopg.Cursor[Any]]:
        """A read, one statement, a transaction of its own: its errors become BufferFileError (or
        BufferLocked). Every read is one statement, so no BEGIN/COMMIT is sent around it."""
        return self._tx(BufferFileError, atomic=False)

    # -- schema --------------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._tx(BufferFileError) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS sdi_schema (version integer NOT NULL)")
            cur.execute("SELECT max(version) FROM sdi_schema")
            version = (cur.fetchone() or (None,))[0] or 0
            if version > SCHEMA_VERSION:
                raise BufferFileError(
                    f"SDI buffer {self.location} has schema {version}, newer than this scrapy_sdi knows ({SCHEMA_VERSION}): upgrade scrapy_sdi"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    cur.execute(statement)
                cur.execute("DELETE FROM sdi_schema")
                cur.execute("INSERT INTO sdi_schema (version) VALUES (%s)", (target,))

    def _check_schema(self) -> None:
        """A read-only buffer's schema: there, and not newer than this scrapy_sdi's."""
        with self._read() as cur:
            cur.execute("SELECT to_regclass('sdi_schema') IS NOT NULL")
            (found,) = cur.fetchone() or (False,)
        version = self.schema_version() if found else 0
        if version == 0:
            raise BufferFileError("no scrapy_sdi tables yet (no crawl has used this database)")
        if version > SCHEMA_VERSION:
            raise BufferFileError(
                f"schema {version}, newer than this scrapy_sdi knows ({SCHEMA_VERSION}): upgrade scrapy_sdi"
            )

    def schema_version(self) -> int:
        with self._read() as cur:
            cur.execute("SELECT max(version) FROM sdi_schema")
            return int((cur.fetchone() or (0,))[0] or 0)

    # -- writing -------------------------------------------------------------------------------

    def enqueue(self, rows: Sequence[Row], dedup: bool, lease: Lease | None = None) -> Enqueued:
        if not rows:
            return Enqueued()
        now = time.time()
        to_lease = lease.limit if lease is not None else 0
        # the lookup and the INSERT need no transaction around them: under READ COMMITTED each
        # statement sees the rows committed when it starts either way, the lookup writes nothing,
        # and the INSERT's ON CONFLICT settles a race with another worker on its own
        with self._tx(atomic=False) as cur:
            seen = self._seen_urls(cur, rows) if dedup and _lookup_needed(rows, lease) else set()
            wanted: list[tuple[int, Row, bool]] = []  # index, row, leased
            for i, row in enumerate(rows):
                key = (pg_text(row.crawler), pg_text(row.url))
                if dedup and row.state in _DEDUPED:
                    if key in seen:
                        continue
                    if row.state == PENDING:
                        seen.add(key)  # a URL twice in one group
                leased = bool(to_lease) and row.state == PENDING
                if leased:
                    to_lease -= 1
                wanted.append((i, row, leased))
            stored_at = self._insert(cur, wanted, dedup, now, lease)
        stored = [False] * len(rows)
        for i in stored_at:
            stored[i] = True
        leased_rows = [row for i, row, leased in wanted if leased and stored[i]]
        return Enqueued(stored, leased_rows)

    def _seen_urls(self, cur: psycopg.Cursor[Any], rows: Sequence[Row]) -> set[tuple[str, str]]:
        crawlers, urls = [], []
        for row in rows:
            if row.state in _DEDUPED:
                crawlers.append(pg_text(row.crawler))
                urls.append(pg_text(row.url))
        if not urls:
            return set()
        # one index probe per URL (LIMIT keeps the planner from a hash join that reads every
        # URL held, which it picks on a table without statistics)
        cur.execute(
            "SELECT u.crawler, u.url FROM unnest(%b::text[], %b::text[]) AS u(crawler, url) "
            "CROSS JOIN LATERAL (SELECT 1 FROM sdi_results r WHERE r.crawler = u.crawler "
            f"AND r.url = u.url AND r.holds_url AND r.state IN {_SEEN} LIMIT 1) AS held",
            (crawlers, urls),
        )
        return {(c, u) for c, u in cur.fetchall()}

    def _insert(
        self,
        cur: psycopg.Cursor[Any],
        wanted: list[tuple[int, Row, bool]],
        dedup: bool,
        now: float,
        lease: Lease | None,
    ) -> list[int]:
        """One multi-row INSERT; return the indexes of the rows stored (a concurrent worker's
        row for the same URL wins the unique index: ours is then not stored)."""
        if not wanted:
            return []
        cols: list[list[Any]] = [[] for _ in range(12)]
        for i, row, leased in wanted:
            values = (
                i,
                row.id,
                pg_text(row.crawler),
                pg_text(row.url),
                row.payload,
                IN_FLIGHT if leased else row.state,
                dedup and row.state == PENDING,
                None if leased else pg_text(row.reason),
                now,
                lease.owner if leased and lease is not None else None,
                lease.until if leased and lease is not None else None,
                pg_text(row.filters_version),
            )
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        cur.execute(
            "INSERT INTO sdi_results (id, crawler, url, payload, state, holds_url, reason, created_at, "
            "lease_owner, lease_until, filters_version) "
            "SELECT id, crawler, url, payload, state, holds_url, reason, created_at, lease_owner, lease_until, filters_version "
            "FROM unnest(%b::int[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::text[], %b::bool[], "
            "%b::text[], %b::float8[], %b::text[], %b::float8[], %b::text[]) "
            "AS t(i, id, crawler, url, payload, state, holds_url, reason, created_at, lease_owner, lease_until, filters_version) "
            f"ORDER BY i ON CONFLICT (crawler, url) WHERE holds_url AND state IN {_SEEN} DO NOTHING "
            "RETURNING id, crawler, url",
            cols,
        )
        returned = Counter(cur.fetchall())
        stored = []
        for i, row, _ in wanted:
            key = (row.id, pg_text(row.crawler), pg_text(row.url))
            if returned[key]:
                returned[key] -= 1
                stored.append(i)
        return stored

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
        with self._tx() as cur:
            cur.execute(
                "UPDATE sdi_results SET state = 'pending', lease_owner = NULL, lease_until = NULL "
                "WHERE seq IN (SELECT seq FROM sdi_results WHERE state = 'in_flight' AND lease_until < %s "
                "FOR UPDATE SKIP LOCKED)",
                (now,),
            )
            cur.execute(
                "UPDATE sdi_results r SET state = 'in_flight', lease_owner = %s, lease_until = %s "
                "FROM (SELECT seq FROM sdi_results WHERE state = 'pending' AND crawler = %s AND ready_at <= %s "
                "ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) c "
                "WHERE r.seq = c.seq RETURNING r.seq, r.id, r.payload, r.attempts, r.filters_version",
                (owner, now + lease_seconds, crawler, ready, limit),
            )
            rows = sorted(cur.fetchall())
        return [
            Claimed(id_, bytes(payload), attempts, fv) for _, id_, payload, attempts, fv in rows
        ]

    def ack(self, delivered: dict[str, str], rejected: dict[str, str | None]) -> None:
        now = time.time()
        delivered, rejected = _pg_reasons(delivered), _pg_reasons(rejected)
        by_outcome, by_reason = _group(delivered), _group(rejected)
        # one UPDATE (all accepted, the usual ack) is atomic alone: no BEGIN/COMMIT around it
        with self._tx(atomic=len(by_outcome) + len(by_reason) > 1) as cur:
            for outcome, ids in by_outcome.items():
                cur.execute(
                    "UPDATE sdi_results SET state = 'delivered', outcome = %s, delivered_at = %s, "
                    "attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, last_error = NULL "
                    f"WHERE {_BY_IDS}",
                    (outcome, now, ids),
                )
            for reason, ids in by_reason.items():
                cur.execute(
                    "UPDATE sdi_results SET state = 'rejected', reason = %s, delivered_at = %s, "
                    f"attempts = attempts + 1, lease_owner = NULL, lease_until = NULL WHERE {_BY_IDS}",
                    (reason, now, ids),
                )

    def mark_filtered(self, reasons: dict[str, str]) -> None:
        reasons = _pg_reasons(reasons)
        with self._tx() as cur:
            for reason, ids in _group(reasons).items():
                cur.execute(
                    "UPDATE sdi_results SET state = 'filtered', reason = %s, holds_url = false, "
                    "lease_owner = NULL, lease_until = NULL "
                    f"WHERE {_BY_IDS} AND state IN ('pending', 'in_flight')",
                    (reason, ids),
                )

    def release(self, ids: Iterable[str], error: str, delay: float) -> None:
        ready_at = time.time() + delay
        with self._tx() as cur:
            cur.execute(
                "UPDATE sdi_results SET state = 'pending', attempts = attempts + 1, ready_at = %s, "
                "last_error = %s, lease_owner = NULL, lease_until = NULL "
                f"WHERE {_BY_IDS} AND state = 'in_flight'",
                (ready_at, pg_text(error), list(ids)),
            )

    def requeue(
        self, state: str, crawler: str | None = None, ids: Sequence[str] | None = None
    ) -> int:
        _refuse_invalid(state)
        clauses: list[str] = ["state = %s"]
        params: list[Any] = [state]
        if crawler is not None:
            clauses.append("crawler = %s")
            params.append(crawler)
        if ids is not None:
            if not ids:
                return 0
            clauses.append("id = ANY(%s)")
            params.append(list(ids))
        with self._tx() as cur:
            cur.execute(
                "UPDATE sdi_results SET state = 'pending', ready_at = 0, reason = NULL, lease_owner = NULL, "
                # a requeued row is matched again against the filters in force when it is sent
                f"lease_until = NULL, filters_version = NULL WHERE {' AND '.join(clauses)} "
                "RETURNING seq",
                params,
            )
            seqs = [seq for (seq,) in cur.fetchall()]
            if state == FILTERED and seqs:
                self._hold_free_urls(cur, seqs)
        return len(seqs)

    def _hold_free_urls(self, cur: psycopg.Cursor[Any], seqs: list[int]) -> None:
        """Rows back in a seen state hold their URL again, unless another row already does."""
        cur.execute(
            "UPDATE sdi_results SET holds_url = true WHERE seq IN ("
            "SELECT DISTINCT ON (x.crawler, x.url) x.seq FROM sdi_results x WHERE x.seq = ANY(%s) "
            "AND NOT x.holds_url AND NOT EXISTS (SELECT 1 FROM sdi_results o WHERE o.crawler = x.crawler "
            f"AND o.url = x.url AND o.holds_url AND o.state IN {_SEEN}) ORDER BY x.crawler, x.url, x.seq)",
            (seqs,),
        )

    def replace_invalid(self, rows: Mapping[str, Row], dedup: bool) -> Counter[str]:
        if not rows:
            return Counter()
        with self._tx() as cur:
            cur.execute(
                "SELECT seq, id FROM sdi_results WHERE state = 'invalid' AND id = ANY(%s) ORDER BY seq FOR UPDATE",
                (list(rows),),
            )
            found = cur.fetchall()
            seen = self._seen_urls(cur, [rows[id_] for _, id_ in found]) if dedup else set()
            changed = [(_unless_seen(id_, rows[id_], seen, dedup), seq) for seq, id_ in found]
            for row, seq in changed:
                pending = row.state == PENDING
                cur.execute(
                    "UPDATE sdi_results SET id = %s, url = %s, state = %s, reason = %s, ready_at = 0, "
                    "lease_owner = NULL, lease_until = NULL, holds_url = %s, "
                    "payload = CASE WHEN %s THEN %s ELSE payload END WHERE seq = %s",
                    (
                        row.id,
                        pg_text(row.url),
                        row.state,
                        pg_text(row.reason),
                        dedup and pending,
                        pending,
                        row.payload,
                        seq,
                    ),
                )
        return Counter(row.state for row, _ in changed)

    def prune(self, older_than_days: float) -> int:
        cutoff = time.time() - older_than_days * 86400
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM sdi_results WHERE state = 'delivered' AND delivered_at < %s", (cutoff,)
            )
            return cur.rowcount

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO sdi_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- owners --------------------------------------------------------------------------------

    def _lock_owner(self, owner: str) -> None:
        assert self._conn is not None
        key = self._held[owner]
        (taken,) = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() or (
            False,
        )
        if not taken:
            raise BufferLocked(
                f"PostgreSQL at {self.location}: lease owner {owner} is held by another session"
            )
        self._conn.execute(
            "INSERT INTO sdi_owners (owner, lock_key, since) VALUES (%s, %s, %s) ON CONFLICT (owner) DO NOTHING",
            (owner, key, time.time()),
        )

    def hold_owner(self, owner: str) -> None:
        import psycopg

        if owner in self._held:
            return
        if not self._held:  # the owners' locks live on this thread's connection
            self._home = threading.get_ident()
        self._held[owner] = lock_key(owner)
        try:
            self._connection()
            self._lock_owner(owner)
        except psycopg.Error as exc:
            raise self._typed(exc, BufferWriteError) from None

    def reclaim_dead(self) -> int:
        """Rows leased to registered owners whose advisory lock no session holds: pending at once."""
        with self._tx() as cur:
            cur.execute(
                "WITH dead AS (SELECT o.owner FROM sdi_owners o WHERE NOT EXISTS ("
                " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND l.classid::bigint = o.lock_key >> 32 AND l.objid::bigint = o.lock_key & 4294967295)), "
                "gone AS (DELETE FROM sdi_owners WHERE owner IN (SELECT owner FROM dead)) "
                "UPDATE sdi_results SET state = 'pending', lease_owner = NULL, lease_until = NULL "
                "WHERE seq IN (SELECT seq FROM sdi_results WHERE state = 'in_flight' "
                "AND lease_owner IN (SELECT owner FROM dead) FOR UPDATE SKIP LOCKED)"
            )
            return cur.rowcount

    # -- reading -------------------------------------------------------------------------------

    def counts(self, crawler: str | None = None) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        where, params = ("WHERE crawler = %s", (crawler,)) if crawler is not None else ("", ())
        with self._read() as cur:
            cur.execute(f"SELECT state, count(*) FROM sdi_results {where} GROUP BY state", params)
            for state, n in cur.fetchall():
                counts[state] = n
        return counts

    def counts_by_crawler(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        with self._read() as cur:
            cur.execute("SELECT crawler, state, count(*) FROM sdi_results GROUP BY crawler, state")
            for crawler, state, n in cur.fetchall():
                table.setdefault(crawler, dict.fromkeys(STATES, 0))[state] = n
        return table

    def oldest_pending_age(self, crawler: str | None = None) -> float | None:
        where, params = ("AND crawler = %s", (crawler,)) if crawler is not None else ("", ())
        with self._read() as cur:
            cur.execute(
                f"SELECT min(created_at) FROM sdi_results WHERE state IN ('pending', 'in_flight') {where}",
                params,
            )
            (oldest,) = cur.fetchone() or (None,)
        return None if oldest is None else max(0.0, time.time() - oldest)

    def export(
        self,
        state: str,
        crawler: str | None = None,
        since: float | None = None,
        *,
        ids: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        clauses: list[str] = ["state = %s"]
        params: list[Any] = [state]
        if crawler is not None:
            clauses.append("crawler = %s")
            params.append(crawler)
        if since is not None:
            clauses.append("created_at >= %s")
            params.append(since)
        if ids is not None:
            clauses.append("id = ANY(%s)")
            params.append(list(ids))
        with self._read() as cur:
            cur.execute(
                f"SELECT {_COLUMNS} FROM sdi_results WHERE {' AND '.join(clauses)} ORDER BY seq",
                params,
            )
            names = [d.name for d in cur.description or ()]
            found = cur.fetchall()
        for values in found:
            record = dict(zip(names, values, strict=True))
            record["payload"] = bytes(record["payload"])
            yield record

    def outstanding(self, crawler: str, created_before: float) -> int:
        with self._read() as cur:
            cur.execute(
                "SELECT (SELECT count(*) FROM sdi_results WHERE state = 'pending' AND crawler = %(c)s AND created_at <= %(t)s)"
                " + (SELECT count(*) FROM sdi_results WHERE state = 'in_flight' AND crawler = %(c)s AND created_at <= %(t)s)",
                {"c": crawler, "t": created_before},
            )
            (n,) = cur.fetchone() or (0,)
        return int(n)

    def crawlers_with_pending(self) -> list[str]:
        with self._read() as cur:
            cur.execute(
                "SELECT crawler FROM sdi_results WHERE state = 'pending' "
                "UNION SELECT crawler FROM sdi_results WHERE state = 'in_flight'"
            )
            return sorted(c for (c,) in cur.fetchall())

    def get_meta(self, key: str) -> str | None:
        with self._read() as cur:
            cur.execute("SELECT value FROM sdi_meta WHERE key = %s", (key,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def size_bytes(self) -> int | None:
        """The tables and their indexes on the server."""
        with self._read() as cur:
            cur.execute(
                "SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY['sdi_results', 'sdi_meta', "
                "'sdi_owners', 'sdi_schema']::regclass[]) AS c"
            )
            (size,) = cur.fetchone() or (None,)
        return None if size is None else int(size)

    def server_version(self) -> str:
        """The server's version, for ``scrapy sdi check``."""
        with self._read() as cur:
            cur.execute("SHOW server_version")
            return str((cur.fetchone() or ("?",))[0])

    def close(self) -> None:
        """Close the connections: the server drops the advisory locks, so the owners read as dead."""
        self._held.clear()
        for conn in list(self._conns.values()):
            with suppress(psycopg_errors()):  # a broken connection may fail to close; it is gone
                conn.close()
        self._conns.clear()
