"""A third-party buffer, as a user would plug one in through SDI_BUFFER."""

from scrapy_sdi.buffer import MemoryBuffer, SQLiteBuffer


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
