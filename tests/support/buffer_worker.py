"""A subprocess that uses one SQLite buffer file alongside others (driven by tests/test_buffer.py).

    python buffer_worker.py claim   DB OUT GO CRAWLER OWNER BATCH
    python buffer_worker.py enqueue DB OUT GO CRAWLER WORKER N_URLS BATCH

Each mode waits for the file GO to exist (so all workers start together), then:

* ``claim``: claims batches of BATCH rows and acks them as accepted until a claim comes back
  empty; writes every claimed id to OUT, one a line.
* ``enqueue``: enqueues N_URLS rows with dedup on, URLs ``u0..u{N-1}`` (shared by every worker),
  ids ``WORKER-k``, in batches of BATCH, in an order shuffled per worker; writes the ids that
  were stored to OUT.

Any exception goes to stderr with its traceback and a non-zero exit code.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scrapy_sdi.buffer import Row, SQLiteBuffer  # noqa: E402


def _wait_for(go: Path) -> None:
    deadline = time.monotonic() + 30
    while not go.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"start file {go} never appeared")
        time.sleep(0.005)


def claim(db: str, out: str, go: str, crawler: str, owner: str, batch: str) -> None:
    _wait_for(Path(go))
    buffer = SQLiteBuffer(db)
    claimed: list[str] = []
    try:
        while True:
            rows = buffer.claim(crawler, owner, int(batch), 120.0)
            if not rows:
                break
            claimed.extend(r.id for r in rows)
            buffer.ack({r.id: "accepted" for r in rows}, {})
    finally:
        Path(out).write_text("".join(f"{i}\n" for i in claimed))
        buffer.close()


def enqueue(db: str, out: str, go: str, crawler: str, worker: str, n_urls: str, batch: str) -> None:
    _wait_for(Path(go))
    buffer = SQLiteBuffer(db)
    order = list(range(int(n_urls)))
    random.Random(worker).shuffle(order)
    rows = [
        Row(f"{worker}-{k}", crawler, f"https://example.com/u{k}", b'{"k": %d}' % k) for k in order
    ]
    stored: list[str] = []
    try:
        size = int(batch)
        for start in range(0, len(rows), size):
            group = rows[start : start + size]
            flags = buffer.enqueue(group, dedup=True)
            stored.extend(r.id for r, ok in zip(group, flags, strict=True) if ok)
    finally:
        Path(out).write_text("".join(f"{i}\n" for i in stored))
        buffer.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"claim": claim, "enqueue": enqueue}[mode](*args)
