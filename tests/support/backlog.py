"""Watch a real buffer file for the most rows ever waiting for delivery (pending or in flight)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from scrapy_sdi.buffer import SQLiteBuffer


def watch_waiting_rows(path: Path) -> None:
    """Create the buffer file with a trigger of the test's that records, at every insert, how
    many of that crawler's rows wait: sampling from outside could miss a peak."""
    SQLiteBuffer(path).close()
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE test_peak (n INTEGER NOT NULL);
            INSERT INTO test_peak VALUES (0);
            CREATE TRIGGER test_peak_on_insert AFTER INSERT ON results BEGIN
                UPDATE test_peak SET n = max(n, (SELECT count(*) FROM results
                    WHERE crawler = new.crawler AND state IN ('pending', 'in_flight')));
            END;
            """
        )


def waiting_peak(path: Path) -> int:
    """The most rows that ever waited at once, since ``watch_waiting_rows``."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT n FROM test_peak").fetchone()[0]
