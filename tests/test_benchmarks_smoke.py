"""``benchmarks/run.py --smoke`` runs to the end and prints every variant and every target line.

Not a timing test: figures on a shared machine say nothing; only that the runner works does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RUNNER = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

VARIANT_LINES = (
    "(a) no pipeline",
    "(b) no-op pipeline",
    "(c) scrapy_sdi, SQLite buffer -> server",
    "(d) FEEDS, JSON lines file",
    "(e) naive urllib POST per result",
)
TARGET_LINES = (
    r"\(c\) throughput >= 0\.85 x \(b\): .* (PASS|MISS)$",
    r"\(c\) at least as fast as \(d\): .* (PASS|MISS)$",
    r"API down, [\d,]+ results buffered: peak RSS growth .* (PASS|MISS)$",
    r"drain of a [\d,]+-row backlog: .* (PASS|MISS)$",
    r"final flush of [\d,]+ pending at close: .* (PASS|MISS)$",
    r"filters: compile: .*",
    r"filters: match: .* results/s.*",
)


def test_smoke_run_prints_every_variant_and_target(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER),
            "--smoke",
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
    assert (tmp_path / "out.json").exists()


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
    for pattern in TARGET_LINES[2:4]:
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
