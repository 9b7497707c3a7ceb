"""conf/guard.py: no exception ends a process. Real loops (uvloop), real sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
import zmq
from structlog.testing import capture_logs

from conf import process
from conf.guard import GUARD, Guard, Throttle
from ingress.udp import open_udp


def run(fn: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(5):
            await fn()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded())


async def until(pred: Callable[[], bool]) -> None:
    while not pred():
        await asyncio.sleep(0.002)


class TestThrottle:
    def test_once_per_interval_with_the_count_between(self) -> None:
        """A key logs at once, then is swallowed within the interval; the next line carries
        how many were swallowed."""
        now = [0.0]
        t = Throttle(10.0, clock=lambda: now[0])
        assert t.hit("a") == 0
        assert [t.hit("a") for _ in range(5)] == [None] * 5
        assert t.hit("b") == 0  # kinds are separate
        now[0] = 10.0
        assert t.hit("a") == 5
        assert t.hit("a") is None

    def test_keys_are_bounded(self) -> None:
        """Past ``max_keys`` new keys share one slot: a flood of kinds logs once."""
        t = Throttle(10.0, max_keys=2, clock=lambda: 0.0)
        assert t.hit("a") == 0 and t.hit("b") == 0
        assert t.hit("c") == 0
        assert t.hit("d") is None


def test_report_counts_every_one_and_logs_once_per_kind() -> None:
    """1 000 exceptions of one kind: all counted, one log line with its traceback."""
    g = Guard()
    with capture_logs() as logs:
        for _ in range(1000):
            try:
                raise OSError(28, "No space left on device")
            except OSError as exc:
                g.report("journal", exc)
    assert g.counts == {"journal:OSError": 1000}
    assert [e["event"] for e in logs] == ["exception_caught"]
    assert logs[0]["kind"] == "journal:OSError" and logs[0]["exc_info"] is not None


def test_periodic_function_that_raises_keeps_being_called() -> None:
    """``process.every`` reports what its function raises and keeps the schedule; the task
    ends only when ``stop`` is set."""
    calls = [0]

    def tick() -> None:
        calls[0] += 1
        raise OSError(24, "Too many open files")

    before = GUARD.counts[f"every:{tick.__qualname__}:OSError"]

    async def body() -> None:
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(process.every(0.005, stop, tick))
        await until(lambda: calls[0] >= 5)
        assert not task.done()
        stop.set()
        await task  # no exception escapes

    with capture_logs() as logs:
        run(body)
    assert GUARD.counts[f"every:{tick.__qualname__}:OSError"] - before == calls[0]
    assert sum(1 for e in logs if e["event"] == "exception_caught") <= 1


def test_zmq_reader_that_raises_keeps_reading() -> None:
    """A reader that raises part way through its queue runs again (the ZeroMQ FD is
    edge-triggered: no new edge would come for what is already queued)."""
    g = Guard()
    got: list[bytes] = []

    async def body() -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        pull.bind("inproc://guard")
        push.connect("inproc://guard")
        loop = asyncio.get_running_loop()

        def drain() -> None:
            while True:
                try:
                    frame = pull.recv(zmq.NOBLOCK)
                except zmq.Again:
                    return
                if frame == b"boom":
                    raise ValueError("poison")
                got.append(frame)

        reader = g.add_reader(loop, pull.FD, "test_reader", drain)
        for frame in (b"a", b"boom", b"b", b"c"):
            push.send(frame)
        await until(lambda: len(got) == 3)
        reader.remove()  # and its re-run, if one is still pending
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()

    run(body)
    assert got == [b"a", b"b", b"c"]
    assert g.counts == {"test_reader:ValueError": 1}


def test_udp_handler_that_raises_leaves_the_listener_reading() -> None:
    """With the guard as the loop's exception handler, a datagram handler that raises is
    counted and the listener reads the next datagram."""
    seen: list[bytes] = []
    g = Guard()

    def on_datagram(_: object, data: bytes, addr: Any) -> None:
        seen.append(data)
        raise KeyError("bug")

    async def body() -> None:
        g.install(asyncio.get_running_loop())
        lst = await open_udp("127.0.0.1", 0, on_datagram)
        assert lst.transport is not None
        port = lst.transport.get_extra_info("sockname")[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3):
                s.sendto(b"d%d" % i, ("127.0.0.1", port))
                await until(lambda n=i + 1: len(seen) == n)  # type: ignore[misc]
        lst.close()

    run(body)
    assert seen == [b"d0", b"d1", b"d2"]
    assert sum(g.counts.values()) == 3


def test_guarded_callback_reports_instead_of_raising() -> None:
    """``guarded`` swallows an Exception (reported), never a BaseException."""
    g = Guard()

    def bug(x: int) -> None:
        raise ZeroDivisionError(x)

    g.guarded("tcp_message", bug)(1)
    assert g.counts == {"tcp_message:ZeroDivisionError": 1}

    def exit_() -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        g.guarded("x", exit_)()
