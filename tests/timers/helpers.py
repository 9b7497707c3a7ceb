"""A test-side worker for the timer service: a real worker bus (PULL + heartbeats) and a
TimerClient, recording what fires, in one uvloop loop bounded in time."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import zmq

from conf.loadstats import LoadMeter
from conf.settings import Bus, Log, Node, Settings
from tests import aio
from timers.client import Fired, TimerClient
from workers.bus import IngressBus

#: heartbeats 10x faster than the default, so joins and moves take tens of ms
FAST_BUS = Bus(heartbeat_ms=25, liveness=4)


def fast_settings(run_dir: str) -> Settings:
    return Settings(node=Node(run_dir=run_dir), bus=FAST_BUS, log=Log(stats_interval_s=0.5))


def run(fn: Callable[[], Awaitable[None]], timeout_s: float = 10.0) -> None:
    """``tests.aio.run`` with this package's bound: services, workers and their heartbeats
    meeting on a busy box get twice the default."""
    aio.run(fn, timeout_s)


async def until(predicate: Callable[[], bool], step_s: float = 0.005) -> None:
    """Let the loop run until ``predicate`` holds (the test's timeout bounds it)."""
    while not predicate():
        await asyncio.sleep(step_s)


class TestWorker:
    """What a worker process does for timers: bus, heartbeats, client; fires are recorded
    with the monotonic time they were delivered."""

    __test__ = False  # not a pytest class

    def __init__(self, ctx: zmq.Context[Any], settings: Settings, name: str,
                 bus_beats: bool = True) -> None:  # fmt: skip
        """``bus_beats=False``: the worker's bus never runs its heartbeat (in a worker it runs
        on a timer of its own, independent of the timer client's scans)."""
        self.ident = f"{name}-{os.getpid()}"
        self.fired: list[tuple[Fired, float]] = []
        self.timers = TimerClient(ctx, settings, self.ident, self._on_fire)
        self.bus = IngressBus(ctx, settings.bus, settings.node.run_dir, self.ident,
                              lambda *_: None, LoadMeter(0), on_timer=self.timers.receive)
        loop = asyncio.get_running_loop()
        self._beat = loop.call_soon(self._heartbeat, settings.bus) if bus_beats else None

    def _heartbeat(self, bus: Bus) -> None:
        self.bus.heartbeat()
        self._beat = asyncio.get_running_loop().call_later(bus.heartbeat_ms / 1000,
                                                          self._heartbeat, bus)

    def _on_fire(self, batch: list[Fired]) -> None:
        now = time.monotonic()
        self.fired.extend((f, now) for f in batch)

    def counts(self) -> Counter[str]:
        return Counter(f.key for f, _ in self.fired)

    async def markers_fired(self, after: float) -> None:
        """Arm a marker timer on every shard, due just ``after`` (the last deadline the test
        armed), wait until they all fired, and forget them. A shard fires in deadline order,
        so anything due earlier that it still held (a duplicate, a timer that should have
        been cancelled) came first: the event that tells "never" from "not yet"."""
        markers: dict[str, str] = {}
        for i in range(1000):  # rendezvous hashing: a few keys cover every shard
            key = f"marker-{i}"
            markers.setdefault(self.timers._ring.owner(key.encode()) or "", key)
            if set(markers) >= set(self.timers.shards):
                break
        for key in markers.values():
            self.timers.arm(key, after + 0.05, "marker")
        await until(lambda: set(markers.values()) <= set(self.counts()))
        self.fired = [(f, at) for f, at in self.fired if f.kind != "marker"]

    def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        self.timers.close()
        self.bus.close()
