"""A worker's arms never overtake its announcement to a timers process (timers/client.py
rule 6): the lost-BYE race of ``-c timers=2``, reproduced in one loop over real ipc://
sockets, and the order of what a client sends a timers process it finds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import zmq

from conf import envelope, sockets
from conf.settings import Timers
from conf.workerset import WorkerSet
from tests.timers.helpers import TestWorker, fast_settings, run, until
from timers import wire
from timers.client import Fired, TimerClient
from timers.service import TimerService


def _owned_by(ident: str, idents: list[str], n: int) -> list[str]:
    """``n`` dialog keys whose Call-IDs ``ident`` owns among ``idents``."""
    ws = WorkerSet.fixed({i: "" for i in idents})
    keys = (f"call-{i}@host\0tag-{i}" for i in range(100_000))
    return [k for k in keys if ws.owner(wire.owner_key(k)) == ident][:n]


def test_arms_of_a_worker_not_yet_heard_fire_to_it(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A timers process has heard worker.1 but not yet worker.2, whose client has found it and
    sends its arms. Every timer fires to worker.2, which armed it and owns its Call-ID.

    Before rule 6 the worker's bus announced it from a scan and a socket of its own: the arms
    got there first, the service fired them to worker.1 (its only live worker, so the owner),
    which held no such dialog, and sent the "done" notice nowhere: worker.2 kept them armed
    forever and its calls never got their BYE."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = TimerService(ctx, settings, f"timers.1-{os.getpid()}")
        w1 = TestWorker(ctx, settings, "worker.1")
        w2 = TestWorker(ctx, settings, "worker.2", bus_beats=False)
        await until(lambda: w1.ident in svc.workers and w2.timers.shards == [svc.ident])
        keys = _owned_by(w2.ident, [w1.ident, w2.ident], 20)
        deadline = time.monotonic() + 0.1
        for k in keys:
            w2.timers.arm(k, deadline, "dialog")
        await until(lambda: len(w1.fired) + len(w2.fired) == len(keys))
        assert [f.key for f, _ in w1.fired] == [], "fired to a worker without the calls"
        assert sorted(f.key for f, _ in w2.fired) == sorted(keys) and len(w2.timers) == 0
        assert all(at >= f.deadline for f, at in w2.fired)
        w1.close()
        w2.close()
        svc.close()

    run(body)


def drain(pull: zmq.Socket[Any], got: list[envelope.Envelope]) -> bool:
    """Append what ``pull`` holds to ``got``; False, so ``until(lambda: drain(...) or ...)``
    reads before each check."""
    while True:
        try:
            got.append(envelope.unpack(pull.recv_multipart(zmq.NOBLOCK)))
        except zmq.Again:
            return False


def test_heartbeat_leads_the_ops_and_down_ends_them(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """What a timers process reads from a client, in order: a heartbeat before the first op
    (even ops armed before the process was found), the ops, and ``down`` after the last."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        me = f"worker.1-{os.getpid()}"
        fired: list[Fired] = []
        client = TimerClient(ctx, settings, me, fired.extend)
        client.arm("early", time.monotonic() + 60, "ttl")  # no shard yet: held, sent later
        pull = sockets.bind_pull(ctx, sockets.endpoint(str(tmp_path), "timers",
                                                       f"timers.1-{os.getpid()}"), 100)  # fmt: skip
        got: list[envelope.Envelope] = []

        def read() -> bool:
            return drain(pull, got)

        await until(lambda: read() or any(e.kind == envelope.KIND_TOPS for e in got))
        client.arm("late", time.monotonic() + 60, "ttl")
        await until(lambda: read() or sum(e.kind == envelope.KIND_TOPS for e in got) == 2)
        client.close()
        await until(lambda: read() or got[-1].header[-1] == "down")
        kinds = [e.kind for e in got]
        assert kinds[0] == envelope.KIND_HB and got[0].header == [
            me, sockets.endpoint(str(tmp_path), "worker", me), "up"]
        ops = [e.header[3][0][0] for e in got if e.kind == envelope.KIND_TOPS]
        assert ops == ["early", "late"]
        assert [e.header[2] for e in got if e.kind == envelope.KIND_HB][-1] == "down"
        assert got[-1].kind == envelope.KIND_HB and kinds.count(envelope.KIND_TOPS) == 2
        pull.close(linger=0)

    run(body)


