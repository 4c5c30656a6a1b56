"""dev.py's install stamp: each command installs what it needs once, and nothing it already has.

No network: pip is replaced by a recorder, the .venv by a temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST, NONE = frozenset({"test"}), frozenset()


@pytest.fixture
def dev(tmp_path, monkeypatch):
    """dev.py as a module, its .venv in tmp_path (with a python in it), pip calls recorded."""
    spec = importlib.util.spec_from_file_location("dev_under_test", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    venv = tmp_path / ".venv"
    monkeypatch.setattr(module, "VENV", venv)
    monkeypatch.setattr(module, "STAMP", venv / ".dev-install-stamp")
    module.venv_python().parent.mkdir(parents=True)
    module.venv_python().touch()
    module.pip_calls = []

    def call(cmd, cwd=None):
        assert cmd[1:4] == ["-m", "pip", "install"], cmd
        module.pip_calls.append(cmd[-1])
        return 0

    monkeypatch.setattr(module.subprocess, "call", call)
    return module


def test_extras_to_install_keeps_what_the_metadata_already_has(dev):
    assert dev.extras_to_install(None, "d1", NONE) == NONE
    assert dev.extras_to_install(("d1", NONE), "d1", NONE) is None
    assert dev.extras_to_install(("d1", NONE), "d1", TEST) == TEST
    assert dev.extras_to_install(("d1", TEST), "d1", NONE) is None
    assert (
        dev.extras_to_install(("d0", TEST), "d1", NONE) == NONE
    )  # changed metadata: only what is wanted


def test_demo_then_test_then_demo(dev, capsys):
    dev.ensure_env(NONE)
    assert dev.pip_calls == ["."]
    assert "pip install -e ." in capsys.readouterr().out
    dev.ensure_env(TEST)
    assert dev.pip_calls == [".", ".[test]"]
    assert 'pip install -e ".[test]"' in capsys.readouterr().out
    dev.ensure_env(NONE)
    dev.ensure_env(TEST)
    assert dev.pip_calls == [".", ".[test]"]
    assert capsys.readouterr().out == ""
    assert json.loads(dev.STAMP.read_text())["extras"] == ["test"]


def test_a_stamp_of_the_older_dev_py_counts_as_the_test_extra(dev):
    dev.STAMP.write_text(dev._inputs_digest() + "\n")
    dev.ensure_env(NONE)
    dev.ensure_env(TEST)
    assert dev.pip_calls == []


def test_a_failed_install_is_tried_again(dev, monkeypatch):
    monkeypatch.setattr(dev.subprocess, "call", lambda cmd, cwd=None: 1)
    with pytest.raises(dev.DevError, match="pip install failed"):
        dev.ensure_env(TEST)
    assert dev.read_stamp() is None


def test_help_prints_the_usage():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "dev.py"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "python3 dev.py demo" in proc.stdout


# -- the declared matrix ----------------------------------------------------------------------


def test_the_matrix_spans_what_pyproject_declares(dev):
    """Its oldest entry is requires-python's lower bound with Scrapy's; its newest, 3.13."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    oldest_python = re.search(r'^requires-python = ">=(\d+\.\d+)"', text, re.MULTILINE).group(1)
    oldest_scrapy = re.search(r'"scrapy>=(\d+\.\d+)"', text).group(1)
    pairs = sorted(dev.MATRIX.values(), key=lambda pair: tuple(map(int, pair[0].split("."))))
    assert pairs[0] == (oldest_python, f"scrapy=={oldest_scrapy}.*")
    assert pairs[-1] == ("3.13", "scrapy")
    assert '"Programming Language :: Python :: 3.13"' in text


def test_find_python_takes_the_newest_pyenv_build_then_path(dev, tmp_path, monkeypatch):
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    for build in ("3.10.2", "3.10.13", "3.100.1"):
        python = tmp_path / "pyenv" / "versions" / build / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.touch()
    assert dev.find_python("3.10") == tmp_path / "pyenv" / "versions" / "3.10.13" / "bin" / "python"
    monkeypatch.setattr(dev.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert dev.find_python("3.12") == Path("/usr/bin/python3.12")
    monkeypatch.setattr(dev.shutil, "which", lambda name: None)
    assert dev.find_python("3.12") is None


def test_a_missing_python_is_skipped_locally_and_fails_in_ci(dev, monkeypatch, capsys):
    monkeypatch.setattr(dev, "find_python", lambda version: None)
    monkeypatch.delenv("CI", raising=False)
    assert dev.main(["matrix"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"dev.py: skipping {name}: no Python {version} (looked in ~/.pyenv/versions and "
        f"for python{version} on PATH)"
        for name, (version, _) in dev.MATRIX.items()
    ]
    monkeypatch.setenv("CI", "true")
    assert dev.main(["matrix"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("dev.py: py310-scrapy214: no Python 3.10"), err


def test_the_matrix_collects_only_the_files_with_smoke_tests(dev):
    assert dev.smoke_files() == [
        "tests/test_commands.py",
        "tests/test_delivery_e2e.py",
        "tests/test_reactor_modes.py",
        "tests/test_server.py",
    ]
