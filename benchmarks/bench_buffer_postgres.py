"""What the PostgreSQL buffer's bookkeeping costs per group, as a crawl makes it: enqueue + ack.

    python benchmarks/bench_buffer_postgres.py [--crawl 20000] [--group 100] [--rounds 5] [--baseline GITREF]

A private cluster starts on loopback (the tests' and run.py's: fsync on, synchronous_commit
off). Each round, on a fresh database per version, groups of ``--group`` rows are enqueued with
dedup, already leased (as the outbox does), and each group is acknowledged as accepted. Wall
clock: the server's work is in another process, so it only shows there. ``--baseline main``
loads ``scrapy_sdi/buffer_postgres.py`` as it is at that ref beside the working tree's and
times the two in alternation in this one process; the figures printed are the best round of
each and the median of the rounds, in ms per group (enqueue), per ack and rows per second. The server shares the machine's CPUs with
this process, as in a crawl.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from baseline import load_baseline  # noqa: E402

from scrapy_sdi import buffer_postgres as current  # noqa: E402
from scrapy_sdi.buffer import Lease, Row  # noqa: E402

PAYLOAD = (
    b'{"id":"%s","url":"https://example.com/media/2026/file-%d.mp3","filename":"file-%d.mp3",'
    b'"referrer":"https://example.com/media/","description":"Auto-detected sample","uploader":"DetectorBot"}'
)


def groups(n: int, group: int) -> list[list[Row]]:
    out = []
    for start in range(0, n, group):
        g = []
        for i in range(start, min(n, start + group)):
            id_ = uuid.uuid4().hex
            url = f"https://example.com/media/2026/file-{id_[:8]}-{i}.mp3"
            g.append(Row(id_, "bench", url, PAYLOAD % (id_.encode(), i, i)))
        out.append(g)
    return out


def crawl(
    module: ModuleType, url: str, data: list[list[Row]], ack_every: int
) -> tuple[float, float]:
    """Seconds enqueuing, seconds acknowledging (every ``ack_every`` groups, as the delivery does)."""
    buf = module.PostgresBuffer(url)
    buf.hold_owner("owner")
    enqueuing = acking = 0.0
    leased: list[str] = []
    for k, g in enumerate(data):
        t0 = time.perf_counter()
        enqueued = buf.enqueue(g, True, Lease("owner", time.time() + 300, len(g)))
        t1 = time.perf_counter()
        enqueuing += t1 - t0
        leased += [r.id for r in enqueued.leased]
        if (k + 1) % ack_every == 0 or k == len(data) - 1:
            t1 = time.perf_counter()
            buf.ack(dict.fromkeys(leased, "accepted"), {})
            acking += time.perf_counter() - t1
            leased = []
    counts = buf.counts()
    assert counts["delivered"] == sum(map(len, data)), counts
    buf.close()
    return enqueuing, acking


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crawl", type=int, default=20_000, help="rows per round")
    parser.add_argument("--group", type=int, default=100, help="rows per group commit")
    parser.add_argument(
        "--ack-every", type=int, default=7, help="groups per ack (~725 rows in a crawl)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--baseline", metavar="GITREF", help="compare with buffer_postgres.py at GITREF"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only checks it works")
    args = parser.parse_args()
    if args.smoke:
        args.crawl, args.rounds = 1000, 1
    from tests.support.postgres import start_server

    versions: list[tuple[str, ModuleType]] = [("now", current)]
    if args.baseline:
        versions.insert(0, (args.baseline, load_baseline(args.baseline, "buffer_postgres")))
    server = start_server()
    try:
        for setting in ("fsync = on", "full_page_writes = on", "synchronous_commit = off"):
            server.psql(f"ALTER SYSTEM SET {setting}")
        server.psql("SELECT pg_reload_conf()")
        n_groups = -(-args.crawl // args.group)
        print(
            f"{args.crawl:,} rows in groups of {args.group}, an ack every {args.ack_every} groups; "
            f"ms per group / per ack, wall clock; load {os.getloadavg()[0]:.1f}"
        )
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in versions}
        for r in range(args.rounds):  # alternate, so drift hits both alike
            for name, module in versions if r % 2 == 0 else versions[::-1]:
                data = groups(args.crawl, args.group)
                db = server.create_database()
                try:
                    e, a = crawl(module, server.url(db), data, args.ack_every)
                finally:
                    server.drop_database(db)
                print(f"  round {r + 1} {name:10s} enqueue {e:6.2f} s  ack {a:6.2f} s", flush=True)
                times[name].append((e, a))
        acks = -(-n_groups // args.ack_every)
        for name, _ in versions:
            ranked = sorted(times[name], key=sum)
            for which, (e, a) in (("best", ranked[0]), ("median", ranked[len(ranked) // 2])):
                print(
                    f"  {name:10s} {which:6s} enqueue {e / n_groups * 1e3:6.2f} ms/group  "
                    f"ack {a / acks * 1e3:6.2f} ms/ack  ({args.crawl / (e + a):,.0f} rows/s)"
                )
        print(f"  load {os.getloadavg()[0]:.1f}")
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


if __name__ == "__main__":
    main()
