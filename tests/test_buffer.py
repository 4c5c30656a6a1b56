"""The result buffer: the backend contract (``scrapy_sdi.testing.buffer_contract``) over the
built-ins (memory, SQLite, PostgreSQL on a private cluster), SQLite specifics, and processes sharing one SQLite file.

Time is moved with the ``clock`` fixture (it replaces ``scrapy_sdi.buffer.time``), so lease
expiry, release delays and retention are tested without sleeping.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import scrapy_sdi.buffer as buffer_mod
from scrapy_sdi.buffer import (
    DELIVERED,
    FILTERED,
    IN_FLIGHT,
    INVALID,
    PENDING,
    REJECTED,
    SCHEMA_VERSION,
    STATES,
    BufferFileError,
    BufferWriteError,
    Claimed,
    Lease,
    MemoryBuffer,
    Row,
    SQLiteBuffer,
    readonly_uri,
)
from scrapy_sdi.buffer_postgres import PostgresBuffer
from scrapy_sdi.testing.buffer_contract import (
    LEASE,
    BufferContract,
    Clock,
    by_id,
    ids,
    nonzero,
    row,
)
from tests.support.buffers import schema_1_buffer, schema_2_buffer, schema_3_buffer

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "support" / "buffer_worker.py"


# -- the contract, over every built-in ---------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(buffer_mod, "time", c)
    return c


class TestSQLiteBufferContract(BufferContract):
    @pytest.fixture
    def buffer(self, tmp_path: Path):
        b = SQLiteBuffer(tmp_path / "b.db")
        yield b
        b.close()


class TestPostgresBufferContract(BufferContract):
    @pytest.fixture
    def buffer(self, postgres_db):
        b = PostgresBuffer(postgres_db.url)
        yield b
        b.close()


class TestMemoryBufferContract(BufferContract):
    @pytest.fixture
    def buffer(self):
        b = MemoryBuffer()
        yield b
        b.close()


# -- leases, prune: what each built-in does beyond the contract -------------------------------


@pytest.fixture
def sqlite_buf(tmp_path: Path, clock: Clock):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def test_sqlite_leased_rows_follow_earlier_rows_in_order(sqlite_buf, clock):
    """Rowids are given by enqueue: they must keep counting from what the file already holds."""
    sqlite_buf.enqueue([row("a"), row("b")], dedup=True)
    sqlite_buf.enqueue([row("c"), row("d")], dedup=True, lease=Lease("me", clock.now + LEASE, 2))
    clock.advance(LEASE * 2)
    assert ids(sqlite_buf.claim("c1", "o", 10, 60)) == ["a", "b", "c", "d"]


def test_prune_forgets_only_delivered_rows_older_than_retention(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("old"), row("old-rejected"), row("new"), row("pending")], dedup=True)
    b.claim("c1", "o", 2, 3600)
    b.ack({"old": "accepted"}, {"old-rejected": "r"})
    clock.advance(5 * 86400)
    b.claim("c1", "o", 1, 3600)
    b.ack({"new": "accepted"}, {})
    clock.advance(1 * 86400)  # "old" delivered 6 days ago, "new" 1 day ago

    assert b.prune(7) == 0
    assert b.prune(2) == 1
    assert sorted(r["id"] for s in STATES for r in b.export(s)) == [
        "new",
        "old-rejected",
        "pending",
    ]
    assert b.prune(2) == 0
    assert b.prune(0.5) == 1
    assert nonzero(b.counts()) == {PENDING: 1, REJECTED: 1}
    # a pruned URL is forgotten: it may be buffered again
    assert b.enqueue([row("old-again", "https://example.com/old")], dedup=True) == [True]


def test_sqlite_prune_takes_the_payloads_along_and_rowids_can_come_back(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("a"), row("b")], dedup=True)
    b.claim("c1", "o", 2, 3600)
    b.ack({"a": "accepted", "b": "accepted"}, {})
    clock.advance(2 * 86400)
    assert b.prune(1) == 2
    assert b._conn.execute("SELECT count(*) FROM payloads").fetchone() == (0,)
    # the next rows take the freed rowids again, with their own payloads
    b.enqueue([row("c", "https://example.com/a")], dedup=True)
    assert [(c.id, c.payload) for c in b.claim("c1", "o", 5, 60)] == [("c", b'{"id": "c"}')]


def test_memory_prune_is_a_no_op(clock):
    b = MemoryBuffer()
    b.enqueue([row("a")], dedup=True)
    b.claim("c1", "o", 1, 60)
    b.ack({"a": "accepted"}, {})
    clock.advance(30 * 86400)
    assert b.prune(1) == 0
    assert b.counts()[DELIVERED] == 1
    assert b.durable is False


# -- SQLite specifics -------------------------------------------------------------------------


def test_sqlite_rows_survive_close_and_reopen(tmp_path, clock):
    path = tmp_path / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue([row("a"), row("b"), row("c"), row("i", state=INVALID, reason="bad")], dedup=True)
    b.claim("c1", "o", 1, 60)
    b.ack({"a": "accepted"}, {})
    b.set_meta("k", "v")
    b.close()

    b2 = SQLiteBuffer(path)
    try:
        assert b2.durable is True
        assert nonzero(b2.counts()) == {PENDING: 2, DELIVERED: 1, INVALID: 1}
        assert by_id(b2, INVALID)["i"]["reason"] == "bad"
        assert by_id(b2, DELIVERED)["a"]["outcome"] == "accepted"
        assert b2.get_meta("k") == "v"
        assert b2.enqueue([row("dup", "https://example.com/a")], dedup=True) == [False]
        assert [(c.id, c.payload) for c in b2.claim("c1", "o", 10, 60)] == [
            ("b", b'{"id": "b"}'),
            ("c", b'{"id": "c"}'),
        ]
    finally:
        b2.close()


def test_sqlite_in_flight_rows_of_a_dead_process_come_back_after_reopen(tmp_path, clock):
    path = tmp_path / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue([row("a")], dedup=True)
    b.claim("c1", "dead", 10, LEASE)
    b.close()
    clock.advance(1)
    b2 = SQLiteBuffer(path)
    try:
        assert [(c.id, c.attempts) for c in b2.claim("c1", "next", 10, 60)] == [("a", 0)]
    finally:
        b2.close()


def test_sqlite_log_is_checkpointed_on_a_thread_of_its_own_until_close(tmp_path, monkeypatch):
    """The crawl's connection leaves checkpoints to the buffer's thread (it steps in only far
    behind): rows committed reach the file itself while the crawl goes on, and close stops it."""
    monkeypatch.setattr(buffer_mod, "_CHECKPOINT_CHANGES", 10)
    path = tmp_path / "b.db"
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (
            buffer_mod._BACKSTOP_PAGES,
        )
        assert b.enqueue([row(f"r{i}") for i in range(20)], dedup=True) == [True] * 20
        # the file alone, without its log: what checkpoints have copied into it
        in_file = f"{readonly_uri(path)}&immutable=1"
        deadline = time.monotonic() + 30
        while _rows_in_file(in_file) != 20:
            assert time.monotonic() < deadline, "the log was never checkpointed"
            time.sleep(0.01)
        assert any(t.name == "sdi-checkpoint" for t in threading.enumerate())
    finally:
        b.close()
    assert not any(t.name == "sdi-checkpoint" for t in threading.enumerate())


def _rows_in_file(uri: str) -> int:
    db = sqlite3.connect(uri, uri=True)
    try:
        return db.execute("SELECT count(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # not even the tables are in the file yet
        return 0
    finally:
        db.close()


def test_sqlite_schema_version_is_recorded(sqlite_buf):
    (version,) = sqlite_buf._conn.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION >= 1
    (mode,) = sqlite_buf._conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def test_sqlite_schema_1_buffer_is_upgraded_with_every_row_and_payload(tmp_path):
    path = tmp_path / "old.db"
    schema_1_buffer(
        path,
        [
            ("p1", PENDING, None),
            ("d", DELIVERED, None),
            ("r", REJECTED, "bad"),
            ("p2", PENDING, None),
        ],
    )
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert "payload" not in {
            column for (_, column, *_) in b._conn.execute("PRAGMA table_info(results)")
        }
        assert [(r["id"], r["payload"]) for r in b.export(REJECTED)] == [("r", b'{"id": "r"}')]
        assert [(c.id, c.payload) for c in b.claim("c1", "o", 10, 60)] == [
            ("p1", b'{"id": "p1"}'),
            ("p2", b'{"id": "p2"}'),
        ]
        assert b.enqueue([row("p1")], dedup=True) == [
            False
        ]  # what the old file had seen, still seen
    finally:
        b.close()


def test_sqlite_schema_2_buffer_is_upgraded_and_its_rows_count_as_matched_against_no_filters(
    tmp_path,
):
    path = tmp_path / "old.db"
    schema_2_buffer(
        path,
        [
            ("p1", PENDING, None),
            ("d", DELIVERED, None),
            ("f", FILTERED, "filter 1 (url exact 'x')"),
        ],
    )
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert [r["reason"] for r in b.export(FILTERED)] == ["filter 1 (url exact 'x')"]
        # an older scrapy_sdi matched its rows against nothing delivery can know: they are matched when sent
        assert b.claim("c1", "o", 10, 60) == [Claimed("p1", b'{"id": "p1"}', 0, None)]
        assert b.enqueue([row("p1")], dedup=True) == [False]
    finally:
        b.close()


def test_sqlite_schema_3_buffer_is_upgraded_and_its_rows_in_flight_keep_their_leases(
    tmp_path, clock
):
    path = tmp_path / "old.db"
    now = clock.time()
    schema_3_buffer(
        path,
        [("p1", PENDING, None), ("live", IN_FLIGHT, None), ("expired", IN_FLIGHT, None)],
        {"live": ("other", now + 60), "expired": ("gone", now - 1)},
    )
    b = SQLiteBuffer(path)
    try:
        assert b._conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (4,)
        assert nonzero(b.counts("c1")) == {PENDING: 1, IN_FLIGHT: 2}
        assert b.outstanding("c1", float("inf")) == 3
        assert b.crawlers_with_pending() == ["c1"]
        # the expired lease ends at the next claim; the live one holds until its expiry
        assert ids(b.claim("c1", "o", 10, 600)) == ["p1", "expired"]
        assert ids(b.claim("c1", "o", 10, 600)) == []
        clock.advance(61)
        assert ids(b.claim("c1", "o", 10, 600)) == ["live"]
    finally:
        b.close()


def test_a_buffer_without_mark_filtered_still_never_sends_an_excluded_row(clock):
    class Minimal(MemoryBuffer):
        mark_filtered = buffer_mod.Buffer.mark_filtered  # what a third-party buffer inherits

    b = Minimal()
    b.enqueue([row("a")], dedup=False)
    b.claim("c1", "o", 10, 60)
    b.mark_filtered({"a": "filter 1 (url exact 'x')"})
    assert [(r["id"], r["reason"]) for r in b.export(REJECTED)] == [
        ("a", "excluded by filter 1 (url exact 'x')")
    ]
    assert b.claim("c1", "o", 10, 60, ignore_ready_at=True) == []


def test_sqlite_newer_schema_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "future.db"
    SQLiteBuffer(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert "upgrade" in str(info.value)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1  # left untouched
    conn.close()


def test_sqlite_file_is_owner_only(tmp_path):
    path = tmp_path / "sub" / "dir" / "b.db"
    old = os.umask(0o022)
    try:
        b = SQLiteBuffer(path)
    finally:
        os.umask(old)
    try:
        b.enqueue([row("a")], dedup=True)  # the WAL file exists once something was written
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
    finally:
        b.close()


def test_sqlite_path_that_cannot_be_created_names_the_path(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    path = blocker / "b.db"
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert blocker.read_text() == "not a directory"


def test_sqlite_garbage_file_is_refused(tmp_path):
    path = tmp_path / "garbage.db"
    garbage = bytes(range(256)) * 16
    path.write_bytes(garbage)
    with pytest.raises(BufferFileError) as info:
        SQLiteBuffer(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == garbage


def test_sqlite_outstanding_ignores_rows_created_after_the_cutoff(sqlite_buf, clock):
    b = sqlite_buf
    b.enqueue([row("early")], dedup=True)
    cutoff = clock.now
    clock.advance(10)
    b.enqueue([row("late")], dedup=True)
    assert b.outstanding("c1", cutoff) == 1
    assert b.outstanding("c1", clock.now) == 2
    assert b.outstanding("c1", cutoff - 1) == 0


def test_sqlite_enqueue_is_one_transaction(sqlite_buf):
    sqlite_buf.enqueue([row("a")], dedup=False)
    broken = row("c")
    broken.payload = None  # NOT NULL: the whole group fails, nothing of it is stored
    with pytest.raises(BufferWriteError, match="NOT NULL"):
        sqlite_buf.enqueue([row("b"), broken], dedup=False)
    assert [r["id"] for r in sqlite_buf.export(PENDING)] == ["a"]
    assert sqlite_buf.enqueue([row("b")], dedup=False) == [True]  # and the connection still works


def test_sqlite_dedup_large_groups(sqlite_buf):
    n = 1_200  # more than one dedup chunk
    sqlite_buf.enqueue(
        [row(f"a{i}", f"https://example.com/{i}") for i in range(0, n, 2)], dedup=True
    )
    flags = sqlite_buf.enqueue(
        [row(f"b{i}", f"https://example.com/{i}") for i in range(n)], dedup=True
    )
    assert flags == [i % 2 == 1 for i in range(n)]
    assert sqlite_buf.counts()[PENDING] == n


# -- the claim query on a big buffer ----------------------------------------------------------


@pytest.fixture(scope="module")
def big_buffer(tmp_path_factory):
    """200,000 pending rows (two crawlers), some already delivered; the claim's query as run."""
    path = tmp_path_factory.mktemp("big") / "b.db"
    b = SQLiteBuffer(path)
    b.enqueue(
        [Row(f"id{i}", "big" if i % 10 else "small", f"u{i}", b"{}") for i in range(200_000)],
        dedup=False,
    )
    delivered = b.claim("big", "o", 5_000, 60)
    b.ack({c.id: "accepted" for c in delivered}, {})
    statements: list[str] = []
    b._conn.set_trace_callback(statements.append)
    claimed = b.claim("big", "o", 50, 60)
    b._conn.set_trace_callback(None)
    (query,) = [
        s for s in statements if "'pending'" in s and "LIMIT" in s
    ]  # the rows to lease, oldest first
    plan = [detail for *_, detail in b._conn.execute("EXPLAIN QUERY PLAN " + query)]
    yield b, claimed, plan
    b.close()


