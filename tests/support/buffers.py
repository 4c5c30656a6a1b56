"""Buffers for the tests: a third-party one as a user would plug in through SDI_BUFFER, a nearly
full one, and a file as an older scrapy_sdi wrote it."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from scrapy_sdi.buffer import _MIGRATIONS, MemoryBuffer, SQLiteBuffer


class RecordingBuffer(MemoryBuffer):
    """A memory buffer that also counts its enqueue calls, to prove it was the one used."""

    calls = 0

    def enqueue(self, rows, dedup, lease=None):
        type(self).calls += 1
        return super().enqueue(rows, dedup, lease)


class NearlyFullSQLiteBuffer(SQLiteBuffer):
    """A SQLite buffer whose file may grow by only a few pages: a real SQLITE_FULL, no tmpfs needed."""

    ROOM_PAGES = 8

    def __init__(self, path, **kwargs):
        super().__init__(path, **kwargs)
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        self._conn.execute(f"PRAGMA max_page_count = {pages + self.ROOM_PAGES}")


def schema_1_buffer(path: Path, rows: list[tuple[str, str, str | None]]) -> None:
    """A buffer file as scrapy_sdi wrote it before payloads had a table of their own."""
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[1]:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO results (id, crawler, url, payload, state, reason, created_at) VALUES (?, 'c1', ?, ?, ?, ?, 0)",
        [
            (id_, f"https://example.com/{id_}", f'{{"id": "{id_}"}}'.encode(), state, reason)
            for id_, state, reason in rows
        ],
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def schema_2_buffer(path: Path, rows: list[tuple[str, str, str | None]]) -> None:
    """A buffer file as scrapy_sdi wrote it before rows remembered the filters they passed."""
    schema_1_buffer(path, rows)
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[2]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()


def schema_3_buffer(
    path: Path,
    rows: list[tuple[str, str, str | None]],
    leases: dict[str, tuple[str, float]],
) -> None:
    """A buffer file as scrapy_sdi wrote it before leases had a table of their own: ``leases``
    maps ids of in-flight rows to their (owner, expiry), kept on each row."""
    schema_2_buffer(path, rows)
    conn = sqlite3.connect(path)
    for statement in _MIGRATIONS[3]:
        conn.execute(statement)
    conn.executemany(
        "UPDATE results SET lease_owner = ?, lease_until = ? WHERE id = ?",
        [(owner, until, id_) for id_, (owner, until) in leases.items()],
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


class BlockingSQLiteBuffer(SQLiteBuffer):
    """A SQLite buffer that says it blocks, as a database server's does: the crawl runs its calls
    on BufferCalls' worker thread. Another connection holding the file's write lock stalls it."""

    blocking = True


class StallingBuffer(MemoryBuffer):
    """A blocking memory buffer whose calls can be held (``stall``/``resume``), recording the
    thread each ran on."""

    blocking = True

    def __init__(self) -> None:
        super().__init__()
        self._go = threading.Event()
        self._go.set()
        #: Set while a call is held.
        self.stalled = threading.Event()
        self.threads: list[str] = []
        self.calls = 0
        self.closed_on: str | None = None

    def stall(self) -> None:
        self._go.clear()

    def resume(self) -> None:
        self._go.set()

    def _enter(self) -> None:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        if not self._go.is_set():
            self.stalled.set()
            self._go.wait()
            self.stalled.clear()

    def enqueue(self, rows, dedup, lease=None):
        self._enter()
        return super().enqueue(rows, dedup, lease)

    def counts(self, crawler=None):
        self._enter()
        return super().counts(crawler)

    def close(self) -> None:
        self.closed_on = threading.current_thread().name
        super().close()
