"""scrapy_sdi side by side with the alternatives, end to end, and against its performance targets.

    python benchmarks/run.py [--items 200000] [--rounds 3] [--smoke] [--json RESULTS.json]

Every crawl runs in its own process (``benchmarks/crawl.py``); the throughput variants alternate
within each round (the order rotates from round to round) so that drift of a shared machine hits
them alike, and the median of the rounds is reported. A crawl's time runs from the start of the
crawl to ``spider_closed``, which Scrapy sends after every pipeline's ``close_spider``: for
scrapy_sdi that includes delivering everything (pending_at_close must be 0 and the server must
hold every result). Peak RSS is the child's ``ru_maxrss`` as ``os.wait4`` reports it.

This is a benchmark, not a test: a missed target prints MISS and the exit status stays 0; only a
crash or a wrong count (the benchmark measured something else than it claims) exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess  # noqa: E402

VARIANTS = {
    "none": "(a) no pipeline",
    "noop": "(b) no-op pipeline",
    "sdi": "(c) scrapy_sdi, SQLite buffer -> server",
    "feed": "(d) FEEDS, JSON lines file",
    "naive": "(e) naive urllib POST per result",
}
TARGET_RATIO_TO_NOOP = 0.85
TARGET_BUFFER_RSS_MB = 50.0
TARGET_DRAIN_PER_S = 50_000
TARGET_FLUSH_S = 2.0
LOG_LEVEL = "INFO"  # the same for every crawl


class BenchmarkError(RuntimeError):
    """A crawl crashed or a count is wrong: the figures would be meaningless."""


class Bench:
    """Runs crawls in subprocesses under one scratch directory."""

    def __init__(self, workdir: Path, *, batch_size: int, concurrency: int, verbose: bool) -> None:
        self.workdir = workdir
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.verbose = verbose
        self._n = 0

    def crawl(
        self,
        variant: str,
        items: int,
        settings: dict[str, Any] | None = None,
        *,
        profile: str | None = None,
    ) -> dict[str, Any]:
        self._n += 1
        out = self.workdir / f"crawl-{self._n}.json"
        log = self.workdir / f"crawl-{self._n}.log"
        command = [
            sys.executable,
            str(HERE / "crawl.py"),
            variant,
            "--items",
            str(items),
            "--out",
            str(out),
        ]
        for name, value in {"LOG_LEVEL": LOG_LEVEL, **(settings or {})}.items():
            command += ["-s", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
        if profile:
            command += ["--profile", profile]
        with open(log, "wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0 or not out.exists():
            tail = log.read_text(errors="replace")[-3000:]
            raise BenchmarkError(
                f"{variant} crawl of {items} items exited {process.returncode}; log {log}:\n{tail}"
            )
        result = json.loads(out.read_text())
        result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
        result["rate"] = items / result["seconds"] if items else 0.0
        result["cpu_us_per_item"] = result["cpu_seconds"] / items * 1e6 if items else 0.0
        if self.verbose:
            print(
                f"    {variant:5} {items:>9,} items {result['seconds']:7.2f} s  cpu {result['cpu_seconds']:6.2f} s  "
                f"rss {result['peak_rss_mb']:6.1f} MB",
                flush=True,
            )
        return result

    def server(self, name: str) -> SDIServerProcess:
        return SDIServerProcess(self.workdir / name).start()

    def sdi_settings(
        self, server: SDIServerProcess | None, buffer: Path, **extra: Any
    ) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "SDI_BUFFER_PATH": str(buffer),
            "SDI_BATCH_SIZE": self.batch_size,
            "SDI_CONCURRENT_REQUESTS": self.concurrency,
            "SDI_CLOSE_TIMEOUT": 3600,
        }
        if server is None:  # the API is down: nothing listens on this port
            settings.update(
                {
                    "SDI_API_URL": f"http://127.0.0.1:{_closed_port()}/api/v1",
                    "SDI_USERNAME": "bench",
                    "SDI_PASSWORD": "bench",
                }
            )
        else:
            settings.update(server.settings)
        settings.update(extra)
        return settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BenchmarkError(f"check failed: {what}")


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- scenarios --------------------------------------------------------------------------------


def one_variant(
    bench: Bench, variant: str, items: int, naive_items: int, round_: int
) -> dict[str, Any]:
    if variant in ("none", "noop"):
        result = bench.crawl(variant, items)
        _check(
            result["stats"].get("item_scraped_count") == items, f"{variant}: {items} items scraped"
        )
        return result
    if variant == "feed":
        path = bench.workdir / f"feed-{round_}.jl"
        result = bench.crawl("feed", items, {"BENCH_FEED_PATH": str(path)})
        with open(path, "rb") as f:
            lines = sum(1 for _ in f)
        path.unlink()
        _check(lines == items, f"feed: {items} lines written (got {lines})")
        return result
    server = bench.server(f"server-{variant}-{round_}")
    try:
        if variant == "naive":
            result = bench.crawl("naive", naive_items, server.settings)
            accepted = server.stats()["accepted"]
            _check(
                accepted == naive_items,
                f"naive: server holds {naive_items} results (got {accepted})",
            )
            return result
        buffer = bench.workdir / f"buffer-c-{round_}.db"
        result = bench.crawl("sdi", items, bench.sdi_settings(server, buffer))
        stats, accepted = result["stats"], server.stats()["accepted"]
        _check(
            stats.get("sdi/pending_at_close") == 0,
            f"sdi: pending_at_close == 0 (got {stats.get('sdi/pending_at_close')})",
        )
        _check(
            stats.get("sdi/items_delivered") == items,
            f"sdi: {items} delivered (got {stats.get('sdi/items_delivered')})",
        )
        _check(accepted == items, f"sdi: server holds {items} results (got {accepted})")
        _remove_db(buffer)
        return result
    finally:
        server.stop()


def compare(
    bench: Bench, items: int, naive_items: int, rounds: int
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    order = list(VARIANTS)
    for r in range(rounds):
        rotated = order[r % len(order) :] + order[: r % len(order)]
        print(f"  round {r + 1}/{rounds}: {' '.join(rotated)}", flush=True)
        for variant in rotated:
            runs[variant].append(one_variant(bench, variant, items, naive_items, r))
    return runs


def buffer_and_drain(bench: Bench, items: int, drains: int = 1) -> dict[str, Any]:
    """The API down: buffer ``items`` results (peak RSS against an empty crawl); then drain them.

    Each of ``drains`` drains starts from a copy of the same backlog, against a fresh server; the
    median is reported, since one drain on a shared machine varies by up to 1.5x.
    """
    empty = bench.crawl(
        "sdi", 0, bench.sdi_settings(None, bench.workdir / "buffer-empty.db", SDI_CLOSE_TIMEOUT=0)
    )
    buffer = bench.workdir / "buffer-outage.db"
    down = bench.sdi_settings(
        None, buffer, SDI_CLOSE_TIMEOUT=0, SDI_BUFFER_MAX_PENDING=10 * items + 1000
    )
    filled = bench.crawl("sdi", items, down)
    _check(filled["stats"].get("sdi/items_buffered") == items, f"outage: {items} buffered")
    _check(
        filled["stats"].get("sdi/pending_at_close") == items, f"outage: {items} pending at close"
    )
    _remove_db(bench.workdir / "buffer-empty.db")
    runs = []
    for n in range(1, drains + 1):
        backlog = bench.workdir / f"buffer-drain-{n}.db"
        for suffix in ("", "-wal"):  # the filling crawl has exited: the file is at rest
            if Path(f"{buffer}{suffix}").exists():
                shutil.copyfile(f"{buffer}{suffix}", f"{backlog}{suffix}")
        drained = deliver_backlog(bench, "drain", backlog, items, f"server-drain-{n}")
        drained["drain_s"] = drained["times"]["closed"] - drained["times"]["opened"]
        runs.append(drained)
        _remove_db(backlog)
    _remove_db(buffer)
    runs.sort(key=lambda run: run["drain_s"])
    middle = runs[len(runs) // 2]  # the slower of two middles: no flattering figure
    return {
        "empty": empty,
        "filled": filled,
        "drained": middle,
        "drain_s": middle["drain_s"],
        "drains_s": [run["drain_s"] for run in runs],
        "items": items,
    }


def deliver_backlog(
    bench: Bench, what: str, buffer: Path, items: int, server_name: str
) -> dict[str, Any]:
    """A 0-result crawl delivers the ``items`` rows of ``buffer`` to a fresh server; checked."""
    server = bench.server(server_name)
    try:
        result = bench.crawl("sdi", 0, bench.sdi_settings(server, buffer))
        accepted = server.stats()["accepted"]
    finally:
        server.stop()
    _check(result["stats"].get("sdi/pending_at_close") == 0, f"{what}: pending_at_close == 0")
    _check(accepted == items, f"{what}: server holds {items} results (got {accepted})")
    return result


def final_flush(bench: Bench, items: int) -> dict[str, Any]:
    """``items`` results pending when the spider goes idle; time from spider_idle to close finished."""
    buffer = bench.workdir / "buffer-flush.db"
    bench.crawl("sdi", items, bench.sdi_settings(None, buffer, SDI_CLOSE_TIMEOUT=0))
    result = deliver_backlog(bench, "flush", buffer, items, "server-flush")
    times = result["times"]
    _remove_db(buffer)
    return {
        "items": items,
        "pending_at_idle": items - (result["delivered_at_idle"] or 0),
        "idle_to_closed_s": times["closed"] - times["idle"],
        "opened_to_closed_s": times["closed"] - times["opened"],
    }


def filters(smoke: bool) -> str:
    command = [sys.executable, str(HERE / "bench_filters.py")] + (["--smoke"] if smoke else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"bench_filters.py exited {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- report -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import scrapy
    import twisted

    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, Scrapy {scrapy.__version__}, "
        f"Twisted {twisted.__version__}, SQLite {sqlite3.sqlite_version}, load average {os.getloadavg()[0]:.2f} at start"
    )


def report(
    runs: dict[str, list[dict[str, Any]]], items: int, naive_items: int, args: argparse.Namespace
) -> dict[str, Any]:
    median = {
        v: {
            k: statistics.median(r[k] for r in rs)
            for k in ("rate", "cpu_us_per_item", "peak_rss_mb")
        }
        for v, rs in runs.items()
    }
    base = median["noop"]["rate"]
    print()
    print(
        f"Throughput, {items:,} results per crawl, median of {args.rounds} round(s), LOG_LEVEL={LOG_LEVEL}"
    )
    print(
        f"{'variant':44} {'items':>9} {'items/s':>9} {'x (b)':>6} {'CPU us/item':>11} {'peak RSS MB':>11}"
    )
    for variant, label in VARIANTS.items():
        m = median[variant]
        n = naive_items if variant == "naive" else items
        mark = "*" if variant == "naive" and naive_items != items else " "
        print(
            f"{label:44} {n:>8,}{mark} {m['rate']:>9,.0f} {m['rate'] / base:>6.2f} {m['cpu_us_per_item']:>11.1f} {m['peak_rss_mb']:>11.1f}"
        )
    if naive_items != items:
        print(
            f"  * (e) ran on {naive_items:,} results and is extrapolated: {items:,} results would take "
            f"~{items / median['naive']['rate']:,.0f} s at its rate (its peak RSS is for {naive_items:,})"
        )
    print(
        "  CPU us/item is the crawl process's own CPU time: unlike items/s it does not count the server's"
    )
    print("  work, nor time lost to other load on the machine.")
    return median


def outage_targets(outage: dict[str, Any]) -> list[str]:
    """The outage's RSS line and the drain's line."""
    growth = outage["filled"]["peak_rss_mb"] - outage["empty"]["peak_rss_mb"]
    n = outage["items"]
    drain_rate = n / outage["drain_s"]
    return [
        f"API down, {n:,} results buffered: peak RSS growth {growth:+.1f} MB over an empty crawl "
        f"({outage['filled']['peak_rss_mb']:.1f} vs {outage['empty']['peak_rss_mb']:.1f} MB; "
        f"{outage['filled']['rate']:,.0f} items/s) (target <= {TARGET_BUFFER_RSS_MB:g} MB) {_verdict(growth <= TARGET_BUFFER_RSS_MB)}",
        f"drain of a {n:,}-row backlog: {drain_rate:,.0f} results/s ({_drains(outage)}) "
        f"(target >= {TARGET_DRAIN_PER_S:,}) {_verdict(drain_rate >= TARGET_DRAIN_PER_S)}",
    ]


def _drains(outage: dict[str, Any]) -> str:
    times = outage["drains_s"]
    if len(times) == 1:
        return f"{times[0]:.1f} s"
    return f"median of {len(times)} drains: " + ", ".join(f"{t:.1f}" for t in times) + " s"


def targets(
    median: dict[str, Any], outage: dict[str, Any], flush: dict[str, Any], filter_output: str
) -> list[str]:
    base, sdi, feed = median["noop"]["rate"], median["sdi"]["rate"], median["feed"]["rate"]
    lines = [
        f"(c) throughput >= {TARGET_RATIO_TO_NOOP:.2f} x (b): {sdi / base:.2f} x ({sdi:,.0f} vs {base:,.0f} items/s) "
        f"{_verdict(sdi >= TARGET_RATIO_TO_NOOP * base)}",
        f"(c) at least as fast as (d): {sdi:,.0f} vs {feed:,.0f} items/s {_verdict(sdi >= feed)}",
        *outage_targets(outage),
        f"final flush of {flush['items']:,} pending at close: {flush['idle_to_closed_s']:.2f} s from spider_idle to closed "
        f"({flush['pending_at_idle']:,} pending at idle; {flush['opened_to_closed_s']:.2f} s from spider_opened) "
        f"(target <= {TARGET_FLUSH_S:g} s) {_verdict(flush['idle_to_closed_s'] <= TARGET_FLUSH_S)}",
    ]
    lines += [f"filters: {line}" for line in filter_output.splitlines() if line.strip()]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--items", type=int, default=200_000, help="results per throughput crawl (default 200,000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the alternating throughput crawls (median)"
    )
    parser.add_argument(
        "--naive-items", type=int, help="results for (e), extrapolated (default items/20)"
    )
    parser.add_argument(
        "--buffer-items",
        type=int,
        help="results buffered with the API down, then drained (default 1,000,000)",
    )
    parser.add_argument(
        "--flush-items",
        type=int,
        help="results pending at close for the final flush (default 10,000)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SDI_BATCH_SIZE for (c) and the drain"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="SDI_CONCURRENT_REQUESTS for (c) and the drain"
    )
    parser.add_argument(
        "--drain-rounds",
        type=int,
        help="drains of the same backlog, each from a copy (median; default 3)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one round: proves the runner works"
    )
    parser.add_argument(
        "--drain-only",
        action="store_true",
        help="only the outage and the drain of its backlog (--buffer-items), not the other scenarios",
    )
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument(
        "--workdir", help="keep buffers, logs and server dbs here (default: a temp dir)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per crawl")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.rounds = min(args.items, 2000), 1
    naive_items = args.naive_items or max(100, args.items // (10 if args.smoke else 20))
    buffer_items = args.buffer_items or (5000 if args.smoke else 1_000_000)
    flush_items = args.flush_items or (1000 if args.smoke else 10_000)
    drain_rounds = args.drain_rounds or (1 if args.smoke else 3)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sdi-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        workdir, batch_size=args.batch_size, concurrency=args.concurrency, verbose=args.verbose
    )

    print("scrapy_sdi benchmark:", " ".join(sys.argv[1:]) or "(defaults)")
    print("machine:", machine())
    print(
        f"SDI_BATCH_SIZE={args.batch_size} SDI_CONCURRENT_REQUESTS={args.concurrency}; work dir {workdir}",
        flush=True,
    )
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    flush: dict[str, Any] = {}
    filter_output = ""
    try:
        if not args.drain_only:
            print(f"throughput: {len(VARIANTS)} variants x {args.rounds} round(s)", flush=True)
            runs = compare(bench, args.items, naive_items, args.rounds)
        print(
            f"outage: buffering {buffer_items:,} results with the API down, then draining them "
            f"{drain_rounds} time(s)",
            flush=True,
        )
        outage = buffer_and_drain(bench, buffer_items, drain_rounds)
        if not args.drain_only:
            print(f"final flush: {flush_items:,} results pending at close", flush=True)
            flush = final_flush(bench, flush_items)
            print(
                "filters: benchmarks/bench_filters.py" + (" --smoke" if args.smoke else ""),
                flush=True,
            )
            filter_output = filters(args.smoke)
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc}", file=sys.stderr)
        return 1
    median = report(runs, args.items, naive_items, args) if runs else {}
    print()
    print("Targets")
    lines = targets(median, outage, flush, filter_output) if runs else outage_targets(outage)
    for line in lines:
        print("  " + line)
    drained = outage["drained"]
    print(
        f"  (the drain's crawl process: {drained['cpu_seconds']:.1f} s CPU from its start, "
        f"{drained['stats'].get('sdi/batches_sent', 0):,} batches)"
    )
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": vars(args),
                    "naive_items": naive_items,
                    "median": median,
                    "runs": {
                        v: [
                            {k: r[k] for k in ("seconds", "rate", "cpu_us_per_item", "peak_rss_mb")}
                            for r in rs
                        ]
                        for v, rs in runs.items()
                    },
                    "outage": {
                        k: (
                            v
                            if not isinstance(v, dict)
                            else {
                                x: v[x] for x in ("seconds", "rate", "peak_rss_mb", "cpu_seconds")
                            }
                        )
                        for k, v in outage.items()
                    },
                    "flush": flush,
                    "targets": lines,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
