"""Two processes buffering into one SQLite file, against two processes with a file each.

    python benchmarks/bench_shared.py [--rows 40000] [--group 100] [--rounds 6] [--baseline GITREF] [--smoke]

Each process stores ``--rows`` results as the crawl does: groups of ``--group`` rows enqueued
already leased (dedup on), each group then acknowledged. A round runs both layouts back to back
(their order alternating); the figure is the median over rounds of shared / separate, the
throughput of both processes together (rows / the slower one's seconds). ``--baseline main``
loads ``scrapy_sdi/buffer.py`` at that git ref too and alternates the two versions.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled
sys.path.insert(0, str(ROOT / "benchmarks"))

from baseline import load_baseline  # noqa: E402
from bench_buffer import PAYLOAD  # noqa: E402

from scrapy_sdi import buffer as current  # noqa: E402

VERSIONS: dict[str, ModuleType] = {}


def worker(version: str, path: str, k: int, rows: int, group: int, start: Any, out: Any) -> None:
    module = VERSIONS[version]
    buf = module.SQLiteBuffer(path)
    groups = [
        [
            module.Row(
                uuid.uuid4().hex,
                f"crawler-{k}",
                f"https://example.com/{k}/{i}/file{i}.mp3",
                PAYLOAD % (b"x", i, i),
            )
            for i in range(s, s + group)
        ]
        for s in range(0, rows, group)
    ]
    start.wait()
    t0 = time.perf_counter()
    for g in groups:
        enqueued = buf.enqueue(g, True, module.Lease(f"owner-{k}", time.time() + 300, group))
        buf.ack(dict.fromkeys([r.id for r in enqueued.leased], "accepted"), {})
    out.put(time.perf_counter() - t0)
    buf.close()


def run(version: str, shared: bool, workdir: Path, rows: int, group: int) -> float:
    """Rows per second of both processes together."""
    for f in workdir.iterdir():
        f.unlink()
    start, out = multiprocessing.Barrier(2), multiprocessing.Queue()
    procs = [
        multiprocessing.Process(
            target=worker,
            args=(
                version,
                str(workdir / ("shared.db" if shared else f"own-{k}.db")),
                k,
                rows,
                group,
                start,
                out,
            ),
        )
        for k in range(2)
    ]
    for p in procs:
        p.start()
    seconds = [out.get(), out.get()]
    for p in procs:
        p.join()
    return 2 * rows / max(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows per process")
    parser.add_argument("--group", type=int, default=100, help="rows per group commit")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--baseline", metavar="GITREF", help="compare with buffer.py at GITREF")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.rounds = 1000, 1
    multiprocessing.set_start_method("fork")  # the children use the modules loaded here
    VERSIONS["now"] = current
    if args.baseline:
        VERSIONS[args.baseline] = load_baseline(args.baseline, "buffer")
    names = list(VERSIONS)
    figures: dict[tuple[str, bool], list[float]] = {
        (n, s): [] for n in names for s in (False, True)
    }
    with tempfile.TemporaryDirectory(prefix="bench-shared-") as tmp:
        workdir = Path(tmp)
        for r in range(args.rounds):  # alternate, so drift hits both alike
            for name in names if r % 2 == 0 else names[::-1]:
                for shared in (False, True) if r % 2 == 0 else (True, False):
                    figures[(name, shared)].append(
                        run(name, shared, workdir, args.rows, args.group)
                    )
    print(f"2 processes x {args.rows:,} rows in groups of {args.group}, {args.rounds} rounds")
    for name in names:
        own, one = figures[(name, False)], figures[(name, True)]
        ratios = [b / a for a, b in zip(own, one, strict=True)]
        print(
            f"  {name:10s} a file each {statistics.median(own):9,.0f} rows/s  one file "
            f"{statistics.median(one):9,.0f} rows/s  one/each: median {statistics.median(ratios):.2f} "
            f"({', '.join(f'{x:.2f}' for x in ratios)})"
        )


if __name__ == "__main__":
    main()
