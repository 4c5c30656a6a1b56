"""The oldest Python that pyproject.toml's ``requires-python`` admits can run the code we ship.

A ``from datetime import UTC`` (3.11) once broke the reference server on 3.10 while every test,
run on a newer Python, passed: these checks read the target from pyproject.toml, so raising or
lowering ``requires-python`` moves them with it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.crawl import ROOT

#: What is shipped or run by hand: the package, the dev script, the tests and the benchmarks.
SOURCES = ("scrapy_sdi", "tests", "dev.py", "benchmarks")


def oldest_python() -> str:
    """The lowest version ``requires-python`` admits, e.g. "3.10" for ">=3.10".

    Read with a pattern rather than tomllib, which is new in 3.11: this file runs on 3.10 too.
    """
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(r'^requires-python\s*=\s*"([^"]*)"', text, re.MULTILINE)
    assert line, "pyproject.toml's [project] table has no requires-python"
    spec = line.group(1)
    match = re.fullmatch(r"\s*>=\s*(\d+\.\d+)(\.\d+)?\s*", spec)
    assert match, f"requires-python = {spec!r}: expected a lower bound such as '>=3.10'"
    return match.group(1)


def test_no_code_needs_a_newer_python_than_python_requires():
    """vermin reads the syntax, modules and members every file uses, without running it."""
    target = oldest_python()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from vermin.main import main; sys.exit(main())",
            "--no-config-file",
            f"--target={target}-",
            "--violations",
            "--no-tips",
            "-q",
            *SOURCES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"code needing a Python newer than {target}:\n{proc.stdout}{proc.stderr}"
    )


def test_the_oldest_python_compiles_every_file(tmp_path):
    """Syntax newer than the oldest Python fails to compile on that Python itself (pyenv's build)."""
    target = oldest_python()
    python = Path.home() / ".pyenv" / "versions"
    found = sorted(python.glob(f"{target}.*/bin/python"))
    if not found:
        pytest.skip(f"no Python {target} under {python} (pyenv) to compile with")
    env = {
        **os.environ,
        "PYTHONPYCACHEPREFIX": str(tmp_path),
    }  # keep its .pyc files out of the tree
    proc = subprocess.run(
        [str(found[-1]), "-m", "compileall", "-q", *SOURCES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"Python {target} cannot compile:\n{proc.stdout}{proc.stderr}"
