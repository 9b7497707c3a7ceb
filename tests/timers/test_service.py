"""The timer service and its clients in one loop, over real ipc:// sockets (no subprocess)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from conf.workerset import WorkerSet
from tests.timers.helpers import TestWorker, fast_settings, run, until
from timers import wire
from timers.service import TimerService


def _service(ctx: zmq.Context[Any], run_dir: Path, n: int = 1) -> TimerService:
    return TimerService(ctx, fast_settings(str(run_dir)), f"timers.{n}-{os.getpid()}")


async def _ready(workers: list[TestWorker], services: list[TimerService]) -> None:
    """Every client sees every service, and every service hears every worker."""
    await until(lambda: all(len(w.timers.shards) == len(services) for w in workers))
    await until(lambda: all(len(s.workers) == len(workers) for s in services))


def _owner(key: str, workers: list[TestWorker]) -> str:
    ws = WorkerSet(1.0, 1)
    for w in workers:
        ws.heartbeat(w.ident, "", True, 0.0)
    owner = ws.owner(wire.owner_key(key))
    assert owner is not None
    return owner


def test_fires_once_after_deadline_cancel_and_refresh(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """An armed timer fires once, not before its deadline; a cancelled one never; a refreshed
    one at its new deadline only."""

    async def body() -> None:
        svc = _service(ctx, tmp_path)
        w = TestWorker(ctx, fast_settings(str(tmp_path)), "worker.1")
        await _ready([w], [svc])
        now = time.monotonic()
        w.timers.arm("a", now + 0.10, "dialog", b"pa")
        w.timers.arm("b", now + 0.10, "dialog")
        w.timers.arm("c", now + 0.05, "reg")
        assert w.timers.cancel("b") is True
        assert w.timers.refresh("c", now + 0.20)
        await until(lambda: len(w.fired) == 2)
        await w.markers_fired(after=now + 0.20)  # b, or c at its first deadline, came before
        assert w.counts() == Counter({"a": 1, "c": 1})
        for f, at in w.fired:
            assert at >= f.deadline and f.armer == w.ident
        assert [f.key for f, _ in w.fired] == ["a", "c"]
        assert w.fired[0][0].payload == b"pa" and len(w.timers) == 0 and len(svc.schedule) == 0
        w.close()
        svc.close()

    run(body)


def test_fires_go_to_the_armer_while_it_lives(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Rule 3: timers fire to the worker that armed them while it is alive, whoever owns
    their keys: it holds the dialogs (a call the ingress sent it before it heard the owner
    stays with it; the owner would have no dialog to end)."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = _service(ctx, tmp_path)
        w1, w2 = TestWorker(ctx, settings, "worker.1"), TestWorker(ctx, settings, "worker.2")
        await _ready([w1, w2], [svc])
        deadline = time.monotonic() + 0.1
        keys = [f"dlg-{i}@host\0tag-{i}" for i in range(100)]
        assert {_owner(k, [w1, w2]) for k in keys} == {w1.ident, w2.ident}  # both own some
        for k in keys:
            w1.timers.arm(k, deadline, "dialog")
        await until(lambda: len(w1.fired) == len(keys))
        assert w2.fired == [] and len(w1.timers) == 0
        assert w1.counts() == Counter(keys)
        w1.close()
        w2.close()
        svc.close()

    run(body)


def test_a_dead_armers_timers_fire_to_the_keys_owners(ctx: zmq.Context[Any],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """Rule 3: once the armer has said ``down``, its timers fire to whichever live worker
    owns each key now (a dialog's key, Call-ID NUL From-tag, to the Call-ID's owner)."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = _service(ctx, tmp_path)
        w1, w2, w3 = (TestWorker(ctx, settings, f"worker.{i}") for i in (1, 2, 3))
        await _ready([w1, w2, w3], [svc])
        keys = [f"call-{i}@host" for i in range(100)]
        keys += [f"dlg-{i}@host\0tag-{i}" for i in range(100)]
        deadline = time.monotonic() + 0.5
        for k in keys:
            w1.timers.arm(k, deadline, "dialog")
        await until(lambda: len(svc.schedule) == len(keys))
        w1.close()  # says down: not alive for the service any more
        await until(lambda: len(w2.fired) + len(w3.fired) == len(keys))
        for w in (w2, w3):
            for f, _ in w.fired:
                assert _owner(f.key, [w2, w3]) == w.ident and f.armer == w1.ident
                assert _owner(f.key.partition("\0")[0], [w2, w3]) == w.ident
        assert w2.counts() + w3.counts() == Counter(keys)
        assert 0 < len(w2.fired) < len(keys)
        w2.close()
        w3.close()
        svc.close()

    run(body)