def test_claim_on_a_big_buffer_returns_the_oldest(big_buffer):
    b, claimed, _ = big_buffer
    assert len(claimed) == 50
    assert claimed[0].id == "id5556"  # the first 5,000 "big" rows were delivered
    assert b.counts("big")[IN_FLIGHT] == 50


def test_claim_query_is_an_index_search_without_sort(big_buffer):
    _, _, plan = big_buffer
    text = "\n".join(plan)
    assert not any(d.startswith("SCAN results") for d in plan), text
    assert "TEMP B-TREE" not in text, text
    assert any(d.startswith("SEARCH results USING INDEX") for d in plan), text


# -- several processes on one file ------------------------------------------------------------


def _run_workers(
    argvs: list[list[str]], go: Path, timeout: float = 60
) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    go.touch()
    results = []
    try:
        for p, argv in zip(procs, argvs, strict=True):
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(argv, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r in results:
        assert "database is locked" not in r.stderr, r.stderr
        assert r.returncode == 0, r.stderr
    return results


def test_processes_claim_each_row_exactly_once(tmp_path):
    path = tmp_path / "shared.db"
    n_rows, n_workers = 3_000, 3
    b = SQLiteBuffer(path)
    b.enqueue([row(f"r{i}") for i in range(n_rows)], dedup=True)
    b.close()

    outs = [tmp_path / f"claimed-{w}.txt" for w in range(n_workers)]
    _run_workers(
        [
            ["claim", str(path), str(out), str(tmp_path / "go"), "c1", f"worker-{w}", "50"]
            for w, out in enumerate(outs)
        ],
        tmp_path / "go",
    )

    per_worker = [out.read_text().split() for out in outs]
    every = Counter(i for claimed in per_worker for i in claimed)
    assert set(every) == {f"r{i}" for i in range(n_rows)}
    assert [i for i, n in every.items() if n > 1] == []
    assert sum(len(c) for c in per_worker) == n_rows
    b = SQLiteBuffer(path)
    try:
        assert nonzero(b.counts()) == {DELIVERED: n_rows}
        assert {r["attempts"] for r in b.export(DELIVERED)} == {1}
    finally:
        b.close()


def test_opening_a_new_file_waits_while_another_process_switches_it_to_wal(tmp_path):
    """A process switching a new file to WAL holds its write lock in rollback mode for a moment;
    another process opening the file then must wait its busy timeout, not fail at once (SQLite
    answers "database is locked" there without calling the busy handler)."""
    path = tmp_path / "shared.db"
    held, release = tmp_path / "held", tmp_path / "release"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time, pathlib\n"
            "db, held, release = sys.argv[1:]\n"
            "conn = sqlite3.connect(db, isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "conn.execute('CREATE TABLE switching (x)')\n"
            "pathlib.Path(held).touch()\n"
            "while not pathlib.Path(release).exists(): time.sleep(0.005)\n"
            "time.sleep(0.3)\n"
            "conn.execute('ROLLBACK')\n",
            str(path),
            str(held),
            str(release),
        ]
    )
    try:
        while not held.exists():
            assert holder.poll() is None
            time.sleep(0.005)
        release.touch()  # the holder lets go 0.3 s from now, well inside the busy timeout
        b = SQLiteBuffer(path, busy_timeout=30)
        try:
            assert b._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert b.enqueue([row("a")], dedup=True) == [True]
        finally:
            b.close()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-file", "fresh-file"])
