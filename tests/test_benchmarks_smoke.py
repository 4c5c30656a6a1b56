"""``benchmarks/run.py --smoke`` runs to the end and prints every variant and every target line.

Not a timing test: figures on a shared machine say nothing; only that the runner works does.
"""

from __future__ import annotations

import json
import os
import pstats
import re
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
RUNNER = CHECKOUT / "benchmarks" / "run.py"
CRAWL = CHECKOUT / "benchmarks" / "crawl.py"

VARIANT_LINES = (
    "(a) no pipeline",
    "(b) no-op pipeline",
    "(c) scrapy_sdi, default settings",
    "(c') scrapy_sdi, --batch-size x --concurrency",
    "(d) FEEDS, JSON lines file",
    "(e) naive urllib POST per result",
    "(f) scrapy_sdi, PostgreSQL buffer",
)
#: Every target of issue #20, with its threshold, in the order printed.
TARGET_LINES = (
    r"\(c\) default settings >= 0\.85 x \(b\), median: .* (PASS|MISS)$",
    r"\(c\) >= \(d\) in every round: .* (PASS|MISS)$",
    r"\(c\) CPU per result added over \(b\): .*\(target <= 25 us\) (PASS|MISS)$",
    r"2 processes buffering [\d,]+ each into one file >= 0\.9 x a file each: .* (PASS|MISS)$",
    r"API down, [\d,]+ results buffered: peak RSS growth .*\(target <= 50 MB\) (PASS|MISS)$",
    r"drain of a [\d,]+-row backlog: .*\(target >= 100,000\) (PASS|MISS)$",
    r"final flush of [\d,]+ pending at close: .*\(target <= 2 s\) (PASS|MISS)$",
    r"filters: compile: .*",
    r"filters: match: .* results/s.*",
    r"filter matching with [\d,]+ filters: .*\(target >= 250,000\) (PASS|MISS)$",
    # issue #21
    r"\(f\) PostgreSQL buffer >= 0\.7 x \(c\) SQLite in the same run: .* (PASS|MISS)$",
    r"8 processes buffering [\d,]+ each into one PostgreSQL >= 4 x one process: .* (PASS|MISS)$",
)


def test_smoke_run_prints_every_variant_and_target(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--smoke",
            "--profile-crawl",
            str(tmp_path / "crawl.prof"),
            "--workdir",
            str(tmp_path),
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,  # ~25 s on an idle 2-core machine; generous for a loaded CI box
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line.strip() for line in done.stdout.splitlines()]
    for label in VARIANT_LINES:
        rows = [line for line in lines if line.startswith(label)]
        assert rows, f"no row for {label!r} in:\n{done.stdout}"
        assert re.search(r"\d[\d,]*\*? +[\d,]+ +\d+\.\d\d +[\d.]+ +[\d.]+$", rows[-1]), rows[-1]
    assert any("extrapolated" in line for line in lines), "(e) must say it is extrapolated"
    for pattern in TARGET_LINES:
        assert any(re.search(pattern, line) for line in lines), (
            f"no target line matching {pattern!r} in:\n{done.stdout}"
        )
    for variant in ("noop", "sdi"):
        assert "function calls" in (tmp_path / f"crawl.prof.{variant}.txt").read_text()
    figures = json.loads((tmp_path / "out.json").read_text())
    assert len(figures["shared"]["rates"]["one"]) == len(figures["shared"]["rates"]["each"]) == 1
    fleet = figures["postgres_fleet"]
    assert (
        len(fleet["rates"]["fleet"]) == len(fleet["rates"]["one"]) == 1 and fleet["processes"] == 8
    )


def test_a_profiled_drain_writes_its_profile_and_is_not_timed(tmp_path: Path) -> None:
    profile = tmp_path / "drain.prof"
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--drain-only",
            "--buffer-items",
            "3000",
            "--drain-items",
            "1000",
            "--drain-rounds",
            "1",
            "--profile-drain",
            str(profile),
            "--workdir",
            str(tmp_path),
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "function calls" in (tmp_path / "drain.prof.txt").read_text()
    profiled = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    assert any(name == "claim" for _, _, name in profiled), "the drain's claims are in the profile"
    assert "API down, 3,000 results buffered" in done.stdout
    assert "drain of a 1,000-row backlog" in done.stdout and "the target's size is" in done.stdout
    assert len(json.loads((tmp_path / "out.json").read_text())["outage"]["drains_s"]) == 1


def test_drain_only_runs_the_outage_and_the_drain_alone(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--drain-only",
            "--buffer-items",
            "2000",
            "--drain-rounds",
            "2",
            "--workdir",
            str(tmp_path),
            "--json",
            str(tmp_path / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line.strip() for line in done.stdout.splitlines()]
    for pattern in TARGET_LINES[4:6]:
        assert any(re.search(pattern, line) for line in lines), (
            f"no target line matching {pattern!r} in:\n{done.stdout}"
        )
    assert not any(line.startswith(VARIANT_LINES[0]) for line in lines), (
        "--drain-only must not run the throughput variants"
    )
    assert any("(median of 2 drains: " in line for line in lines), (
        done.stdout
    )  # each drained a copy of the backlog
    assert len(json.loads((tmp_path / "out.json").read_text())["outage"]["drains_s"]) == 2


def test_a_crawl_runs_the_scrapy_sdi_of_its_own_checkout(tmp_path: Path) -> None:
    """Run from a worktree, a crawl must measure that worktree's code, not an installed copy."""
    elsewhere = tmp_path / "elsewhere" / "scrapy_sdi"
    elsewhere.mkdir(parents=True)
    (elsewhere / "__init__.py").write_text("")
    out = tmp_path / "noop.json"
    done = subprocess.run(
        [sys.executable, str(CRAWL), "noop", "--items", "10", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(elsewhere.parent)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(out.read_text())["package"] == str(CHECKOUT / "scrapy_sdi")