def test_a_newer_arm_by_another_worker_wins(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Two workers arm one key: the later arm holds it, the first armer is told to forget."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = _service(ctx, tmp_path)
        w1, w2 = TestWorker(ctx, settings, "worker.1"), TestWorker(ctx, settings, "worker.2")
        await _ready([w1, w2], [svc])
        now = time.monotonic()
        w1.timers.arm("k", now + 5.0, "dialog", b"first")
        await until(lambda: "k" in svc.schedule)
        w2.timers.arm("k", now + 0.05, "dialog", b"second")
        await until(lambda: len(w1.fired) + len(w2.fired) == 1 and "k" not in w1.timers)
        (f, _), = w1.fired + w2.fired
        assert f.payload == b"second" and f.armer == w2.ident
        w1.close()
        w2.close()
        svc.close()

    run(body)


def test_shards_split_keys_and_survive_one_leaving(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Two timers processes share the keys; when one stops, its timers move to the other and
    every timer still fires exactly once."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        s1, s2 = _service(ctx, tmp_path, 1), _service(ctx, tmp_path, 2)
        w = TestWorker(ctx, settings, "worker.1")
        await _ready([w], [s1, s2])
        now = time.monotonic()
        keys = [f"k{i}" for i in range(1000)]
        for i, k in enumerate(keys):
            w.timers.arm(k, now + 0.3 + i / 2000, "ttl")
        await until(lambda: len(s1.schedule) + len(s2.schedule) == len(keys))
        assert len(s1.schedule) > 100 and len(s2.schedule) > 100
        s2.close()  # its socket file goes: the client moves its keys to s1
        await until(lambda: len(s1.schedule) + len(w.fired) >= len(keys))
        await until(lambda: len(w.fired) == len(keys))
        assert w.counts() == Counter(keys)
        assert all(at >= f.deadline for f, at in w.fired)
        w.close()
        s1.close()

    run(body)


def test_timers_wait_for_a_worker(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """With no live worker a due timer waits, and fires when a worker joins."""

    async def body() -> None:
        settings = fast_settings(str(tmp_path))
        svc = _service(ctx, tmp_path)
        w = TestWorker(ctx, settings, "worker.1")
        await _ready([w], [svc])
        # due once the worker is gone: its op sent now, not [timers] ops_flush_ms later
        w.timers.arm("late", time.monotonic() + 0.5, "ttl")
        w.timers.flush()
        await until(lambda: "late" in svc.schedule)
        w.close()  # says "down": nobody to fire to
        await until(lambda: len(svc.workers) == 0)
        due = w.timers.deadline("late")
        assert due is not None
        await until(lambda: time.monotonic() > due + 0.05)
        assert "late" in svc.schedule
        w2 = TestWorker(ctx, settings, "worker.2")
        await until(lambda: len(w2.fired) == 1)
        assert w2.fired[0][0].armer == w.ident
        w2.close()
        svc.close()

    run(body)


def test_overload_widens_batches_and_says_so(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """More due at once than a batch holds: wake-ups overrun (the rest fire on the next
    iteration, none lost), and the policy widens the batch and logs one timers_adapted."""
    from dataclasses import replace

    from structlog.testing import capture_logs

    from conf.settings import Timers

    async def body() -> None:
        settings = replace(fast_settings(str(tmp_path)),
                           timers=Timers(max_batch=10, max_batch_cap=40, max_coalesce_ms=4.0))
        svc = TimerService(ctx, settings, f"timers.1-{os.getpid()}")
        w = TestWorker(ctx, settings, "worker.1")
        await _ready([w], [svc])
        deadline = time.monotonic() + 0.05
        for i in range(500):
            w.timers.arm(f"k{i}", deadline, "ttl")
        await until(lambda: len(w.fired) == 500)
        assert svc.overruns >= 500 // 10 - 1
        with capture_logs() as logs:
            svc.adapt()
            svc.adapt()  # nothing new in this window: no second event
        adapted = [e for e in logs if e["event"] == "timers_adapted"]
        assert len(adapted) == 1 and adapted[0]["reason"] == "overrun"
        assert (svc.policy.max_batch, svc.policy.coalesce_s) == (20, 0.001)
        assert w.counts() == Counter(f"k{i}" for i in range(500))
        stats = svc.stats(1.0)
        assert stats["fired"] == 500 and stats["late_max_ms"] >= stats["late_p99_ms"] > 0
        w.close()
        svc.close()

    run(body)


def test_bad_input_is_counted_and_dropped(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Garbage, and ops of the wrong types, are counted and dropped; the service goes on."""
    from conf import envelope, sockets

    async def body() -> None:
        svc = _service(ctx, tmp_path)
        push = sockets.connect_push(ctx, svc.endpoint, 10)
        push.send_multipart([b"junk", b"\xc1"])
        bad = [["k", "soon", "t", b"", 1], "nope"]
        good = [["ok", time.monotonic() + 60, "t", b"", 1]]
        push.send_multipart(envelope.pack(envelope.KIND_TOPS, ["w", 1, False, bad + good, [7]]))
        push.send_multipart(envelope.pack(envelope.KIND_TOPS, ["w", "x", False, good, []]))
        await until(lambda: svc.meter.counters["drop_bad_op"] == 4)
        assert svc.meter.counters["drop_bad_envelope"] == 1
        assert [t.key for t in svc.schedule.timers()] == ["ok"]
        push.close(linger=0)
        svc.close()

    run(body)
