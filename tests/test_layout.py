"""Rules of the tree's layout that a review would otherwise have to remember.

Test modules share helpers only through ``tests/support/``: importing another test module runs
its module-level code, pulls its tests into the importer's namespace and ties the two files'
refactorings together. The README's Layout section names every module of the package, so a
reader finds where a thing lives; whoever adds a module is told here to say what it holds.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "scrapy_sdi"
#: Files of the package that are no module a reader looks for.
NOT_MODULES = {"__init__.py", "py.typed"}


def _imported(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of each module imported; ``from X import Y`` gives X and X.Y (Y may be one)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [
                (node.lineno, f"{base}.{alias.name}" if node.module else base + alias.name)
                for alias in node.names
            ]
    return found


def _test_modules_imported(source: str) -> list[tuple[int, str]]:
    imported = _imported(source)
    return [(line, name) for line, name in imported if name.rsplit(".", 1)[-1].startswith("test_")]


def test_no_test_module_imports_another_test_module():
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, name in _test_modules_imported(path.read_text(encoding="utf-8"))
    ]
    hint = "move what they share into a tests/support/ module named for what it holds"
    assert not offences, hint + ":\n" + "\n".join(offences)


def test_the_import_check_sees_every_form_of_import():
    forms = {
        "import tests.test_commands": True,
        "from tests.test_commands import sdi": True,
        "from tests import test_commands": True,
        "from tests.promises import test_lost": True,
        "from .test_commands import sdi": True,
        "from . import test_commands": True,
        "from tests.support.commands import sdi": False,
        "from tests.reliability.harness import Crawl": False,
        "import pytest": False,
    }
    assert {source: bool(_test_modules_imported(source)) for source in forms} == forms


def _layout_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def test_readme_layout_names_every_module():
    """Each file of scrapy_sdi/ as `name.py`, each subpackage as `name/`."""
    section = _layout_section()
    expected = [
        f"{p.name}/" if p.is_dir() else p.name
        for p in sorted(PACKAGE.iterdir())
        if p.name not in NOT_MODULES and (p.is_file() or (p / "__init__.py").is_file())
    ]
    missing = [name for name in expected if f"`{name}`" not in section]
    assert not missing, f"README.md's Layout section does not name {missing}: say what each holds"
