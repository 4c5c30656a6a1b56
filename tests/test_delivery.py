"""The delivery loop's hand-off: rows stored already leased to this run skip the claim.

Pure loop logic over the SQLite buffer, in dry-run mode (no client: every batch is answered
accepted at once); delivery over real HTTP is proven in test_delivery_e2e.py and tests/reliability/.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from scrapy.settings import Settings

from scrapy_sdi.buffer import DELIVERED, IN_FLIGHT, PENDING, Row, SQLiteBuffer
from scrapy_sdi.delivery import Delivery
from scrapy_sdi.settings import SDISettings


@pytest.fixture
def buffer(tmp_path):
    b = SQLiteBuffer(tmp_path / "b.db")
    yield b
    b.close()


def delivery(buffer) -> Delivery:
    settings = SDISettings.from_settings(
        Settings({"SDI_BATCH_SIZE": 10, "SDI_CONCURRENT_REQUESTS": 2, "SDI_DRY_RUN": True}),
        "c", environ={}, dotenv_path=None, require_api=False,
    )
    return Delivery(buffer, None, settings)


def rows(n: int, start: int = 0) -> list[Row]:
    return [Row(f"id{i}", "c", f"https://e.x/{i}", b'{"id": "id%d"}' % i) for i in range(start, start + n)]


def commit(d: Delivery, buffer: SQLiteBuffer, group: list[Row]) -> list[Row]:
    """What the group writer does: ask for a lease, store, tell delivery what it was handed."""
    buffer.enqueue(group, True, d.lease(len(group)))
    d.wake(len(group), [r for r in group if r.state == IN_FLIGHT])
    return [r for r in group if r.state == IN_FLIGHT]


@pytest_twisted.ensureDeferred
async def test_while_delivery_keeps_up_rows_are_sent_from_memory_as_many_as_fit_in_flight(buffer):
    d = delivery(buffer)
    d.start()
    handed = commit(d, buffer, rows(25))
    assert len(handed) == 20  # SDI_CONCURRENT_REQUESTS x SDI_BATCH_SIZE
    # two full batches went at once (answered at once in a dry run); five rows wait, pending
    assert buffer.counts("c")[DELIVERED] == 20 and buffer.counts("c")[PENDING] == 5
    # older rows wait in the buffer: new ones queue behind them instead of skipping the claim
    assert d.lease(10) is None
    assert await d.drain(5) == 0
    assert buffer.counts("c")[DELIVERED] == 25
    assert d.lease(10) is not None  # caught up: the next rows may skip the claim again
    await d.stop()


@pytest_twisted.ensureDeferred
async def test_rows_held_in_memory_go_back_to_the_buffer_when_delivery_stops(buffer):
    d = delivery(buffer)
    d.start()
    assert len(commit(d, buffer, rows(4))) == 4  # fewer than a batch: held for LINGER
    assert buffer.counts("c")[IN_FLIGHT] == 4
    await d.stop()
    assert buffer.counts("c")[PENDING] == 4  # the next run claims them at once, not after the lease
    assert d.lease(1) is None  # a stopped loop hands nothing over
    assert [(c.id, c.attempts) for c in buffer.claim("c", "next", 10, 60)] == [(f"id{i}", 1) for i in range(4)]
