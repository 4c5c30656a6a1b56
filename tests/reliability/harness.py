"""What the fault suite's tests share: crawls in their own processes, waiting on events, figures.

Everything here drives real things: ``python -m tests.support.run_spider`` processes (killed
with SIGKILL when a test says so), the reference server over loopback, the SQLite buffer file.
Waiting is always for an event — a line in the crawl's log, an entry in its audit log, a
counter of the server — polled with a deadline, never a bare sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tests.support.crawl import FAST_RETRIES, CrawlResult, crawl_command
from tests.support.scaleout import wait_for

#: The URL of SyntheticSpider's i-th result (tests/support/spiders.py).
RESULT_URL = "https://files.example.com/f/{i}/file{i}.mp3"

#: Log lines the tests wait for.
PIPELINE_OPEN_LINE = "SDI delivery to "  # scrapy_sdi.pipeline, at the end of open_spider
CLOSING_LINE = "Closing spider ("  # Scrapy's engine: the spider is done, close_spider drains
RESUMED_LINE = (
    "the API answers again; delivery resumed"  # scrapy_sdi.delivery, after a failure streak
)
NOT_DELIVERED_LINE = "not delivered ("  # scrapy_sdi.delivery, the first failure of a streak


@dataclass(frozen=True)
class Form:
    """How much of each scenario to run: the short form runs by default, the long one with --long."""

    name: str
    runs: int  # independent runs of each scenario (fresh server, fresh buffer)
    results: int  # results per crawl
    kills: int  # kill -9 of a crawl in total, in the kill scenario
    kills_per_round: int  # successive killed runs over one buffer before a run may finish
    outages: int  # API outages per crawl
    restarts: int  # server crashes and restarts per crawl

    def from_environment(self, environ: dict[str, str]) -> Form:
        """SDI_RELIABILITY_RUNS and SDI_RELIABILITY_KILLS override the form's counts."""
        changes: dict[str, int] = {}
        for key, name in (("SDI_RELIABILITY_RUNS", "runs"), ("SDI_RELIABILITY_KILLS", "kills")):
            if environ.get(key):
                changes[name] = max(1, int(environ[key]))
        return replace(self, **changes) if changes else self


SHORT = Form("short", runs=1, results=600, kills=3, kills_per_round=1, outages=1, restarts=2)
LONG = Form("long", runs=5, results=2000, kills=20, kills_per_round=2, outages=3, restarts=4)


def result_urls(n: int, offset: int = 0) -> set[str]:
    return {RESULT_URL.format(i=i) for i in range(offset, offset + n)}


def crawl_settings(server: Any, buffer_path: Path, **extra: Any) -> dict[str, Any]:
    """Settings of a crawl against ``server``: fast retries, small batches (many requests to fail)."""
    return {
        **server.settings,
        **FAST_RETRIES,
        "SDI_BUFFER_PATH": str(buffer_path),
        "SDI_BATCH_SIZE": 20,
        **extra,
    }


def short_close_settings(server: Any, buffer_path: Path, **extra: Any) -> dict[str, Any]:
    """``crawl_settings`` with a close timeout far below SDI_LEASE_TIMEOUT (its default): a run
    cannot wait for a dead run's leases to run out."""
    return crawl_settings(
        server, buffer_path, SDI_TIMEOUT=5, SDI_LEASE_TIMEOUT=120, SDI_CLOSE_TIMEOUT=5, **extra
    )


def wait_until(
    condition: Callable[[], Any], what: str, *, timeout: float = 90.0, poll: float = 0.02
) -> Any:
    """Poll ``condition`` until it gives something true, and return it; fail after ``timeout`` s."""
    return wait_for(condition, timeout, what, poll)


# --- crawls ----------------------------------------------------------------------------------


