"""scrapy_sdi side by side with the alternatives, end to end, and against its performance targets.

    python benchmarks/run.py [--items 200000] [--rounds 3] [--long] [--smoke] [--json RESULTS.json]

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
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout

from scrapy_sdi.testing.pytest_plugin import SDIServerProcess  # noqa: E402

VARIANTS = {
    "none": "(a) no pipeline",
    "noop": "(b) no-op pipeline",
    "sdi": "(c) scrapy_sdi, default settings",
    "tuned": "(c') scrapy_sdi, --batch-size x --concurrency",
    "feed": "(d) FEEDS, JSON lines file",
    "naive": "(e) naive urllib POST per result",
    "pg": "(f) scrapy_sdi, PostgreSQL buffer",
}
# The targets of issue #20, each printed with PASS or MISS.
TARGET_RATIO_TO_NOOP = 0.85
TARGET_ADDED_CPU_US = 25.0
TARGET_BUFFER_RSS_MB = 50.0
TARGET_DRAIN_PER_S = 100_000
TARGET_DRAIN_ROWS = 1_000_000
TARGET_SHARED_FILE_RATIO = 0.9
TARGET_FLUSH_S = 2.0
TARGET_FLUSH_ROWS = 100_000
TARGET_FILTERS = 103_000
TARGET_FILTER_MATCH_PER_S = 250_000
# The targets of issue #21 (a buffer on PostgreSQL).
TARGET_PG_TO_SQLITE = 0.7
TARGET_PG_FLEET = 4.0
PG_FLEET = 8  # processes buffering into one PostgreSQL database
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
        self._postgres: Any = None  # the run's private PostgreSQL cluster, started on first use
        self._databases: list[str] = []

    def crawl(
        self,
        variant: str,
        items: int,
        settings: dict[str, Any] | None = None,
        *,
        profile: str | None = None,
        offset: int = 0,
    ) -> dict[str, Any]:
        (result,) = self.crawls([(variant, items, settings, offset)], profile=profile)
        return result

    def crawls(
        self,
        specs: list[tuple[str, int, dict[str, Any] | None, int]],
        *,
        profile: str | None = None,
    ) -> list[dict[str, Any]]:
        """Crawls (variant, items, settings, offset) started together, each in its own process."""
        started = []
        for variant, items, settings, offset in specs:
            self._n += 1
            out = self.workdir / f"crawl-{self._n}.json"
            log = self.workdir / f"crawl-{self._n}.log"
            command = [
                sys.executable,
                str(HERE / "crawl.py"),
                variant,
                "--items",
                str(items),
                "--offset",
                str(offset),
                "--out",
                str(out),
            ]
            for name, value in {"LOG_LEVEL": LOG_LEVEL, **(settings or {})}.items():
                command += [
                    "-s",
                    f"{name}={value if isinstance(value, str) else json.dumps(value)}",
                ]
            if profile:
                command += ["--cprofile", profile]
            with open(log, "wb") as stderr:
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            started.append((variant, items, out, log, process))
        results = []
        for variant, items, out, log, process in started:
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0 or not out.exists():
                tail = log.read_text(errors="replace")[-3000:]
                raise BenchmarkError(
                    f"{variant} crawl of {items} items exited {process.returncode}; log {log}:\n{tail}"
                )
            result = json.loads(out.read_text())
            _check(
                result["package"] == str(HERE.parent / "scrapy_sdi"),
                f"{variant} crawl ran {result['package']}, not this checkout's scrapy_sdi",
            )
            result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
            result["rate"] = items / result["seconds"] if items else 0.0
            result["cpu_us_per_item"] = result["cpu_seconds"] / items * 1e6 if items else 0.0
            if self.verbose:
                print(
                    f"    {variant:5} {items:>9,} items {result['seconds']:7.2f} s  cpu {result['cpu_seconds']:6.2f} s  "
                    f"rss {result['peak_rss_mb']:6.1f} MB",
                    flush=True,
                )
            results.append(result)
        return results

    def server(self, name: str) -> SDIServerProcess:
        return SDIServerProcess(self.workdir / name).start()

    def postgres_url(self) -> str:
        """The URL of a fresh database on the run's PostgreSQL cluster (started on first use).

        The cluster is the tests' (tests/support/postgres.py: initdb in a temporary directory, on
        loopback) made as durable as the SQLite buffer: fsync on, commits not waited for
        (``synchronous_commit = off``, as SQLite's WAL with ``synchronous = NORMAL``).
        """
        if self._postgres is None:
            from tests.support.postgres import start_server

            self._postgres = start_server()
            for setting in ("fsync = on", "full_page_writes = on", "synchronous_commit = off"):
                self._postgres.psql(f"ALTER SYSTEM SET {setting}")
            self._postgres.psql("SELECT pg_reload_conf()")
        name = self._postgres.create_database()
        self._databases.append(name)
        return str(self._postgres.url(name))

    def drop_databases(self) -> None:
        """Drop the databases handed out so far (their rows would fill the disk)."""
        while self._databases:
            self._postgres.drop_database(self._databases.pop())

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            shutil.rmtree(self._postgres.root, ignore_errors=True)
            self._postgres = None

    def sdi_settings(
        self, server: SDIServerProcess | None, buffer: Path, *, tuned: bool = True, **extra: Any
    ) -> dict[str, Any]:
        """Settings of a scrapy_sdi crawl; ``tuned``: --batch-size and --concurrency, else defaults.

        SDI_CLOSE_TIMEOUT is raised in both, so that a crawl always delivers everything.
        """
        settings: dict[str, Any] = {"SDI_BUFFER_PATH": str(buffer), "SDI_CLOSE_TIMEOUT": 3600}
        if tuned:
            settings.update(_tuned(self))
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


def _tuned(bench: Bench) -> dict[str, Any]:
    return {"SDI_BATCH_SIZE": bench.batch_size, "SDI_CONCURRENT_REQUESTS": bench.concurrency}


#: The scrapy_sdi variants of the throughput comparison: name -> the settings it adds over the
#: defaults (given the Bench). A new one (another buffer backend, a setting) is an entry here and
#: its label in VARIANTS; its crawl is checked like (c) (everything delivered, the server holds it).
SDI_VARIANTS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "sdi": lambda bench: {},
    "tuned": _tuned,
    "pg": lambda bench: {"SDI_BUFFER": "postgres", "SDI_BUFFER_URL": bench.postgres_url()},
}


def postgres_missing() -> str | None:
    """Why the PostgreSQL scenarios cannot run here (no server binaries, no driver), or None."""
    try:
        from tests.support.postgres import bindir
    except ImportError as exc:  # the tests' cluster helper needs pytest
        return f"tests/support/postgres.py cannot be imported ({exc})"
    if bindir() is None:
        return "PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'scrapy_sdi[postgres]')"
    return None


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
        buffer = bench.workdir / f"buffer-{variant}-{round_}.db"
        settings = bench.sdi_settings(server, buffer, tuned=False, **SDI_VARIANTS[variant](bench))
        result = bench.crawl("sdi", items, settings)
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
        bench.drop_databases()


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


def profile_crawls(bench: Bench, items: int, path: str) -> None:
    """(b) and (c) once more each under cProfile, untimed: stats to PATH.noop and PATH.sdi.

    Their difference is where (c)'s CPU over the no-op goes; PATH.*.txt list the top functions.
    """
    bench.crawl("noop", items, profile=f"{path}.noop")
    server = bench.server("server-profile")
    buffer = bench.workdir / "buffer-profile.db"
    try:
        settings = bench.sdi_settings(server, buffer, tuned=False, **SDI_VARIANTS["sdi"](bench))
        result = bench.crawl("sdi", items, settings, profile=f"{path}.sdi")
    finally:
        server.stop()
    _remove_db(buffer)
    _check(result["stats"].get("sdi/pending_at_close") == 0, "profile: pending_at_close == 0")
    print(f"  profiles (cProfile, not timed): {path}.noop, {path}.sdi and their .txt", flush=True)


def fill_backlog(bench: Bench, buffer: Path, items: int) -> dict[str, Any]:
    """The API down: one crawl buffers ``items`` results into ``buffer``; checked."""
    down = bench.sdi_settings(
        None, buffer, SDI_CLOSE_TIMEOUT=0, SDI_BUFFER_MAX_PENDING=10 * items + 1000
    )
    filled = bench.crawl("sdi", items, down)
    _check(filled["stats"].get("sdi/items_buffered") == items, f"outage: {items} buffered")
    _check(
        filled["stats"].get("sdi/pending_at_close") == items, f"outage: {items} pending at close"
    )
    return filled


def buffer_and_drain(
    bench: Bench,
    items: int,
    drains: int = 1,
    *,
    drain_items: int | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """The API down: buffer ``items`` results (peak RSS against an empty crawl); then drain a backlog.

    The backlog is that one, or a fresh one of ``drain_items`` rows when the sizes differ (``--long``
    buffers 10,000,000 for the RSS but drains 1,000,000). Each of ``drains`` drains starts from a
    copy of the same backlog, against a fresh server; the median is reported, since one drain on a
    shared machine varies by up to 1.5x. With ``profile``, one more drain runs under cProfile
    (not counted: the profiler slows it down).
    """
    empty = bench.crawl(
        "sdi", 0, bench.sdi_settings(None, bench.workdir / "buffer-empty.db", SDI_CLOSE_TIMEOUT=0)
    )
    _remove_db(bench.workdir / "buffer-empty.db")
    buffer = bench.workdir / "buffer-outage.db"
    filled = fill_backlog(bench, buffer, items)
    drain_items = drain_items or items
    if drain_items != items:
        _remove_db(buffer)
        buffer = bench.workdir / "buffer-backlog.db"
        fill_backlog(bench, buffer, drain_items)
    runs = []
    for n in range(1, drains + 1 + bool(profile)):
        backlog = bench.workdir / f"buffer-drain-{n}.db"
        for suffix in ("", "-wal"):  # the filling crawl has exited: the file is at rest
            if Path(f"{buffer}{suffix}").exists():
                shutil.copyfile(f"{buffer}{suffix}", f"{backlog}{suffix}")
        profiled = profile if n > drains else None
        drained = deliver_backlog(
            bench, "drain", backlog, drain_items, f"server-drain-{n}", profile=profiled
        )
        _remove_db(backlog)
        if profiled:
            print(f"  drain profile (cProfile, not timed): {profiled} and {profiled}.txt")
            continue
        drained["drain_s"] = drained["times"]["closed"] - drained["times"]["opened"]
        runs.append(drained)
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
        "drain_items": drain_items,
    }


def shared_file(bench: Bench, items: int, rounds: int) -> dict[str, Any]:
    """Two processes buffering ``items`` results each, API down: into one file, or a file each.

    The two layouts alternate (order swapped every round); a layout's rate is both processes'
    results over the slower one's time, and the median of the rounds is reported.
    """
    rates: dict[str, list[float]] = {"one": [], "each": []}
    for r in range(rounds):
        for layout in ("one", "each") if r % 2 == 0 else ("each", "one"):
            paths = [bench.workdir / f"shared-{layout}-{r}-{p}.db" for p in range(2)]
            if layout == "one":
                paths = [paths[0], paths[0]]
            specs: list[tuple[str, int, dict[str, Any] | None, int]] = [
                (
                    "sdi",
                    items,
                    bench.sdi_settings(
                        None,
                        path,
                        tuned=False,
                        SDI_CLOSE_TIMEOUT=0,
                        SDI_BUFFER_MAX_PENDING=20 * items + 1000,
                    ),
                    p * items,  # distinct URLs: dedup keeps every result
                )
                for p, path in enumerate(paths)
            ]
            results = bench.crawls(specs)
            for result in results:
                _check(
                    result["stats"].get("sdi/items_buffered") == items,
                    f"shared file ({layout}): {items} buffered by each process",
                )
            rates[layout].append(2 * items / max(result["seconds"] for result in results))
            for path in set(paths):
                _remove_db(path)
    one, each = statistics.median(rates["one"]), statistics.median(rates["each"])
    return {"items": items, "rates": rates, "one": one, "each": each}


def postgres_fleet(bench: Bench, items: int, rounds: int) -> dict[str, Any]:
    """PG_FLEET processes buffering ``items`` results each into one PostgreSQL database, API down,
    against one process buffering ``items``; a fresh database each time.

    The two alternate (order swapped every round); a layout's rate is its processes' results over
    the slowest one's time, and the median of the rounds is reported.
    """
    rates: dict[str, list[float]] = {"fleet": [], "one": []}
    for r in range(rounds):
        for layout in ("fleet", "one") if r % 2 == 0 else ("one", "fleet"):
            processes = PG_FLEET if layout == "fleet" else 1
            url = bench.postgres_url()
            specs: list[tuple[str, int, dict[str, Any] | None, int]] = [
                (
                    "sdi",
                    items,
                    bench.sdi_settings(
                        None,
                        bench.workdir / "unused.db",
                        tuned=False,
                        SDI_BUFFER="postgres",
                        SDI_BUFFER_URL=url,
                        SDI_CLOSE_TIMEOUT=0,
                        SDI_BUFFER_MAX_PENDING=20 * items + 1000,
                    ),
                    p * items,  # distinct URLs: dedup keeps every result
                )
                for p in range(processes)
            ]
            results = bench.crawls(specs)
            for result in results:
                _check(
                    result["stats"].get("sdi/items_buffered") == items,
                    f"PostgreSQL fleet ({layout}): {items} buffered by each process",
                )
            rates[layout].append(processes * items / max(res["seconds"] for res in results))
            bench.drop_databases()
    fleet, one = statistics.median(rates["fleet"]), statistics.median(rates["one"])
    return {"items": items, "processes": PG_FLEET, "rates": rates, "fleet": fleet, "one": one}


def deliver_backlog(
    bench: Bench,
    what: str,
    buffer: Path,
    items: int,
    server_name: str,
    *,
    tuned: bool = True,
    profile: str | None = None,
) -> dict[str, Any]:
    """A 0-result crawl delivers the ``items`` rows of ``buffer`` to a fresh server; checked."""
    server = bench.server(server_name)
    try:
        settings = bench.sdi_settings(server, buffer, tuned=tuned)
        result = bench.crawl("sdi", 0, settings, profile=profile)
        accepted = server.stats()["accepted"]
    finally:
        server.stop()
    _check(result["stats"].get("sdi/pending_at_close") == 0, f"{what}: pending_at_close == 0")
    _check(accepted == items, f"{what}: server holds {items} results (got {accepted})")
    return result


def final_flush(bench: Bench, items: int) -> dict[str, Any]:
    """``items`` results pending when the spider goes idle; time from spider_idle to close finished.

    With the default settings, as a crawl's own close would run. Delivery starts when the crawl
    opens, so some rows may be gone by ``spider_idle``: the figure judged is then the time from
    ``spider_opened`` to the close, which delivered all ``items`` (an upper bound, no scaling).
    """
    buffer = bench.workdir / "buffer-flush.db"
    fill_backlog(bench, buffer, items)
    result = deliver_backlog(bench, "flush", buffer, items, "server-flush", tuned=False)
    times = result["times"]
    _remove_db(buffer)
    pending = items - (result["delivered_at_idle"] or 0)
    idle_to_closed = times["closed"] - times["idle"]
    opened_to_closed = times["closed"] - times["opened"]
    return {
        "items": items,
        "pending_at_idle": pending,
        "idle_to_closed_s": idle_to_closed,
        "opened_to_closed_s": opened_to_closed,
        "judged_s": idle_to_closed if pending >= items else opened_to_closed,
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
        f"{'variant':46} {'items':>9} {'items/s':>9} {'x (b)':>6} {'CPU us/item':>11} {'peak RSS MB':>11}"
    )
    for variant, label in VARIANTS.items():
        m = median[variant]
        n = naive_items if variant == "naive" else items
        mark = "*" if variant == "naive" and naive_items != items else " "
        print(
            f"{label:46} {n:>8,}{mark} {m['rate']:>9,.0f} {m['rate'] / base:>6.2f} {m['cpu_us_per_item']:>11.1f} {m['peak_rss_mb']:>11.1f}"
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
    n, d = outage["items"], outage["drain_items"]
    drain_rate = d / outage["drain_s"]
    size_note = "" if d >= TARGET_DRAIN_ROWS else f"; the target's size is {TARGET_DRAIN_ROWS:,}"
    return [
        f"API down, {n:,} results buffered: peak RSS growth {growth:+.1f} MB over an empty crawl "
        f"({outage['filled']['peak_rss_mb']:.1f} vs {outage['empty']['peak_rss_mb']:.1f} MB; "
        f"{outage['filled']['rate']:,.0f} items/s) (target <= {TARGET_BUFFER_RSS_MB:g} MB) {_verdict(growth <= TARGET_BUFFER_RSS_MB)}",
        f"drain of a {d:,}-row backlog: {drain_rate:,.0f} results/s ({_drains(outage)}{size_note}) "
        f"(target >= {TARGET_DRAIN_PER_S:,}) {_verdict(drain_rate >= TARGET_DRAIN_PER_S)}",
    ]


def _drains(outage: dict[str, Any]) -> str:
    times = outage["drains_s"]
    if len(times) == 1:
        return f"{times[0]:.1f} s"
    return f"median of {len(times)} drains: " + ", ".join(f"{t:.1f}" for t in times) + " s"


def throughput_targets(runs: dict[str, list[dict[str, Any]]], median: dict[str, Any]) -> list[str]:
    """(c) against (b) and (d), round by round where the target says so, and its added CPU.

    The other scrapy_sdi variants are given beside (c)'s figures, not judged.
    """
    base, sdi, feed = median["noop"]["rate"], median["sdi"]["rate"], median["feed"]["rate"]
    base_cpu = median["noop"]["cpu_us_per_item"]
    per_round = [c["rate"] / b["rate"] for c, b in zip(runs["sdi"], runs["noop"], strict=True)]
    vs_feed = [c["rate"] / d["rate"] for c, d in zip(runs["sdi"], runs["feed"], strict=True)]
    added = median["sdi"]["cpu_us_per_item"] - base_cpu
    others = [(VARIANTS[v].split()[0], median[v]) for v in SDI_VARIANTS if v != "sdi"]
    other_ratios = "".join(f"; {name} {m['rate'] / base:.2f} x" for name, m in others)
    other_cpu = "".join(f"; {name} {m['cpu_us_per_item'] - base_cpu:+.1f} us" for name, m in others)
    return [
        f"(c) default settings >= {TARGET_RATIO_TO_NOOP:.2f} x (b), median: {sdi / base:.2f} x "
        f"({sdi:,.0f} vs {base:,.0f} items/s; per round {_ratios(per_round)}{other_ratios}) "
        f"{_verdict(sdi >= TARGET_RATIO_TO_NOOP * base)}",
        f"(c) >= (d) in every round: {_ratios(vs_feed)} x (d) "
        f"(medians {sdi:,.0f} vs {feed:,.0f} items/s) {_verdict(min(vs_feed) >= 1.0)}",
        f"(c) CPU per result added over (b): {added:+.1f} us ({median['sdi']['cpu_us_per_item']:.1f} vs "
        f"{base_cpu:.1f} us{other_cpu}) "
        f"(target <= {TARGET_ADDED_CPU_US:g} us) {_verdict(added <= TARGET_ADDED_CPU_US)}",
    ]


def _ratios(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def shared_target(shared: dict[str, Any]) -> str:
    one, each = shared["one"], shared["each"]
    rounds = ", ".join(
        f"{a / b:.2f}" for a, b in zip(shared["rates"]["one"], shared["rates"]["each"], strict=True)
    )
    return (
        f"2 processes buffering {shared['items']:,} each into one file >= {TARGET_SHARED_FILE_RATIO:g} x "
        f"a file each: {one / each:.2f} x ({one:,.0f} vs {each:,.0f} items/s, API down; per round {rounds}) "
        f"{_verdict(one >= TARGET_SHARED_FILE_RATIO * each)}"
    )


def postgres_targets(
    runs: dict[str, list[dict[str, Any]]], median: dict[str, Any], fleet: dict[str, Any]
) -> list[str]:
    """(f) against (c) round by round, and the fleet of PG_FLEET processes against one."""
    pg, sqlite = median["pg"]["rate"], median["sdi"]["rate"]
    per_round = [f["rate"] / c["rate"] for f, c in zip(runs["pg"], runs["sdi"], strict=True)]
    ratio = pg / sqlite  # of the medians, as (c) against (b)
    many, one = fleet["fleet"], fleet["one"]
    rounds = ", ".join(
        f"{a / b:.2f}" for a, b in zip(fleet["rates"]["fleet"], fleet["rates"]["one"], strict=True)
    )
    return [
        f"(f) PostgreSQL buffer >= {TARGET_PG_TO_SQLITE:g} x (c) SQLite in the same run: "
        f"{ratio:.2f} x ({pg:,.0f} vs {sqlite:,.0f} items/s, medians; per round "
        f"{_ratios(per_round)}) {_verdict(ratio >= TARGET_PG_TO_SQLITE)}",
        f"{fleet['processes']} processes buffering {fleet['items']:,} each into one PostgreSQL >= "
        f"{TARGET_PG_FLEET:g} x one process: {many / one:.2f} x ({many:,.0f} vs {one:,.0f} items/s, "
        f"API down, {os.cpu_count()} CPUs; per round {rounds}) {_verdict(many >= TARGET_PG_FLEET * one)}",
    ]


def flush_target(flush: dict[str, Any]) -> str:
    n, pending = flush["items"], flush["pending_at_idle"]
    size_note = "" if n >= TARGET_FLUSH_ROWS else f"; the target's size is {TARGET_FLUSH_ROWS:,}"
    if pending >= n:
        figure = (
            f"{flush['idle_to_closed_s']:.2f} s from spider_idle to closed "
            f"({flush['opened_to_closed_s']:.2f} s from spider_opened{size_note})"
        )
    else:
        figure = (
            f"{flush['opened_to_closed_s']:.2f} s from spider_opened to closed, which delivered all "
            f"({pending:,} still pending at spider_idle, {flush['idle_to_closed_s']:.2f} s from there"
            f"{size_note})"
        )
    return (
        f"final flush of {n:,} pending at close: {figure} "
        f"(target <= {TARGET_FLUSH_S:g} s) {_verdict(flush['judged_s'] <= TARGET_FLUSH_S)}"
    )


def filter_targets(filter_output: str) -> list[str]:
    """bench_filters.py's own lines, and its matching rate against #20's target."""
    lines = [f"filters: {line}" for line in filter_output.splitlines() if line.strip()]
    match = re.search(r"^match: ([\d,]+) results/s", filter_output, re.MULTILINE)
    count = re.search(r"^filters: (\d+) usable", filter_output, re.MULTILINE)
    if match and count:
        rate, n = int(match.group(1).replace(",", "")), int(count.group(1))
        size_note = "" if n >= TARGET_FILTERS else f"; the target's size is {TARGET_FILTERS:,}"
        lines.append(
            f"filter matching with {n:,} filters: {rate:,} results/s{size_note} "
            f"(target >= {TARGET_FILTER_MATCH_PER_S:,}) {_verdict(rate >= TARGET_FILTER_MATCH_PER_S)}"
        )
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
        help="results buffered with the API down (default 1,000,000; 10,000,000 with --long)",
    )
    parser.add_argument(
        "--drain-items",
        type=int,
        help="rows of the backlog drained (default --buffer-items, at most 1,000,000 by default)",
    )
    parser.add_argument(
        "--flush-items",
        type=int,
        help="results pending at close for the final flush (default 100,000)",
    )
    parser.add_argument(
        "--shared-items",
        type=int,
        help="results per process in the one-file / a-file-each scenario (default items/2)",
    )
    parser.add_argument(
        "--fleet-items",
        type=int,
        help=f"results per process in the {PG_FLEET}-processes-on-PostgreSQL scenario (default items/8)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="SDI_BATCH_SIZE for (c') and the drain"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="SDI_CONCURRENT_REQUESTS for (c') and the drain"
    )
    parser.add_argument(
        "--drain-rounds",
        type=int,
        help="drains of the same backlog, each from a copy (median; default 3)",
    )
    parser.add_argument(
        "--long",
        action="store_true",
        help="buffer 10,000,000 results with the API down for the RSS target (the drain stays 1,000,000)",
    )
    parser.add_argument(
        "--profile-drain",
        metavar="PATH",
        help="one more drain under cProfile: stats to PATH, the top functions to PATH.txt",
    )
    parser.add_argument(
        "--profile-crawl",
        metavar="PATH",
        help="(b) and (c) once more under cProfile, untimed: stats to PATH.noop / PATH.sdi (+ .txt)",
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
    buffer_items = args.buffer_items or (
        5000 if args.smoke else 10_000_000 if args.long else 1_000_000
    )
    drain_items = args.drain_items or min(buffer_items, TARGET_DRAIN_ROWS)
    flush_items = args.flush_items or (1000 if args.smoke else TARGET_FLUSH_ROWS)
    shared_items = args.shared_items or max(1000, args.items // 2)
    fleet_items = args.fleet_items or max(500, args.items // 8)
    drain_rounds = args.drain_rounds or (1 if args.smoke else 3)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sdi-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(
        workdir, batch_size=args.batch_size, concurrency=args.concurrency, verbose=args.verbose
    )

    print("scrapy_sdi benchmark:", " ".join(sys.argv[1:]) or "(defaults)")
    print("machine:", machine())
    no_postgres = postgres_missing()
    if no_postgres:
        print(f"(f) and the PostgreSQL fleet are left out: {no_postgres}")
        VARIANTS.pop("pg")
        SDI_VARIANTS.pop("pg")
    print(
        f"(c) and the final flush default settings; (c') and the drain SDI_BATCH_SIZE={args.batch_size} "
        f"SDI_CONCURRENT_REQUESTS={args.concurrency}; work dir {workdir}",
        flush=True,
    )
    started = time.monotonic()
    runs: dict[str, list[dict[str, Any]]] = {}
    flush: dict[str, Any] = {}
    shared: dict[str, Any] = {}
    fleet: dict[str, Any] = {}
    filter_output = ""
    try:
        if not args.drain_only:
            print(f"throughput: {len(VARIANTS)} variants x {args.rounds} round(s)", flush=True)
            runs = compare(bench, args.items, naive_items, args.rounds)
            if args.profile_crawl:
                profile_crawls(bench, args.items, args.profile_crawl)
            print(
                f"shared file: 2 processes x {shared_items:,} results, one file vs a file each, "
                f"{args.rounds} round(s)",
                flush=True,
            )
            shared = shared_file(bench, shared_items, args.rounds)
            if not no_postgres:
                print(
                    f"PostgreSQL fleet: {PG_FLEET} processes x {fleet_items:,} results into one "
                    f"database vs one process, {args.rounds} round(s)",
                    flush=True,
                )
                fleet = postgres_fleet(bench, fleet_items, args.rounds)
        print(
            f"outage: buffering {buffer_items:,} results with the API down, then draining "
            f"{drain_items:,} {drain_rounds} time(s)",
            flush=True,
        )
        outage = buffer_and_drain(
            bench,
            buffer_items,
            drain_rounds,
            drain_items=drain_items,
            profile=args.profile_drain,
        )
        if not args.drain_only:
            print(f"final flush: {flush_items:,} results pending at close", flush=True)
            flush = final_flush(bench, flush_items)
            print(
                "filters: benchmarks/bench_filters.py" + (" --smoke" if args.smoke else ""),
                flush=True,
            )
            filter_output = filters(args.smoke)
    except BenchmarkError as exc:
        print(f"BENCHMARK FAILED: {exc} (work dir kept: {workdir})", file=sys.stderr)
        return 1
    finally:
        bench.close()
    median = report(runs, args.items, naive_items, args) if runs else {}
    print()
    print("Targets (issue #20)")
    lines = []
    if runs:
        lines += throughput_targets(runs, median)
        lines.append(shared_target(shared))
    lines += outage_targets(outage)
    if runs:
        lines.append(flush_target(flush))
        lines += filter_targets(filter_output)
    for line in lines:
        print("  " + line)
    if runs and fleet:
        print()
        print("Targets (issue #21)")
        pg_lines = postgres_targets(runs, median, fleet)
        for line in pg_lines:
            print("  " + line)
        lines += pg_lines
    drained = outage["drained"]
    print(
        f"  (the drain's crawl process: {drained['cpu_seconds']:.1f} s CPU from its start, "
        f"{drained['cpu_seconds'] / outage['drain_items'] * 1e6:.1f} us per row, "
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
                    "shared": shared,
                    "postgres_fleet": fleet,
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
    if not args.workdir:  # a temporary one: its buffers weigh gigabytes at the default sizes
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
