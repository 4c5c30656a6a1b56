"""What the PostgreSQL buffer does beyond the contract (run in tests/test_buffer.py): its schema,
owners proven dead by their advisory locks, workers sharing it, lost connections, masked secrets.

Every test runs on a fresh database of a real server (tests/support/postgres.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psycopg
import pytest

from scrapy_sdi.buffer import (
    DELIVERED,
    FILTERED,
    IN_FLIGHT,
    INVALID,
    PENDING,
    REJECTED,
    BufferFileError,
    BufferLocked,
    BufferWriteError,
    Lease,
    Row,
    open_buffer,
)
from scrapy_sdi.buffer_postgres import SCHEMA_VERSION, PostgresBuffer, display_url
from scrapy_sdi.testing.buffer_contract import ids, nonzero, row
from tests.support.postgres import PASSWORD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg(postgres_db):
    b = PostgresBuffer(postgres_db.url)
    yield b
    b.close()


def _python(code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# -- schema -------------------------------------------------------------------------------------


def test_the_schema_is_created_once_and_rows_survive_a_reopen(postgres_db, pg):
    assert pg.schema_version() == SCHEMA_VERSION
    pg.enqueue([row("a"), row("b")], dedup=True)
    pg.set_meta("filters", "v1")
    pg.close()
    again = PostgresBuffer(postgres_db.url)
    try:
        assert again.schema_version() == SCHEMA_VERSION
        assert nonzero(again.counts()) == {PENDING: 2}
        assert again.get_meta("filters") == "v1"
        assert again.enqueue([row("a2", url="https://example.com/a")], dedup=True) == [False]
    finally:
        again.close()


def test_a_newer_schema_is_refused_in_one_line_naming_the_server_without_its_password(
    postgres_db, pg
):
    pg.close()
    with psycopg.connect(postgres_db.url, autocommit=True) as conn:
        conn.execute("UPDATE sdi_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(BufferFileError) as info:
        PostgresBuffer(postgres_db.url)
    text = str(info.value)
    assert "\n" not in text and PASSWORD not in text
    assert "newer than this scrapy_sdi knows" in text and "upgrade scrapy_sdi" in text
    assert display_url(postgres_db.url) in text


def test_the_buffer_says_it_blocks_and_where_it_is_without_the_password(postgres_db, pg):
    assert pg.blocking is True and pg.durable is True
    assert PASSWORD not in pg.location and pg.location == display_url(postgres_db.url)
    assert ":***@" in pg.location
    assert pg.size_bytes() > 0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db", "postgresql://h/db"),
        ("postgresql:///db?host=/run/pg&password=pw", "postgresql:///db?host=/run/pg&password=***"),
    ],
)
def test_display_url_masks_every_password(url, shown):
    assert display_url(url) == shown


def test_an_unreachable_server_is_one_line_naming_it_without_the_password(postgres_server):
    url = f"postgresql://sdi:{PASSWORD}@127.0.0.1:1/nowhere?password={PASSWORD}"
    with pytest.raises(BufferFileError) as info:
        PostgresBuffer(url, connect_timeout=2)
    text = str(info.value)
    assert PASSWORD not in text and "\n" not in text
    assert "127.0.0.1:1/nowhere" in text and "***" in text


def test_open_buffer_builds_it_from_the_settings(postgres_db):
    class Settings:
        buffer = "postgres"
        buffer_url = postgres_db.url

    b = open_buffer(Settings())
    try:
        assert isinstance(b, PostgresBuffer)
    finally:
        b.close()


# -- owners -------------------------------------------------------------------------------------

_DIES_HOLDING = """
    import sys, time
    from scrapy_sdi.buffer_postgres import PostgresBuffer
    from scrapy_sdi.testing.buffer_contract import row
    b = PostgresBuffer(sys.argv[1] if len(sys.argv) > 1 else {url!r})
    b.hold_owner("doomed")
    b.enqueue([row("d1"), row("d2"), row("d3")], dedup=True)
    print(len(b.claim("c1", "doomed", 2, 3600)), flush=True)
    time.sleep(600)
