"""TimerClient's exactly-once rules, fed TIMER envelopes by hand (no service, no timers
process: the client only needs a loop and a context)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.timers.helpers import fast_settings, run
from timers.client import DUE_BUCKET_S, DUE_HORIZON_S, GEN, RECENT_MAX, Fired, TimerClient

ME = f"worker.1-{os.getpid()}"


def _fire(key: str, armer: str, gen: int, payload: bytes = b"p") -> tuple[list[Any], list[bytes]]:
    return ["timers.1-1", [["f", key, "dialog", 1.0, armer, gen]]], [payload]


def _done(key: str, gen: int) -> tuple[list[Any], list[bytes]]:
    return ["timers.1-1", [["d", key, "", 0.0, ME, gen]]], [b""]


class Harness:
    def __init__(self, ctx: zmq.Context[Any], run_dir: Path) -> None:
        self.fired: list[Fired] = []
        self.client = TimerClient(ctx, fast_settings(str(run_dir)), ME, self.fired.extend)

    def gen(self, key: str) -> int:
        return self.client._armed[key][GEN]


def test_own_fire_is_delivered_once(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """An own fire is delivered while armed with that gen, then the key is forgotten; the same
    fire again (re-armed after a restart) is dropped."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        h.client.arm("k", 1.0, "dialog", b"p")
        gen = h.gen("k")
        h.client.receive(*_fire("k", ME, gen))
        h.client.receive(*_fire("k", ME, gen))
        assert [f.key for f in h.fired] == ["k"] and "k" not in h.client
        assert h.client.counters["fire_duplicate"] == 1
        h.client.close()

    run(body)


def test_stale_fires_are_dropped(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A fire for a cancelled timer, or for the arm before a refresh, delivers nothing."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        h.client.arm("a", 1.0, "dialog")
        old = h.gen("a")
        assert h.client.refresh("a", 2.0)
        h.client.receive(*_fire("a", ME, old))
        h.client.arm("b", 1.0, "dialog")
        b_gen = h.gen("b")
        assert h.client.cancel("b") is True
        h.client.receive(*_fire("b", ME, b_gen))
        assert h.fired == [] and "a" in h.client and h.client.deadline("a") == 2.0
        h.client.close()

    run(body)


def test_done_forgets_only_that_arm(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A done notice for the current gen forgets the key; one for an older gen does not."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        h.client.arm("k", 1.0, "dialog")
        old = h.gen("k")
        h.client.arm("k", 2.0, "dialog")
        h.client.receive(*_done("k", old))
        assert "k" in h.client
        h.client.receive(*_done("k", h.gen("k")))
        assert "k" not in h.client and h.fired == []
        h.client.close()

    run(body)


def test_foreign_fires_once_per_arm(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A fire of another worker's timer is delivered once per (armer, gen), with its armer,
    and not at all when this worker holds a newer arm of the key."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        h.client.receive(*_fire("x", "worker.9-9", 5))
        h.client.receive(*_fire("x", "worker.9-9", 5))
        h.client.receive(*_fire("x", "worker.9-9", 6))  # a later arm of the same key
        h.client.arm("y", 1.0, "dialog")
        h.client.receive(*_fire("y", "worker.9-9", 1))  # older than our own arm
        assert [(f.key, f.armer) for f in h.fired] == [("x", "worker.9-9")] * 2
        assert "y" in h.client
        h.client.close()

    run(body)


def test_recent_set_is_bounded(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """The memory of foreign fires holds at most RECENT_MAX entries."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        metas = [["f", f"k{i}", "t", 1.0, "worker.9-9", i] for i in range(RECENT_MAX + 10)]
        h.client.receive(["timers.1-1", metas], [b""] * len(metas))
        assert len(h.fired) == RECENT_MAX + 10 and len(h.client._recent) == RECENT_MAX
        h.client.close()

    run(body)


def test_bad_entries_are_counted_not_raised(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A meta of the wrong shape, or with a value of the wrong type (a key that is not a
    string reached the worker's dialog expiry as ``f.key.partition``), is counted and
    skipped; the rest of the batch is delivered."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        bad: list[Any] = [["f", "a"], ["f", 7, "dialog", 1.0, "w.9-9", 1],
                          ["f", "c", None, 1.0, "w.9-9", 2], ["f", "d", "t", "soon", "w.9-9", 3],
                          ["f", "e", "t", 1.0, ["w"], 4], ["f", "g", "t", 1.0, "w.9-9", "5"]]
        metas = [*bad, ["f", "b", "t", 1.0, "w.9-9", 1]]
        h.client.receive(["t", metas], [b""] * len(metas))
        assert [f.key for f in h.fired] == ["b"]
        assert h.client.counters["drop_bad_timer"] == len(bad)
        h.client.close()

    run(body)


def test_limits(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Keys, kinds and payloads over the wire limits are refused at arm time."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        for args in (("", "k", b""), ("k" * 600, "k", b""), ("k", "k" * 40, b""),
                     ("k", "k", b"x" * 2000)):  # fmt: skip
            with pytest.raises(ValueError):
                h.client.arm(args[0], 1.0, args[1], args[2])
        h.client.close()

    run(body)


def _filed(client: TimerClient) -> list[str]:
    return [k for keys in client._due.values() for k in keys]


def test_an_ended_calls_key_leaves_the_overdue_check_within_the_horizon(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Rule 7: a call armed for its early lifetime, re-armed for 12 h at its answer and
    cancelled at its BYE holds one slot, let go of once the horizon's bucket comes up; a key
    still armed 12 h ahead is filed again at each horizon until its deadline, where it is
    found overdue."""

    async def body() -> None:
        h = Harness(ctx, tmp_path)
        c = h.client
        now = time.monotonic()
        c.arm("ended", now + 300, "dialog")
        c.arm("ended", now + 43_200, "dialog")  # later: keeps its slot
        c.cancel("ended")
        c.arm("long", now + 43_200, "dialog")
        assert sorted(_filed(c)) == ["ended", "long"]
        t = now + DUE_HORIZON_S + c.overdue_s + 2 * DUE_BUCKET_S
        c._check_overdue(t)
        assert _filed(c) == ["long"]  # the ended call's key is gone, 12 h before its deadline
        while t < now + 43_200 - DUE_HORIZON_S:  # a heartbeat at most a horizon apart
            t += DUE_HORIZON_S
            c._check_overdue(t)
            assert _filed(c) == ["long"] and "long" in c
        c._check_overdue(now + 43_200 + c.overdue_s + 2 * DUE_BUCKET_S)
        assert _filed(c) == ["long"]  # overdue: re-sent (no shard here) and filed again
        c.close()

    run(body)