def test_ops_of_several_loop_turns_leave_together(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """``[timers] ops_flush_ms`` (rule 5): the ops made over several loop turns within it
    leave in one message, an arm then a cancel of one key as the cancel; nothing leaves
    before the wait is over; ``close`` sends what still waits, before ``down``."""

    async def body() -> None:
        settings = dataclasses.replace(fast_settings(str(tmp_path)),
                                       timers=Timers(ops_flush_ms=100))  # fmt: skip
        client = TimerClient(ctx, settings, f"worker.1-{os.getpid()}", [].extend)
        pull = sockets.bind_pull(ctx, sockets.endpoint(str(tmp_path), "timers",
                                                       f"timers.1-{os.getpid()}"), 100)  # fmt: skip
        got: list[envelope.Envelope] = []

        def read() -> bool:
            return drain(pull, got)

        def tops() -> list[envelope.Envelope]:
            return [e for e in got if e.kind == envelope.KIND_TOPS]

        await until(lambda: read() or client.shards != [])
        far = time.monotonic() + 60
        # the loop's clock, read just before the arm: uvloop's timers count from its cached
        # time, which reading it refreshes; time.monotonic() here could be later than that
        # base by a descheduling of the test, and the flush then seemed early
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        client.arm("a", far, "dialog")
        for _ in range(3):
            await asyncio.sleep(0)  # other loop turns
        client.arm("b", far, "dialog")
        client.cancel("a")
        await until(lambda: read() or len(tops()) == 1)
        assert loop.time() - t0 >= 0.099  # the loop's clock counts whole milliseconds
        header = tops()[0].header
        assert [a[0] for a in header[3]] == ["b"] and [c[0] for c in header[4]] == ["a"]
        client.arm("c", far, "dialog")
        client.close()  # before its wait is over
        await until(lambda: read() or got[-1].header[-1] == "down")
        assert [a[0] for a in tops()[1].header[3]] == ["c"] and len(tops()) == 2
        pull.close(linger=0)

    run(body)


def test_a_worker_taken_for_dead_still_gets_its_timers(ctx: zmq.Context[Any],
                                                       tmp_path: Path) -> None:  # fmt: skip
    """worker.2 stalls past the service's liveness while its timers fall due: the service drops
    it and fires them to worker.1, which holds no such calls, and the "done" notices have no
    pipe to go to. When worker.2 runs again its client finds them still armed past
    ``overdue_s`` and sends them again (rule 7): each reaches worker.2, and worker.1 is not
    handed any a second time. Without rule 7 worker.2 would hold them forever."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = TimerService(ctx, settings, f"timers.1-{os.getpid()}")
        w1 = TestWorker(ctx, settings, "worker.1")
        w2 = TestWorker(ctx, settings, "worker.2")
        await until(lambda: len(svc.workers) == 2 and w2.timers.shards == [svc.ident])
        keys = _owned_by(w2.ident, [w1.ident, w2.ident], 20)
        deadline = time.monotonic() + 0.3
        for k in keys:
            w2.timers.arm(k, deadline, "dialog")
        await until(lambda: all(k in svc.schedule for k in keys))
        tick = w2.timers._tick_handle
        assert tick is not None
        tick.cancel()  # the stall: no heartbeat from worker.2's client from now on
        def expired() -> bool:  # what `sipline timers` runs every heartbeat interval
            svc.expire_workers()
            return w2.ident not in svc.workers

        await until(expired)
        await until(lambda: len(w1.fired) == len(keys))  # misdelivered, as the service must
        assert w2.fired == [] and len(w2.timers) == len(keys)
        w2.timers._tick()  # worker.2 runs again
        end = time.monotonic() + 2 * w2.timers.overdue_s + 2.0
        await until(lambda: len(w2.fired) == len(keys) or time.monotonic() > end)
        assert sorted(f.key for f, _ in w2.fired) == sorted(keys), "lost with the stall"
        assert len(w2.timers) == 0 and w2.timers.counters["resent_overdue"] >= len(keys)
        assert sorted(f.key for f, _ in w1.fired) == sorted(keys)  # each once, not again
        w1.close()
        w2.close()
        svc.close()

    run(body)