class Crawl:
    """One crawl in its own process group, its log read as it comes so a test can wait for a line."""

    def __init__(
        self,
        workdir: Path,
        settings: dict[str, Any],
        spider_args: dict[str, Any],
        *,
        gates: int = 0,
        spider: str = "SyntheticSpider",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.audit_path = Path(settings["SDI_AUDIT_LOG"]) if settings.get("SDI_AUDIT_LOG") else None
        self._gates = workdir / "gates"
        self._opened = 0
        if gates:  # tests.support.spiders.GatedSpider: the results come in gates + 1 parts
            self._gates.mkdir(exist_ok=True)
            spider, spider_args = (
                "GatedSpider",
                {**spider_args, "gates": str(self._gates), "phases": gates + 1},
            )
        cmd, env = crawl_command(workdir, settings, spider_args, spider)
        self.proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._reader = threading.Thread(
            target=self._read, name=f"crawl {self.proc.pid} log", daemon=True
        )
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def open_gate(self) -> None:
        """Let the spider yield its next part of results (a crawl started with ``gates``)."""
        self._opened += 1
        (self._gates / f"gate-{self._opened}").touch()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def log(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def line_index(self, text: str) -> int | None:
        """Index of the first log line containing ``text`` so far, or None."""
        with self._changed:
            return next((i for i, line in enumerate(self._lines) if text in line), None)

    def wait_for_line(self, text: str, *, timeout: float = 90.0) -> bool:
        """Wait until the log has a line containing ``text``; False when the crawl ended without one."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                if any(text in line for line in self._lines[seen:]):
                    return True
                seen = len(self._lines)
                if self._ended:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no log line with {text!r} within {timeout:g}s; log tail:\n{self.tail()}"
                    )
                self._changed.wait(remaining)

    def audit(self) -> list[dict[str, Any]]:
        """The audit log's entries so far (one per submission attempt)."""
        return read_audit(self.audit_path) if self.audit_path else []

    def kill(self) -> bool:
        """SIGKILL the crawl's process group: True when that is what ended it, False when it had ended by itself."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode == -signal.SIGKILL

    def finish(self, timeout: float = 300.0) -> CrawlResult:
        """Wait for the crawl to end by itself; its exit code, final stats and log."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the crawl did not end within {timeout:g}s; log tail:\n{self.tail()}"
            ) from None
        self._reader.join(10)
        stats_path = self.workdir / "stats.json"  # written by tests.support.statsdump at close
        stats: dict[str, Any] = {}
        if stats_path.exists():
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
            stats_path.unlink()
        return CrawlResult(self.proc.returncode, stats, self.log)

    def tail(self, chars: int = 3000) -> str:
        return self.log[-chars:]


class Crawls:
    """Starts crawls for one test and kills whatever is still running when the test ends."""

    def __init__(self) -> None:
        self.started: list[Crawl] = []

    def start(
        self,
        workdir: Path,
        settings: dict[str, Any],
        spider_args: dict[str, Any],
        *,
        gates: int = 0,
    ) -> Crawl:
        crawl = Crawl(workdir, settings, spider_args, gates=gates)
        self.started.append(crawl)
        return crawl

    def kill_all(self) -> None:
        for crawl in self.started:
            crawl.kill()


def read_audit(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:  # a line being written right now
            continue
    return entries


def failed_attempts(entries: list[dict[str, Any]], containing: str = "") -> int:
    return sum(1 for e in entries if e.get("error") and containing in e["error"])


# --- kill -9 at random moments ----------------------------------------------------------------

#: Where a kill may land, with weights: as the pipeline opens (items about to be buffered), after a
#: random number of results were answered (batches in flight, rows committed but not yet acked),
#: and in close_spider's final drain.
MOMENTS = {"start": 1, "delivering": 3, "closing": 1}


@dataclass
class Killed:
    """What ``kill_and_rerun`` did: the figures at the end, the kills by moment, the runs started."""

    figures: Figures
    kills: Counter[str]
    runs: int


def kill_and_rerun(
    form: Form,
    server: Any,
    crawls: Crawls,
    rng: Any,
    workdir: Path,
    settings: dict[str, Any],
    *,
    check: Callable[[Figures], None],
) -> Killed:
    """Crawl rounds of new URLs into one buffer, SIGKILL runs at random moments, rerun until one ends
    with nothing pending; ``check`` the server's figures after every round.

    Each round's first ``form.kills_per_round`` runs are killed (runs of one project over days); the
    first kill lands mid-delivery, whatever the seed.
    """
    n = form.results
    expected: set[str] = set()
    kills: Counter[str] = Counter()
    runs = 0
    round_number = 0
    figures = stored_figures(server, expected)
    while sum(kills.values()) < form.kills:
        args = {"n": n, "offset": round_number * n}
        expected |= result_urls(n, round_number * n)
        killed_this_round = 0
        while True:
            runs += 1
            assert runs <= 4 * form.kills + 10, "reruns do not converge"
            answered_before = answered(server)
            left = len(expected) - server.stats()["accepted"]  # this round's results not stored yet
            crawl = crawls.start(workdir / "crawl", settings, args)
            if killed_this_round < form.kills_per_round and sum(kills.values()) < form.kills:
                moment = _choose(rng, left, first=not kills)
                _wait_for_moment(
                    crawl, server, moment, rng.randint(1, max(1, left)), answered_before
                )
                if crawl.kill():
                    kills[moment] += 1
                    killed_this_round += 1
                    states = buffer_states(
                        Path(settings["SDI_BUFFER_PATH"])
                    )  # the file survives a kill at any moment
                    print(
                        f"kill {sum(kills.values())} ({moment}): round {round_number}, run {runs}; "
                        f"buffer left {states['pending']} pending, {states['in_flight']} in flight"
                    )
                    continue
            result = crawl.finish()
            assert result.returncode == 0, result.log[-3000:]
            assert "Traceback" not in result.log, result.log[-3000:]
            if result.stats["sdi/pending_at_close"] == 0:
                # what the killed runs left unstored, this one delivered
                assert result.stats["sdi/items_delivered"] >= left, (result.stats, left)
                break
        figures = stored_figures(server, expected)
        check(figures)
        round_number += 1
    assert kills["delivering"] >= 1
    return Killed(figures, kills, runs)


def start_side_by_side(
    crawls: Crawls,
    workdir: Path,
    settings: dict[str, Any],
    live_args: dict[str, Any],
    doomed_args: dict[str, Any],
) -> tuple[Crawl, Crawl]:
    """Two gated crawls on one buffer, both open: one to live on (its gate opens when the test
    says), one to kill (with an audit log for ``kill_mid_delivery``; its gate never opens)."""
    live = crawls.start(workdir / "live", settings, live_args, gates=1)
    doomed = crawls.start(
        workdir / "doomed",
        {**settings, "SDI_AUDIT_LOG": str(workdir / "doomed.jsonl")},
        doomed_args,
        gates=1,
    )
    for crawl in (live, doomed):
        assert crawl.wait_for_line(PIPELINE_OPEN_LINE), crawl.tail()
    return live, doomed


def kill_mid_delivery(crawl: Crawl, rng: Any) -> int:
    """SIGKILL ``crawl`` after a random few of its submission attempts (``_some_attempts``)."""
    attempts = _some_attempts(crawl, rng)
    assert crawl.kill(), f"the crawl ended by itself before the kill:\n{crawl.tail()}"
    return attempts


def kill_with_the_api_hung(crawl: Crawl, server: Any, buffer_path: Path, urls: set[str]) -> None:
    """Let a gated crawl's next part meet a hung API (SIGSTOP), kill it once some of that part's
    ``urls`` are in flight, then restart the API: those batches never reached it."""
    server.pause()
    crawl.open_gate()
    wait_until(
        lambda: buffered_urls(buffer_path, ("in_flight",)) & urls, "a batch of the crawl in flight"
    )
    assert crawl.kill(), f"the crawl ended by itself before the kill:\n{crawl.tail()}"
    server.kill()
    server.start()


def _some_attempts(crawl: Crawl, rng: Any, most: int = 4) -> int:
    """Wait until 1 to ``most`` (at random) of the crawl's submission attempts ended (its audit log
    says so; SDI_AUDIT_LOG must be set): it has more results to send. Return that number."""
    attempts = rng.randint(1, most)
    wait_until(
        lambda: len(crawl.audit()) >= attempts or not crawl.alive, f"{attempts} submission attempts"
    )
    return attempts


def _wait_for_moment(
    crawl: Crawl, server: Any, moment: str, target: int, answered_before: int
) -> None:
    if moment == "start":
        crawl.wait_for_line(PIPELINE_OPEN_LINE)
    elif moment == "closing":
        crawl.wait_for_line(CLOSING_LINE)
    else:
        wait_until(
            lambda: answered(server) - answered_before >= target or not crawl.alive,
            f"{target} results answered",
        )


def answered(server: Any) -> int:
    """Results the server has answered accepted or duplicate so far."""
    stats = server.stats()
    return stats["accepted"] + stats["duplicates"]


def _choose(rng: Any, left: int, *, first: bool) -> str:
    if first:
        return "delivering"  # at least one kill lands mid-delivery, whatever the seed
    moments = [m for m in MOMENTS if m != "delivering" or left > 0]
    return rng.choices(moments, weights=[MOMENTS[m] for m in moments])[0]


# --- what was stored, what the buffer holds -----------------------------------------------------


@dataclass
class Figures:
    """What the server stored, compared with the results the crawls produced."""

    results: int  # results that had to be stored
    lost: int  # of those, not stored at all
    duplicated: int  # extra copies stored (a URL stored 3 times counts 2)
    unexpected: int  # URLs stored that no crawl produced
    duplicate_answers: int  # resends the server answered `duplicate` (its counter)

    @property
    def exactly_once(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0

    def describe(self) -> str:
        return (
            f"{self.results} results: {self.lost} lost, {self.duplicated} stored more than once, "
            f"{self.unexpected} unexpected"
        )


def stored_figures(server: Any, urls: set[str], duplicate_answers: int | None = None) -> Figures:
    """Group the server's stored results by URL: each of ``urls`` must be there exactly once."""
    by_url = Counter(r["url"] for r in server.results())
    if duplicate_answers is None:
        duplicate_answers = server.stats()["duplicates"]
    return Figures(
        results=len(urls),
        lost=sum(1 for url in urls if not by_url[url]),
        duplicated=sum(n - 1 for n in by_url.values() if n > 1),
        unexpected=sum(1 for url in by_url if url not in urls),
        duplicate_answers=duplicate_answers,
    )


def buffer_states(path: Path) -> Counter[str]:
    """Rows per state in a buffer file, after checking that SQLite finds the file intact."""
    conn = sqlite3.connect(str(path))
    try:
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
        assert check == "ok", f"buffer {path} is damaged: {check}"
        return Counter(
            dict(conn.execute("SELECT state, count(*) FROM results GROUP BY state").fetchall())
        )
    finally:
        conn.close()


def buffered_urls(
    path: Path, states: tuple[str, ...] = ("pending", "in_flight", "delivered")
) -> set[str]:
    """URLs of a buffer file's results in ``states``; by default those to deliver or delivered, which
    are all the results crawls passed on (rows are committed first)."""
    conn = sqlite3.connect(str(path))
    try:
        marks = ",".join("?" * len(states))
        return {
            url
            for (url,) in conn.execute(f"SELECT url FROM results WHERE state IN ({marks})", states)
        }
    finally:
        conn.close()


# --- the figures table -----------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    setting: str
    runs: int = 0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicate_answers: int = 0

    def add(self, figures: Figures, runs: int = 1) -> None:
        self.runs += runs
        self.results += figures.results
        self.lost += figures.lost
        self.duplicated += figures.duplicated
        self.duplicate_answers += figures.duplicate_answers


TABLE_BEGIN = "<!-- reliability-table:begin -->"
TABLE_END = "<!-- reliability-table:end -->"


class Report:
    """One row per scenario, written as a Markdown table when --reliability-report is given."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rows: list[Row] = []
        self.forms: set[str] = set()
        self.started = time.monotonic()

    def row(self, form: Form, fault: str, setting: str) -> Row:
        self.forms.add(form.name)
        row = Row(fault, setting)
        self.rows.append(row)
        return row

    def markdown(self) -> str:
        import platform

        import scrapy

        lines = [
            "| fault | rate / setting | runs | results | lost | duplicated | resent, answered `duplicate` |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.fault} | {r.setting} | {r.runs} | {r.results} | {r.lost} | {r.duplicated} | {r.duplicate_answers} |"
            )
        minutes = (time.monotonic() - self.started) / 60
        lines += [
            "",
            f"Form: {', '.join(sorted(self.forms))}; seed {self.seed}; {os.cpu_count()} CPU cores; "
            f"Python {platform.python_version()}, Scrapy {scrapy.__version__}, SQLite {sqlite3.sqlite_version}; "
            f"{minutes:.1f} min.",
        ]
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> None:
        """Replace the table between the markers when ``path`` has them, else write the table alone."""
        table = self.markdown()
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        if TABLE_BEGIN in text and TABLE_END in text:
            head, rest = text.split(TABLE_BEGIN, 1)
            _, tail = rest.split(TABLE_END, 1)
            text = f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}"
        else:
            text = table
        path.write_text(text, encoding="utf-8")
