"""Fixtures of the fault suite: short or long form, a printed seed, crawls that never outlive a test,
and the figures table (``--reliability-report=PATH``; the options live in tests/conftest.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.reliability.harness import LONG, SHORT, Crawls, Report


@pytest.fixture(
    params=[
        pytest.param(SHORT, id="short", marks=pytest.mark.short_form),
        pytest.param(LONG, id="long", marks=pytest.mark.slow),
    ]
)
def form(request):
    """Each scenario has a short form (default suite) and a long one (``--long``, marked slow)."""
    return request.param.from_environment(os.environ)


@pytest.fixture(scope="session")
def reliability_seed() -> int:
    """SDI_RELIABILITY_SEED repeats a run's random choices (kill moments, fault rolls); else a new one."""
    value = os.environ.get("SDI_RELIABILITY_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


@pytest.fixture
def rng(request, reliability_seed) -> random.Random:
    """A random source per test, derived from the session's seed, which is printed to reproduce a failure."""
    print(
        f"reliability seed {reliability_seed}: SDI_RELIABILITY_SEED={reliability_seed} repeats these choices"
    )
    return random.Random(f"{reliability_seed}:{request.node.name}")


@pytest.fixture
def crawls():
    started = Crawls()
    yield started
    started.kill_all()  # a failed test must not leave crawls running


@pytest.fixture(scope="session")
def reliability_report(request, reliability_seed):
    report = Report(reliability_seed)
    yield report
    path = request.config.getoption("--reliability-report") or os.environ.get(
        "SDI_RELIABILITY_REPORT"
    )
    if path and report.rows:
        report.write(Path(path))
