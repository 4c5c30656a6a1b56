"""The package's layers, checked on every module's own imports (read from its source, lazy and
type-checking imports included), so that a change crossing them fails here rather than in review.

From the top: what Scrapy and users call (pipeline, extension, add-on, commands, dashboard,
testing tools); the outbox and the services over the buffer (delivery, group commit, filters,
requeue, status, metrics); the buffer and the API client, side by side; the HTTP transport.
A module may import its own layer and those below it, never one above. The foundations
(settings, errors, mapping...) serve every layer and import neither the outbox layer nor the
entry points. Only the buffer modules speak SQLite, apart from the reference API server's own
database (``scrapy_sdi/testing/server.py``), and only the PostgreSQL buffer modules speak
PostgreSQL: the dashboard and the commands name a reader's or a buffer's methods, never SQL. An equivalent of import-linter's ``layers`` and
``forbidden`` contracts without the dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scrapy_sdi"

#: Highest first. A name is a module or a package (every module under it), relative to scrapy_sdi.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    (
        "entry points",
        frozenset(
            {
                "",
                "addon",
                "pipeline",
                "session",
                "stopping",
                "extension",
                "monitors",
                "commands",
                "dashboard",
                "testing",
            }
        ),
    ),
    (
        "outbox",
        frozenset(
            {"outbox", "delivery", "writer", "filter_source", "requeue", "status", "metrics"}
        ),
    ),
    (
        "buffer and client",
        frozenset(
            {
                "buffer",
                "buffer_postgres",
                "buffer_postgres_queries",
                "buffer_calls",
                "buffer_queries",
                "owners",
                "client",
            }
        ),
    ),
    ("transport", frozenset({"transport"})),
)
#: Used by every layer; they may import the buffer, the client and the transport, nothing above.
FOUNDATIONS = frozenset(
    {
        "errors",
        "settings",
        "signals",
        "mapping",
        "filters",
        "sizing",
        "backpressure",
        "blocking",
        "audit",
        "stats",
        "formatting",
        "csv_cells",
        "clock",
    }
)
#: The buffer and the client know nothing of each other.
INDEPENDENT = (
    frozenset(
        {
            "buffer",
            "buffer_postgres",
            "buffer_postgres_queries",
            "buffer_calls",
            "buffer_queries",
            "owners",
        }
    ),
    frozenset({"client", "transport"}),
)
SQLITE = ("sqlite3", "sqlite_utils")
SQLITE_ALLOWED = frozenset({"buffer", "buffer_queries", "testing.server"})
POSTGRES = ("psycopg", "psycopg_pool")
POSTGRES_ALLOWED = frozenset({"buffer_postgres", "buffer_postgres_queries"})


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every module ``name`` imports, as dotted names (``scrapy_sdi.x`` shortened to ``x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, (
                f"{name}: a relative import (line {node.lineno}); the package imports absolutely"
            )
            for (
                alias
            ) in node.names:  # ``from pkg import module`` imports the module, not pkg's names
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if _short(submodule) in MODULES else node.module or "")
    return {_short(i) if i.partition(".")[0] == "scrapy_sdi" else i for i in found} - {name}


def _short(module: str) -> str:
    """``scrapy_sdi.x.y`` as ``x.y``; the package itself as ``""``."""
    return module.removeprefix("scrapy_sdi").removeprefix(".")


def _within(name: str, names: frozenset[str]) -> bool:
    return any(name == n or (n and name.startswith(n + ".")) for n in names)


def _layer(name: str) -> int | None:
    """The rank of ``name``'s layer (0: the top); None for a foundation."""
    return next((rank for rank, (_, names) in enumerate(LAYERS) if _within(name, names)), None)


def test_every_module_has_a_place():
    placed = {name for name in MODULES if _layer(name) is not None or _within(name, FOUNDATIONS)}
    assert set(MODULES) - placed == set(), (
        "add the new module to a layer (or the foundations) in tests/test_layers.py"
    )


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _layer(n) is not None))
def test_no_module_imports_a_layer_above_its_own(name):
    own = _layer(name)
    above = {
        i for i in _imports(name) if i in MODULES and (_layer(i) is not None and _layer(i) < own)
    }
    assert above == set(), (
        f"{name} ({LAYERS[own][0]}) imports {sorted(above)} from a layer above it"
    )


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _within(n, FOUNDATIONS)))
def test_foundations_import_neither_the_outbox_layer_nor_the_entry_points(name):
    above = {i for i in _imports(name) if i in MODULES and _layer(i) is not None and _layer(i) <= 1}
    assert above == set(), f"{name} is a foundation but imports {sorted(above)}"


def test_the_buffer_and_the_client_are_independent():
    for side, other in (INDEPENDENT, INDEPENDENT[::-1]):
        for name in sorted(n for n in MODULES if _within(n, side)):
            assert not any(_within(i, other) for i in _imports(name) if i in MODULES), (
                f"{name} imports {sorted(other)}"
            )


def test_only_the_buffer_modules_speak_sqlite():
    speaking = {name for name in MODULES if any(i.split(".")[0] in SQLITE for i in _imports(name))}
    assert speaking <= SQLITE_ALLOWED, (
        f"{sorted(speaking - SQLITE_ALLOWED)} import SQLite: read through scrapy_sdi.buffer"
    )


def test_only_the_postgres_buffer_modules_speak_postgresql():
    speaking = {
        name for name in MODULES if any(i.split(".")[0] in POSTGRES for i in _imports(name))
    }
    assert speaking <= POSTGRES_ALLOWED, (
        f"{sorted(speaking - POSTGRES_ALLOWED)} import psycopg: read through a buffer or a reader"
    )
    assert "psycopg" in _imports("buffer_postgres_queries")


def test_the_checks_see_imports():
    """The checks above pass vacuously if the import reader breaks: it must see known edges."""
    assert {"buffer", "client", "settings"} <= _imports("delivery")
    assert "dashboard.queries" in _imports("dashboard.server") and "metrics" in _imports(
        "dashboard.server"
    )
    assert "sqlite3" in _imports("buffer") and "transport" in _imports("client")
