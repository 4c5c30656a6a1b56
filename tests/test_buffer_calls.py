"""BufferCalls: inline for a fast buffer, one worker thread in order for a blocking one, results on
the loop thread, under the asyncio reactor (the suite's), the plain Twisted reactor and no reactor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import pytest_twisted
from twisted.internet import defer

from scrapy_sdi.buffer import BufferFault, BufferFileError, BufferLocked, MemoryBuffer, Row
from scrapy_sdi.buffer_calls import BufferCalls
from tests.support.buffers import BlockingSQLiteBuffer, StallingBuffer
from tests.support.crawl import ROOT


def row(i: int) -> Row:
    return Row(f"id{i}", "c", f"https://e.x/{i}", b"{}")


def test_a_fast_buffer_is_called_inline_and_answers_with_a_fired_deferred():
    buffer = MemoryBuffer()
    calls = BufferCalls(buffer)
    threads = []

    def enqueue(rows, dedup):
        threads.append(threading.current_thread())
        return buffer.enqueue(rows, dedup)

    d = calls.call(enqueue, [row(1)], True)
    assert d.called and threads == [threading.current_thread()]
    assert list(d.result) == [True]
    assert buffer.counts("c")["pending"] == 1
    d.addCallback(lambda _: None)


def test_a_fast_buffer_s_error_is_a_failed_deferred_not_a_raise():
    def locked():
        raise BufferLocked("held by another process")

    d = BufferCalls(MemoryBuffer()).call(locked)
    assert d.called
    failures = []
    d.addErrback(failures.append)
    assert failures[0].check(BufferLocked)


@pytest_twisted.ensureDeferred
async def test_a_blocking_buffer_runs_on_one_thread_in_order_and_answers_on_the_loop_thread():
    buffer = StallingBuffer()
    calls = BufferCalls(buffer)
    loop_thread = threading.current_thread()
    arrived: list[tuple[int, threading.Thread]] = []

    buffer.stall()
    pending = [
        calls.call(buffer.enqueue, [row(i)], True).addCallback(
            lambda stored, i=i: arrived.append((i, threading.current_thread())) or stored
        )
        for i in range(20)
    ]
    assert buffer.stalled.wait(5)  # the first call is held on the worker thread...
    assert not any(d.called for d in pending)  # ...and the loop thread goes on
    assert buffer.calls == 1  # the others wait their turn: one call at a time
    buffer.resume()
    stored = await defer.gatherResults(pending)
    assert stored == [[True]] * 20
    assert [i for i, _ in arrived] == list(range(20))
    assert {thread for _, thread in arrived} == {loop_thread}
    assert len(set(buffer.threads)) == 1 and buffer.threads[0] != loop_thread.name
    assert [r["id"] for r in buffer.export("pending", "c")] == [f"id{i}" for i in range(20)]
    await calls.close()


class _SideAcks(StallingBuffer):
    """Its acks run on BufferCalls' second thread; an ack can be held apart from the others."""

    side_lane = frozenset({"ack"})

    def __init__(self) -> None:
        super().__init__()
        self.ack_go = threading.Event()
        self.ack_go.set()
        self.ack_threads: list[str] = []

    def ack(self, delivered, rejected):
        self.ack_threads.append(threading.current_thread().name)
        self.ack_go.wait(10)
        return super().ack(delivered, rejected)


@pytest_twisted.ensureDeferred
async def test_a_buffer_s_side_lane_calls_never_hold_up_the_others_and_close_waits_for_them():
    buffer = _SideAcks()
    calls = BufferCalls(buffer)
    await calls.call(buffer.enqueue, [row(0)], True)
    buffer.ack_go.clear()
    acked = calls.call(buffer.ack, {"id0": "accepted"}, {})
    # stored while the ack is held: enqueue does not queue behind it
    assert await calls.call(buffer.enqueue, [row(1)], True) == [True]
    assert not acked.called
    closed = calls.close()
    assert not closed.called and buffer.closed_on is None
    buffer.ack_go.set()
    await acked
    await closed
    assert buffer.ack_threads == ["scrapy_sdi-buffer-side"]
    assert set(buffer.threads) == {"scrapy_sdi-buffer"}
    assert buffer.closed_on == "scrapy_sdi-buffer"
    assert buffer.counts("c")["delivered"] == 1


def test_sqlite_and_memory_buffers_have_no_side_lane():
    from scrapy_sdi.buffer import SQLiteBuffer

    assert SQLiteBuffer.side_lane == MemoryBuffer.side_lane == frozenset()