def test_processes_enqueue_same_urls_with_dedup_store_each_once(tmp_path, fresh):
    """Three processes buffer the same 600 URLs concurrently; each URL is stored once. With
    ``fresh`` the file does not exist yet: the processes also race to create and migrate it."""
    path = tmp_path / "shared.db"
    n_urls, n_workers = 600, 3
    if not fresh:
        SQLiteBuffer(path).close()
    outs = [tmp_path / f"stored-{w}.txt" for w in range(n_workers)]
    _run_workers(
        [
            ["enqueue", str(path), str(out), str(tmp_path / "go"), "c1", f"w{w}", str(n_urls), "20"]
            for w, out in enumerate(outs)
        ],
        tmp_path / "go",
    )

    stored = [i for out in outs for i in out.read_text().split()]
    assert len(stored) == n_urls
    b = SQLiteBuffer(path)
    try:
        rows = list(b.export(PENDING))
        assert sorted(r["id"] for r in rows) == sorted(stored)
        assert Counter(r["url"] for r in rows) == Counter(
            {f"https://example.com/u{k}": 1 for k in range(n_urls)}
        )
        assert sum(b.counts().values()) == n_urls
    finally:
        b.close()


def test_a_read_only_buffer_reads_without_the_write_lock_and_never_writes(tmp_path):
    path = tmp_path / "buffer.db"
    writer = SQLiteBuffer(path)
    writer.enqueue([row("a"), row("b", crawler="c2", state=FILTERED)], dedup=False)
    writer.set_meta("k", "v")
    writer._conn.execute("BEGIN IMMEDIATE")  # a crawl's commit in progress
    try:
        reader = SQLiteBuffer(path, readonly=True, busy_timeout=0.1)
        assert reader.counts_by_crawler() == {
            "c1": {**dict.fromkeys(STATES, 0), PENDING: 1},
            "c2": {**dict.fromkeys(STATES, 0), FILTERED: 1},
        }
        assert reader.get_meta("k") == "v" and reader.oldest_pending_age("c1") is not None
        with pytest.raises(BufferWriteError, match="readonly"):
            reader.set_meta("k", "w")
        reader.close()
    finally:
        writer._conn.execute("ROLLBACK")
        writer.close()
    missing = tmp_path / "missing.db"
    with pytest.raises(BufferFileError):
        SQLiteBuffer(missing, readonly=True)
    assert not missing.exists()


def test_a_read_only_buffer_refuses_a_schema_it_cannot_upgrade(tmp_path):
    path = tmp_path / "old.db"
    schema_1_buffer(path, [("a", PENDING, None)])
    with pytest.raises(BufferFileError, match="schema 1.*scrapy sdi buffer"):
        SQLiteBuffer(path, readonly=True)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
