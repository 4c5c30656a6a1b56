import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_addoption(parser):
    group = parser.getgroup("scrapy_sdi reliability")
    group.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long reliability forms (tests marked slow) instead of the short ones",
    )
    group.addoption(
        "--reliability-report",
        metavar="PATH",
        default=None,
        help="write the fault suite's figures as a Markdown table to PATH "
        "(between its table markers when PATH has them; or set SDI_RELIABILITY_REPORT)",
    )


def pytest_configure(config):
    """The figures table is written by one session: under pytest-xdist each worker would hold part of it."""
    report = config.getoption("--reliability-report") or os.environ.get("SDI_RELIABILITY_REPORT")
    if report and config.getoption("numprocesses", None):
        raise pytest.UsageError(
            "--reliability-report (SDI_RELIABILITY_REPORT) needs the tests in one process: add -n 0"
        )


def pytest_collection_modifyitems(config, items):
    """The long forms (marked slow) run only with --long, and then instead of their short twins.

    They are deselected, not skipped: a default run reports only tests that ran.
    """
    unwanted = "short_form" if config.getoption("--long") else "slow"
    kept = [item for item in items if item.get_closest_marker(unwanted) is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(
            items=[item for item in items if item.get_closest_marker(unwanted)]
        )
        items[:] = kept


# a private PostgreSQL cluster per session, a fresh database per test (tests/support/postgres.py)
from tests.support.postgres import postgres_db, postgres_server  # noqa: E402, F401

# things a test starts, stopped at its teardown (tests/support/scaleout.py)
from tests.support.scaleout import cleanup  # noqa: E402, F401
