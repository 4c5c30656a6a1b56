"""A module of scrapy_sdi as it is at another commit, for the benches' ``--baseline GITREF``.

The benches time the old and the new code in alternation in one process, so that the drift of a
shared machine hits both alike; only the module under test is loaded from ``GITREF``, the rest of
the package is this checkout's.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_baseline(ref: str, module: str) -> ModuleType:
    """``scrapy_sdi/<module>.py`` as it is at ``ref``, as a module of its own."""
    path = f"scrapy_sdi/{module}.py"
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader(f"scrapy_sdi._baseline_{module}", loader=None)
    assert spec is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up
    exec(compile(source, f"<{ref}:{path}>", "exec"), loaded.__dict__)  # noqa: S102
    return loaded
