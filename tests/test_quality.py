"""The quality gates, run with the suite: ruff's lint, its format check, and mypy over the package.

Their configuration is in pyproject.toml ([tool.ruff], [tool.mypy]); a failure shows the tool's
own output. The tools come with the test extra.
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.crawl import ROOT

#: What ruff reads: the package, the tests, the benchmarks and the developer script.
LINTED = ("scrapy_sdi", "tests", "benchmarks", "dev.py")


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ruff_finds_nothing():
    proc = _run("ruff", "check", "--no-cache", "--output-format", "concise", *LINTED)
    assert proc.returncode == 0, f"ruff check:\n{proc.stdout}{proc.stderr}"


def test_ruff_format_leaves_every_file_as_it_is():
    proc = _run("ruff", "format", "--check", "--no-cache", *LINTED)
    assert proc.returncode == 0, f"ruff format --check:\n{proc.stdout}{proc.stderr}"


def test_mypy_finds_nothing(tmp_path):
    """Strictness as configured: every function annotated, untyped bodies checked too."""
    proc = _run("mypy", "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary")
    assert proc.returncode == 0, f"mypy:\n{proc.stdout}{proc.stderr}"