"""


def test_a_dead_workers_leases_come_back_at_once_and_a_live_ones_never(postgres_db, pg):
    alive = PostgresBuffer(postgres_db.url)
    try:
        alive.hold_owner("alive")
        alive.enqueue([row("a1"), row("a2")], dedup=True)
        assert ids(alive.claim("c1", "alive", 2, 3600)) == ["a1", "a2"]
        worker = _python(_DIES_HOLDING.format(url=postgres_db.url))
        assert worker.stdout is not None and worker.stdout.readline().strip() == "2"
        assert pg.reclaim_dead() == 0  # the worker lives: its leases (an hour) stay
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        postgres_db.wait_connections(2)  # pg and alive
        assert pg.reclaim_dead() == 2  # no wait for the lease: its lock went with its connection
        assert ids(pg.claim("c1", "me", 10, 60)) == ["d1", "d2", "d3"]
        assert {r["id"] for r in pg.export(IN_FLIGHT)} >= {"a1", "a2"}
        assert pg.reclaim_dead() == 0
    finally:
        alive.close()


def test_a_closed_buffers_owner_reads_as_dead(postgres_db, pg):
    other = PostgresBuffer(postgres_db.url)
    other.hold_owner("run-1")
    other.enqueue([row("a")], dedup=True)
    other.claim("c1", "run-1", 10, 3600)
    assert pg.reclaim_dead() == 0
    other.close()
    postgres_db.wait_connections(1)  # the server drops the lock as its backend exits
    assert pg.reclaim_dead() == 1
    assert nonzero(pg.counts()) == {PENDING: 1}


def test_an_ack_on_another_thread_has_a_connection_of_its_own_and_the_owner_lock_stays_home(
    postgres_db, pg
):
    """BufferCalls runs acks on a second thread (``side_lane``): they get a connection of their
    own, the owner's advisory lock stays on the connection that took it, close closes both."""
    pg.hold_owner("me")
    pg.enqueue([row("a"), row("b")], dedup=True)
    assert ids(pg.claim("c1", "me", 2, 3600)) == ["a", "b"]
    home = pg._connection().info.backend_pid
    side: list[int] = []

    def ack() -> None:
        pg.ack({"a": "accepted"}, {})
        side.append(pg._connection().info.backend_pid)

    thread = threading.Thread(target=ack)
    thread.start()
    thread.join(10)
    assert side and side[0] != home
    assert nonzero(pg.counts()) == {DELIVERED: 1, IN_FLIGHT: 1}
    holders = (
        pg._connection()
        .execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        .fetchall()
    )
    assert holders == [(home,)]
    postgres_db.terminate()  # both connections: only the home one takes the owner's lock again
    with pytest.raises(BufferLocked):
        pg.counts()
    pg.counts()
    other = PostgresBuffer(postgres_db.url)
    try:
        assert other.reclaim_dead() == 0
        pg.close()
        postgres_db.wait_connections(1)  # both of pg's connections are closed
        assert other.reclaim_dead() == 1
    finally:
        other.close()


# -- workers sharing one database ---------------------------------------------------------------

_CLAIMER = """
    import sys
    from scrapy_sdi.buffer import BufferLocked
    from scrapy_sdi.buffer_postgres import PostgresBuffer
    b = PostgresBuffer({url!r})
    b.hold_owner({owner!r})
    got = []
    while True:
        claimed = b.claim("c1", {owner!r}, 25, 3600)
        if not claimed:
            break
        got += [c.id for c in claimed]
        b.ack({{c.id: "accepted" for c in claimed}}, {{}})
    print(" ".join(got))
"""


def test_processes_claiming_at_once_get_disjoint_rows_and_all_of_them(postgres_db, pg):
    n = 2000
    pg.enqueue([row(f"r{i}") for i in range(n)], dedup=True)
    workers = [_python(_CLAIMER.format(url=postgres_db.url, owner=f"w{k}")) for k in range(3)]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    got = [out.split() for out, _ in outputs]
    everything = [i for ids_ in got for i in ids_]
    assert len(everything) == len(set(everything)) == n
    assert nonzero(pg.counts()) == {"delivered": n}


_ENQUEUER = """
    from scrapy_sdi.buffer_postgres import PostgresBuffer
    from scrapy_sdi.testing.buffer_contract import row
    b = PostgresBuffer({url!r})
    stored = 0
    for start in range(0, 600, 50):
        stored += sum(b.enqueue([row(f"{tag}{{i}}", url=f"https://e.x/{{i}}") for i in range(start, start + 50)], dedup=True))
    print(stored)
"""


