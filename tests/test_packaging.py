"""What a release holds: the sdist and the wheel, built from this checkout, and their contents.

Both are built as a release would build them (``python -m build``: the sdist, then the wheel from
the sdist), without build isolation so no run downloads a build backend: the test extra brings
``build`` and ``setuptools``. The build works on a copy of the checkout (less what .gitignore
leaves out), so it leaves no ``build/`` or ``*.egg-info`` behind in the working tree.
"""

from __future__ import annotations

import configparser
import email.parser
import email.policy
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath

import pytest

import scrapy_sdi

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "scrapy_sdi"
BUILD_TIMEOUT = 120.0


@dataclass(frozen=True)
class Dists:
    wheel: Path
    sdist: Path


def _checkout_copy(dest: Path) -> Path:
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()]
    patterns = [p for p in ignored if p and not p.startswith("#")] + [".git"]
    return Path(shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*patterns)))


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Dists:
    work = tmp_path_factory.mktemp("packaging")
    source = _checkout_copy(work / "src")
    out = work / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dists(wheel=wheel, sdist=sdist)


def _wheel_names(dists: Dists) -> set[str]:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return set(wheel.namelist())


def _wheel_text(dists: Dists, name: str) -> str:
    with zipfile.ZipFile(dists.wheel) as wheel:
        return wheel.read(f"scrapy_sdi-{scrapy_sdi.__version__}.dist-info/{name}").decode("utf-8")


def _metadata(text: str) -> Message:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


def _sdist_names(dists: Dists) -> set[str]:
    """The sdist's members, relative to its top directory (``scrapy_sdi-VERSION/``)."""
    with tarfile.open(dists.sdist) as sdist:
        names = [PurePosixPath(member.name) for member in sdist.getmembers()]
    tops = {name.parts[0] for name in names}
    assert tops == {f"scrapy_sdi-{scrapy_sdi.__version__}"}
    return {str(PurePosixPath(*name.parts[1:])) for name in names if len(name.parts) > 1}


def test_the_dists_are_named_with_the_one_version(dists: Dists) -> None:
    version = scrapy_sdi.__version__
    assert dists.wheel.name == f"scrapy_sdi-{version}-py3-none-any.whl"
    assert dists.sdist.name == f"scrapy_sdi-{version}.tar.gz"


def test_the_wheel_holds_every_module_and_the_package_data(dists: Dists) -> None:
    names = _wheel_names(dists)
    modules = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py")}
    assert modules - names == set()
    static = {
        path.relative_to(ROOT).as_posix()
        for path in (PACKAGE / "dashboard" / "static").iterdir()
        if path.is_file()
    }
    assert static and static <= names
    assert {"scrapy_sdi/py.typed", "scrapy_sdi/openapi.yaml"} <= names
    assert not [name for name in names if name.startswith(("tests/", "example_project/"))]
    with zipfile.ZipFile(dists.wheel) as wheel:
        assert wheel.read("scrapy_sdi/openapi.yaml") == (PACKAGE / "openapi.yaml").read_bytes()


def test_the_wheel_registers_the_command_and_the_pytest_plugin(dists: Dists) -> None:
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_wheel_text(dists, "entry_points.txt"))
    assert dict(entry_points["scrapy.commands"]) == {"sdi": "scrapy_sdi.commands.sdi:Command"}
    assert dict(entry_points["pytest11"]) == {"scrapy_sdi": "scrapy_sdi.testing.pytest_plugin"}


def test_the_wheel_metadata(dists: Dists) -> None:
    metadata = _metadata(_wheel_text(dists, "METADATA"))
    assert metadata["Name"] == "scrapy_sdi"
    assert metadata["Version"] == scrapy_sdi.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = set(metadata.get_all("Classifier"))
    assert {"Framework :: Scrapy", "Typing :: Typed"} <= classifiers
    pythons = {f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)}
    assert pythons <= classifiers
    assert {"Homepage", "Repository", "Changelog"} <= {
        url.split(",", 1)[0] for url in metadata.get_all("Project-URL")
    }
    requires = metadata.get_all("Requires-Dist")
    assert "idna>=3.0" in requires  # imported by filters.py
    assert 'vermin>=1.6; extra == "test"' in requires
    assert set(metadata.get_all("Provides-Extra")) == {
        "monitoring",
        "xlsx",
        "reactorless",
        "docs",
        "smoke",
        "test",
        "postgres",
    }
    licence = _wheel_text(dists, "licenses/LICENSE")
    assert "BSD 3-Clause License" in licence and "the scrapy_sdi authors" in licence


def test_the_sdist_holds_the_documents_and_leaves_the_tests_out(dists: Dists) -> None:
    names = _sdist_names(dists)
    assert {
        "LICENSE",
        "CHANGELOG.md",
        "README.md",
        "pyproject.toml",
        "PKG-INFO",
        "scrapy_sdi/py.typed",
        "scrapy_sdi/openapi.yaml",
        "mkdocs.yml",
        "docs/settings.md",
    } <= names
    # the suite needs tests/support, conftest.py, example_project and benchmarks: all or nothing
    suite = {"tests", "example_project", "benchmarks"}
    assert not [name for name in names if name.split("/")[0] in suite]
    with tarfile.open(dists.sdist) as sdist:
        member = sdist.extractfile(f"scrapy_sdi-{scrapy_sdi.__version__}/PKG-INFO")
        assert member is not None
        assert _metadata(member.read().decode("utf-8"))["Version"] == scrapy_sdi.__version__
