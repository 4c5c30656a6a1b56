"""Buffers for the tests: a third-party one as a user would plug in through SDI_BUFFER, a nearly
full one, and a file as an older scrapy_sdi wrote it."""

from __future__ import annotations

import sqlite3
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