def test_processes_enqueueing_the_same_urls_store_each_once(postgres_db, pg):
    workers = [_python(_ENQUEUER.format(url=postgres_db.url, tag=t)) for t in "xyz"]
    outputs = [w.communicate(timeout=120) for w in workers]
    assert all(w.returncode == 0 for w in workers), [err for _, err in outputs]
    assert sum(int(out) for out, _ in outputs) == 600
    assert nonzero(pg.counts()) == {PENDING: 600}


# -- lost connections ---------------------------------------------------------------------------


def test_a_terminated_connection_is_buffer_locked_then_the_next_call_reconnects(postgres_db, pg):
    pg.hold_owner("me")
    pg.enqueue([row("a"), row("b")], dedup=True)
    assert ids(pg.claim("c1", "me", 1, 3600)) == ["a"]
    assert postgres_db.terminate() >= 1
    with pytest.raises(BufferLocked) as info:
        pg.enqueue([row("c")], dedup=True)
    assert PASSWORD not in str(info.value)
    assert pg.enqueue([row("c")], dedup=True) == [True]  # reconnected; nothing lost
    assert nonzero(pg.counts()) == {PENDING: 2, IN_FLIGHT: 1}
    # the owner's lock was taken again with the new connection: its lease is not taken back
    other = PostgresBuffer(postgres_db.url)
    try:
        assert other.reclaim_dead() == 0
    finally:
        other.close()


def test_a_restarted_server_costs_one_call_and_nothing_else(postgres_server, postgres_db, pg):
    pg.enqueue([Row("a", "c1", "https://e.x/a", b"{}")], dedup=True)
    postgres_server.restart()
    with pytest.raises(BufferLocked):
        pg.counts()
    assert nonzero(pg.counts()) == {PENDING: 1}


def test_text_with_a_nul_byte_is_kept_with_the_nul_replaced(pg):
    """PostgreSQL's text cannot hold NUL: an invalid item's URL, a reason or an error may (SQLite
    keeps them as they are). The row is kept with U+FFFD for each NUL; its payload is bytes, kept
    exactly. Before, the whole group of rows failed to store and the crawl stopped."""
    bad = Row("n1", "c1", "https://example.com/a\x00b", b'{"url": "a\\u0000b"}', INVALID, "x\x00y")
    assert pg.enqueue([bad, row("ok")], dedup=True) == [True, True]
    (stored,) = pg.export(INVALID)
    assert (stored["url"], stored["reason"]) == ("https://example.com/a\ufffdb", "x\ufffdy")
    assert stored["payload"] == bad.payload
    pg.claim("c1", "me", 10, 60)
    pg.release(["ok"], "error \x00 text", 0)
    (pending,) = pg.export(PENDING)
    assert pending["last_error"] == "error \ufffd text"
    pg.claim("c1", "me", 10, 60, ignore_ready_at=True)
    pg.ack({}, {"ok": "rejected \x00 reason"})
    assert [r["reason"] for r in pg.export(REJECTED)] == ["rejected \ufffd reason"]
    fixed = Row("n1", "c1", "https://example.com/c\x00", b"{}", INVALID, "still \x00 bad")
    assert pg.replace_invalid({"n1": fixed}, dedup=True) == {INVALID: 1}
    assert [r["reason"] for r in pg.export(INVALID)] == ["still \ufffd bad"]


# -- cost ---------------------------------------------------------------------------------------


def _server_count(db, sql: str) -> int:
    """A figure of the server's statistics once every session ended (they flush as sessions end)."""
    db.wait_connections(0)
    previous = None
    while (now := int(db.server.psql(sql, db.name) or 0)) != previous:
        previous = now
        db.server.psql("SELECT pg_sleep(0.2)", db.name)
    return now


def _url_index_reads(db) -> int:
    """Index entries read from the dedup index."""
    return _server_count(
        db, "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'sdi_results_url'"
    )


def _rows_scanned(db) -> int:
    """Rows of sdi_results read by sequential scans."""
    return _server_count(
        db, "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'sdi_results'"
    )


