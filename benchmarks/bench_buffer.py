"""What the SQLite buffer's bookkeeping costs per row: the drain's claim + ack, the crawl's enqueue + ack.

    python benchmarks/bench_buffer.py [--backlog 200000] [--rounds 5] [--baseline GITREF] [--smoke]

drain: a backlog of ``--backlog`` pending rows (built once per version, copied for each round)
is claimed 1000 at a time and acknowledged as all accepted, until none is left. crawl: groups of
``--group`` rows are enqueued already leased (as the outbox does) and then acknowledged.
``--baseline main`` imports ``scrapy_sdi/buffer.py`` as it is at that git ref beside the working
tree's and times the two in alternation in this one process (the fair comparison on a shared,
noisy machine); the figure printed is the best round of each, in µs per row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from baseline import load_baseline  # noqa: E402

from scrapy_sdi import buffer as current  # noqa: E402

BATCH = 1000
CLOCK = time.process_time  # --wall: time.perf_counter
PAYLOAD = (
    b'{"id":"%s","url":"https://example.com/media/2026/file-%d.mp3","filename":"file-%d.mp3",'
    b'"referrer":"https://example.com/media/","description":"Auto-detected sample","uploader":"DetectorBot"}'
)


def rows(module: ModuleType, start: int, n: int) -> list[Any]:
    out = []
    for i in range(start, start + n):
        id_ = uuid.uuid4().hex
        out.append(
            module.Row(
                id_,
                "bench",
                f"https://example.com/media/2026/file-{id_[:8]}-{i}.mp3",
                PAYLOAD % (id_.encode(), i, i),
            )
        )
    return out


def backlog(module: ModuleType, path: Path, n: int) -> None:
    buf = module.SQLiteBuffer(path)
    for start in range(0, n, BATCH):
        buf.enqueue(rows(module, start, min(BATCH, n - start)), False)
    buf.close()


def drain(module: ModuleType, path: Path) -> tuple[int, float, float]:
    """Rows drained, seconds claiming, seconds acknowledging."""
    buf = module.SQLiteBuffer(path)
    claiming = acking = 0.0
    n = 0
    while True:
        t0 = CLOCK()
        claimed = buf.claim("bench", "owner", BATCH, 300.0)
        t1 = CLOCK()
        if not claimed:
            break
        buf.ack(dict.fromkeys([c.id for c in claimed], "accepted"), {})
        t2 = CLOCK()
        claiming += t1 - t0
        acking += t2 - t1
        n += len(claimed)
    buf.close()
    return n, claiming, acking


def crawl(module: ModuleType, path: Path, n: int, group: int) -> tuple[int, float, float]:
    """Rows enqueued leased then acknowledged: seconds enqueuing, seconds acknowledging."""
    buf = module.SQLiteBuffer(path)
    groups = [rows(module, start, group) for start in range(0, n, group)]
    enqueuing = acking = 0.0
    for g in groups:
        t0 = CLOCK()
        enqueued = buf.enqueue(g, True, module.Lease("owner", time.time() + 300, group))
        t1 = CLOCK()
        buf.ack(dict.fromkeys([r.id for r in enqueued.leased], "accepted"), {})
        enqueuing += t1 - t0
        acking += CLOCK() - t1
    buf.close()
    return n, enqueuing, acking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--crawl", type=int, default=50_000, help="rows of the crawl scenario")
    parser.add_argument("--group", type=int, default=100, help="rows per group commit (crawl)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="GITREF", help="compare with buffer.py at GITREF")
    parser.add_argument("--workdir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument(
        "--wall",
        action="store_true",
        help="the wall clock instead of CPU time (what waits on the disk shows only there)",
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    args = parser.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    if args.smoke:
        args.backlog, args.crawl, args.rounds = 3000, 1000, 1
    versions: list[tuple[str, ModuleType]] = [("now", current)]
    if args.baseline:
        versions.insert(0, (args.baseline, load_baseline(args.baseline, "buffer")))
    workdir = Path(tempfile.mkdtemp(prefix="bench-buffer-", dir=args.workdir))
    try:
        print(
            f"backlog {args.backlog:,} rows, crawl {args.crawl:,} rows in groups of {args.group}, µs/row"
        )
        for name, module in versions:
            backlog(module, workdir / f"{name}.db", args.backlog)
        best: dict[tuple[str, str], tuple[float, ...]] = {}
        for r in range(args.rounds):  # alternate, so drift hits both alike
            for name, module in versions if r % 2 == 0 else versions[::-1]:
                for scenario in ("drain", "crawl"):
                    db = workdir / f"{name}-{scenario}.db"
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{db}{suffix}").unlink(missing_ok=True)
                    if scenario == "drain":
                        shutil.copy(workdir / f"{name}.db", db)
                        n, a, b = drain(module, db)
                    else:
                        n, a, b = crawl(module, db, args.crawl, args.group)
                    figures = (a / n * 1e6, b / n * 1e6, (a + b) / n * 1e6)
                    key = (scenario, name)
                    if key not in best or figures[2] < best[key][2]:
                        best[key] = figures
        for scenario, parts in (("drain", ("claim", "ack")), ("crawl", ("enqueue", "ack"))):
            for name, _ in versions:
                a, b, total = best[(scenario, name)]
                print(
                    f"  {scenario:6s} {name:10s} {parts[0]} {a:6.2f}  {parts[1]} {b:6.2f}  "
                    f"total {total:6.2f}  ({1e6 / total:,.0f} rows/s)"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
