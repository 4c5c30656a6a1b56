"""The fault suite's fixtures, for the promises that replay its attacks (kill -9, restarts)."""

from tests.reliability.conftest import crawls, form, reliability_seed, rng

__all__ = ["crawls", "form", "reliability_seed", "rng"]
