"""dev.py's install stamp: each command installs what it needs once, and nothing it already has.

No network: pip is replaced by a recorder, the .venv by a temporary directory.
"""

from __future__ import annotations

import importlib.util
import json
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
    assert dev.extras_to_install(("d0", TEST), "d1", NONE) == NONE  # changed metadata: only what is wanted


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
    proc = subprocess.run([sys.executable, str(ROOT / "dev.py"), "--help"], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "python3 dev.py demo" in proc.stdout
