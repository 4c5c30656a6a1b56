"""What the API's 413 answers taught about how big a request it takes.

A 413 with ``max_results`` says how many results fit, and delivery claims that many from then on.
One without it — a reverse proxy's HTML page for a body over its limit — says only that this many
results in this many bytes were too much. Forgetting it had every later batch refused and split
again (69 refusals for 104 accepted posts in one crawl), so both are remembered and later requests
are cut to stay under them: the largest request accepted since the refusal (until one is, half
the refused one). Each bound grows by a tenth after every ``GROW_AFTER`` requests accepted in a
row, so a limit raised on the API's side is found again, at the cost of one 413 per try.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Requests accepted in a row before a learned bound grows by a tenth.
GROW_AFTER = 20


class _Bound:
    """One learned bound per request (results, or body bytes); None until a 413 teaches it."""

    __slots__ = ("good", "limit", "streak")

    def __init__(self) -> None:
        self.limit: int | None = None
        self.good = 0  # the largest request accepted since the last refusal
        self.streak = 0  # requests accepted in a row

    def refused(self, size: int) -> None:
        self.limit = self.good if 0 < self.good < size else max(1, size // 2)
        self.good = self.streak = 0

    def accepted(self, size: int) -> None:
        if self.limit is None:
            return
        self.good = max(self.good, size)
        self.streak += 1
        if self.streak >= GROW_AFTER:
            self.limit += max(1, self.limit // 10)
            self.streak = 0

    def allows(self, size: int) -> bool:
        return self.limit is None or size <= self.limit


class RequestLimits:
    """Cuts batches into requests the API has shown it takes (see the module's docstring)."""

    def __init__(self, envelope: int) -> None:
        self.envelope = envelope  # bytes of a request body around its results
        self.results = _Bound()
        self.bytes = _Bound()

    @property
    def learned(self) -> bool:
        return self.results.limit is not None or self.bytes.limit is not None

    def refused(self, results: int, body_bytes: int, max_results: int | None) -> None:
        """A 413 for ``results`` results in ``body_bytes`` bytes.

        A single result refused says nothing about batches (it is rejected on its own), and a
        413 whose ``max_results`` the batch kept to was about bytes only.
        """
        if results < 2:
            return
        if max_results is None:
            self.results.refused(results)
        if max_results is None or max_results >= results:
            self.bytes.refused(body_bytes)

    def accepted(self, results: int, body_bytes: int) -> None:
        self.results.accepted(results)
        self.bytes.accepted(body_bytes)

    def fit(self, payloads: Sequence[bytes]) -> int:
        """How many of ``payloads``, from the first, one request may carry (always at least one)."""
        if not self.learned:
            return len(payloads)
        size = self.envelope - 1  # no comma before the first result
        for n, payload in enumerate(payloads):
            size += len(payload) + 1
            if n and not (self.results.allows(n + 1) and self.bytes.allows(size)):
                return n
        return len(payloads)

    def describe(self) -> str:
        """The bounds in force, for the log."""
        parts = [f"{self.results.limit} results"] if self.results.limit is not None else []
        parts += [f"{self.bytes.limit} bytes"] if self.bytes.limit is not None else []
        return " and ".join(parts) or "no bound"