def _held(db, n: int) -> None:
    """``n`` pending rows, stored by a buffer closed since."""
    first = PostgresBuffer(db.url)
    for k in range(n // 500):
        first.enqueue([row(f"h{k}-{i}") for i in range(500)], dedup=True)
    first.close()


@pytest.mark.parametrize("lookup", [True, False], ids=["with-a-filtered-row", "insert-alone"])
def test_a_group_looks_up_its_own_urls_not_every_url_held(postgres_db, lookup):
    """The dedup lookup before each insert probes the index for the group's URLs: it must not
    read every URL held (a fresh table has no statistics, and a hash join over it made each
    commit as slow as the table is large). A filtered row makes the buffer look up first;
    without one, the INSERT's ON CONFLICT alone probes the index."""
    _held(postgres_db, 5000)
    before = _url_index_reads(postgres_db)
    second = PostgresBuffer(postgres_db.url)
    group = [row(f"new{i}") for i in range(100)] + [row("again", url="https://example.com/h0-0")]
    filtered = [row("f", url="https://example.com/h0-1", state=FILTERED, reason="x")]
    stored = second.enqueue(group + (filtered if lookup else []), dedup=True)
    second.close()
    assert stored == [True] * 100 + [False] * (2 if lookup else 1)
    read = _url_index_reads(postgres_db) - before
    assert read <= 10 * len(group), f"{read} index entries read to look up {len(group)} URLs"


def test_a_url_already_held_takes_no_lease_slot_from_a_later_row(pg):
    """A lease smaller than the group's pending rows goes to the first rows stored: a row whose
    URL is already held is skipped before the slots are counted (the INSERT alone, without the
    lookup, would have given it one and left a later row unleased)."""
    pg.enqueue([row("held", url="https://example.com/u1")], dedup=True)
    group = [row("again", url="https://example.com/u1"), row("b"), row("c"), row("d")]
    enqueued = pg.enqueue(group, dedup=True, lease=Lease("me", 1e12, 2))
    assert enqueued == [False, True, True, True]
    assert ids(enqueued.leased) == ["b", "c"]
    assert nonzero(pg.counts()) == {PENDING: 2, IN_FLIGHT: 2}


def test_a_read_only_buffer_reads_and_changes_nothing(postgres_db):
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    with pytest.raises(BufferFileError, match="no scrapy_sdi tables yet") as refused:
        PostgresBuffer(postgres_db.url, readonly=True)
    assert PASSWORD not in str(refused.value) and "sdi:***@" in str(refused.value)
    assert postgres_db.server.psql(tables, postgres_db.name) == "0"  # the schema was not created
    writer = PostgresBuffer(postgres_db.url)
    writer.enqueue([row("a"), row("b")], dedup=True)
    writer.close()
    reader = PostgresBuffer(postgres_db.url, readonly=True)
    try:
        assert nonzero(reader.counts()) == {PENDING: 2} and reader.size_bytes()
        with pytest.raises(BufferWriteError, match="read-only transaction"):
            reader.enqueue([row("c")], dedup=True)
        with pytest.raises(BufferWriteError, match="read-only transaction"):
            reader.claim("c1", "me", 10, 60)
        postgres_db.terminate()  # reconnected, it is read-only still
        with pytest.raises(BufferLocked):
            reader.counts()
        with pytest.raises(BufferWriteError, match="read-only transaction"):
            reader.set_meta("k", "v")
        assert nonzero(reader.counts()) == {PENDING: 2}
    finally:
        reader.close()
    postgres_db.server.psql("UPDATE sdi_schema SET version = 99", postgres_db.name)
    with pytest.raises(BufferFileError, match="schema 99, newer"):
        PostgresBuffer(postgres_db.url, readonly=True)


def test_outcomes_find_their_rows_by_id_without_reading_the_table(postgres_db):
    """Acks, releases and filtered marks find their rows through the id index: on a table without
    statistics an ``id = ANY(...)`` of many ids was a sequential scan of every row, each time."""
    _held(postgres_db, 5000)
    before = _rows_scanned(postgres_db)
    b = PostgresBuffer(postgres_db.url)
    claimed = [c.id for c in b.claim("c1", "me", 400, 60)]
    b.ack({i: "stored" for i in claimed[:300]}, {i: "bad" for i in claimed[300:350]})
    b.release(claimed[350:390], "timeout", 0)
    b.mark_filtered({i: "domain" for i in claimed[390:]})
    b.close()
    scanned = _rows_scanned(postgres_db) - before
    assert scanned < 1000, f"{scanned} rows read by sequential scans for 400 outcomes"
    b = PostgresBuffer(postgres_db.url)
    assert nonzero(b.counts()) == {PENDING: 4640, DELIVERED: 300, REJECTED: 50, FILTERED: 10}
    b.close()


def test_the_buffer_s_session_compiles_nothing(pg):
    """JIT compilation is off for the buffer's statements, which take milliseconds."""
    assert pg._connection().execute("SHOW jit").fetchone() == ("off",)
