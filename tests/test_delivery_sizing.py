"""What a 413 teaches (scrapy_sdi.sizing): pure logic; the crawl behind a proxy is in test_durability."""

from __future__ import annotations

from scrapy_sdi.mapping import encode_batch
from scrapy_sdi.sizing import GROW_AFTER, RequestLimits

PAYLOADS = [b'{"id":"%04d"}' % i for i in range(100)]


def body_bytes(n: int) -> int:
    return len(encode_batch("c", PAYLOADS[:n]))


def fitting(max_bytes: int, max_results: int = len(PAYLOADS)) -> int:
    """The most results whose request stays within both bounds."""
    return max(n for n in range(1, max_results + 1) if body_bytes(n) <= max_bytes)


def limits() -> RequestLimits:
    return RequestLimits(len(encode_batch("c", [])))


def test_requests_stay_under_the_largest_accepted_since_a_413_and_grow_back_slowly():
    sizes = limits()
    assert sizes.fit(PAYLOADS) == 100  # nothing learned: the batch goes whole
    sizes.refused(100, body_bytes(100), None)
    # nothing accepted yet: half the refused request, in results and in bytes
    assert sizes.fit(PAYLOADS) == fitting(body_bytes(100) // 2, 50)
    sizes.refused(30, body_bytes(30), None)
    assert sizes.fit(PAYLOADS) == fitting(body_bytes(30) // 2, 15) == 14
    for _ in range(GROW_AFTER - 1):
        sizes.accepted(14, body_bytes(14))
    assert sizes.fit(PAYLOADS) == 14
    sizes.accepted(14, body_bytes(14))
    # a tenth more after GROW_AFTER accepted in a row: 15 results, and as many bytes more
    assert sizes.fit(PAYLOADS) == fitting(body_bytes(14) + body_bytes(14) // 10, 15) == 15
    sizes.refused(15, body_bytes(15), None)
    assert sizes.fit(PAYLOADS) == 14  # back to the largest accepted since the last refusal


def test_a_413_that_named_max_results_bounds_bytes_only_and_a_lone_result_teaches_nothing():
    sizes = limits()
    sizes.refused(
        1, 5_000_000, None
    )  # one result too large: it is rejected, batches are not the matter
    assert not sizes.learned and sizes.fit(PAYLOADS) == 100
    sizes.refused(
        40, body_bytes(40), 1000
    )  # the batch kept to max_results: its bytes were too many
    assert sizes.results.limit is None and sizes.fit(PAYLOADS) == fitting(body_bytes(40) // 2)
    sizes.refused(2, 10, None)
    assert sizes.fit(PAYLOADS) == 1  # a request always carries at least one result