@pytest_twisted.ensureDeferred
async def test_a_blocking_buffer_s_error_arrives_as_a_failure_and_later_calls_still_run():
    buffer = StallingBuffer()
    calls = BufferCalls(buffer)

    def locked():
        raise BufferLocked("held by another process")

    with pytest.raises(BufferLocked):
        await calls.call(locked)
    assert await calls.call(buffer.counts, "c") == buffer.counts("c")
    await calls.close()


@pytest_twisted.ensureDeferred
async def test_close_runs_the_calls_made_before_it_then_closes_on_the_worker_and_refuses_more():
    buffer = StallingBuffer()
    calls = BufferCalls(buffer)
    buffer.stall()
    writes = [calls.call(buffer.enqueue, [row(i)], True) for i in range(3)]
    closed = calls.close()
    assert not closed.called
    buffer.resume()
    await closed
    assert all(d.called for d in writes)
    assert buffer.closed_on is not None and buffer.closed_on == buffer.threads[0]
    with pytest.raises(BufferFault, match="is closed"):
        await calls.call(buffer.counts)
    assert calls.thread is not None
    calls.thread.join(5)
    assert not calls.thread.is_alive()


def test_closing_a_fast_buffer_closes_it_inline():
    buffer = StallingBuffer()
    buffer.blocking = False
    d = BufferCalls(buffer).close()
    assert d.called and buffer.closed_on == threading.current_thread().name


@pytest.mark.parametrize("mode", ["default", "none"])
def test_results_come_back_on_the_loop_thread_on_a_plain_twisted_reactor_and_without_one(mode):
    """In a process of its own: the suite runs on the asyncio reactor, and a reactor once
    installed cannot be taken away."""
    script = textwrap.dedent(
        """
        import threading
        from twisted.internet import defer
        from scrapy_sdi.buffer_calls import BufferCalls
        from tests.support.buffers import BlockingSQLiteBuffer, StallingBuffer

        async def main():
            buffer = StallingBuffer()
            calls = BufferCalls(buffer)
            loop = threading.current_thread()
            seen = []
            ds = [calls.call(buffer.counts, "c").addCallback(
                lambda r: seen.append(threading.current_thread()) or r) for _ in range(3)]
            results = [await d for d in ds]
            await calls.close()
            assert seen == [loop] * 3, seen
            assert buffer.threads[0] != loop.name
            print("OK", results[0]["pending"])
        """
    )
    if mode == "default":
        script += textwrap.dedent(
            """
            from twisted.internet import reactor, task
            task.react(lambda _: defer.ensureDeferred(main()))
            """
        )
    else:
        script += textwrap.dedent(
            """
            import asyncio, sys
            async def run():
                await defer.Deferred.fromCoroutine(main()).asFuture(asyncio.get_running_loop())
            asyncio.run(run())
            assert "twisted.internet.reactor" not in sys.modules
            """
        )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "OK 0"


@pytest_twisted.ensureDeferred
async def test_a_blocking_buffer_is_opened_on_the_thread_its_calls_run_on(tmp_path):
    opened_on = []

    def factory():
        opened_on.append(threading.current_thread().name)
        return BlockingSQLiteBuffer(tmp_path / "b.db")

    calls = await BufferCalls.open(factory, blocking=True)
    assert opened_on[0] != threading.current_thread().name
    assert list(await calls.call(calls.buffer.enqueue, [row(1)], True)) == [True]
    assert calls.thread is not None and calls.thread.name == opened_on[0]
    await calls.close()


@pytest_twisted.ensureDeferred
async def test_a_buffer_that_cannot_be_opened_fails_the_open_and_its_thread_ends(tmp_path):
    (tmp_path / "b.db").write_bytes(b"not a database, only some text" * 100)
    threads = []

    def factory():
        threads.append(threading.current_thread())
        return BlockingSQLiteBuffer(tmp_path / "b.db")

    with pytest.raises(BufferFileError, match="cannot be used"):
        await BufferCalls.open(factory, blocking=True)
    threads[0].join(5)
    assert not threads[0].is_alive()


def test_a_fast_buffer_is_opened_inline(tmp_path):
    d = BufferCalls.open(lambda: MemoryBuffer(), blocking=False)
    assert d.called and isinstance(d.result.buffer, MemoryBuffer)
    d.addCallback(lambda _: None)
