"""A stateful worker with dialogs, on real ipc sockets: its dialog deltas and its timer ops
leave with its bus flush (``workers/bus.py`` rule 3), before the output of the messages
that made them, and its loop timer is rounded to ``TIMER_GRAIN`` (``workers/service.py``)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import zmq

from conf import envelope, sockets
from conf.loadstats import LoadMeter
from conf.pipe import recv_frames
from conf.settings import Bus, Dialogs, Node, Proxy, Settings
from ingress.bus import WorkerBus
from ingress.shedding import ADMIT
from tests.pipeline.helpers import run, until
from tests.workers.helpers import PORT, US, request, settings
from workers.service import TIMER_GRAIN, Worker

FLUSH_MS = 50


def _settings(run_dir: Path, flush_ms: int) -> Settings:
    base = settings(proxy=Proxy(mode="stateful", record_route=True))
    return dataclasses.replace(base, node=Node(run_dir=str(run_dir)),
                               bus=Bus(flush_ms=flush_ms, heartbeat_ms=100),
                               dialogs=Dialogs(enabled=True))  # fmt: skip


def _pull(ctx: zmq.Context[Any], ep: str) -> zmq.Socket[bytes]:
    sock = sockets.bind_pull(ctx, ep, 1000)
    return sock


def _drain(sock: zmq.Socket[bytes]) -> list[envelope.Envelope]:
    out = []
    while True:
        try:
            out.append(envelope.unpack(recv_frames(sock)))
        except zmq.Again:
            return out


class Node_:
    """A worker, the ingress it answers through, and the sockets its state plane and its
    timers process would bind, all in one run directory."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: Path, flush_ms: int) -> None:
        self.plane = _pull(ctx, f"ipc://{run_dir}/{envelope.STATEPLANE_DELTAS}")
        self.timers = _pull(ctx, sockets.endpoint(str(run_dir), "timers", f"timers.1-{os.getpid()}"))
        self.worker = Worker(_settings(run_dir, flush_ms), f"worker.1-{os.getpid()}", ctx)
        self.outs: list[bytes] = []
        #: at each output the ingress received: what the worker's other pipes still held
        self.held_at_out: list[tuple[int, int]] = []
        cfg = self.worker.settings.bus
        self.ingress = WorkerBus(ctx, cfg, str(run_dir), f"ingress.1-{os.getpid()}", self._on_out,
                                 LoadMeter(0))  # fmt: skip
        self.deltas: list[envelope.Envelope] = []
        self.tops: list[envelope.Envelope] = []

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        deltas, timers = self.worker.deltas, self.worker.timers
        assert deltas is not None and timers is not None
        self.held_at_out.append((len(deltas.pipe.metas), len(timers._dirty)))
        self.outs.extend(payloads)

    async def joined(self) -> None:
        timers = self.worker.timers
        assert timers is not None
        await until(lambda: bool(self.worker.heartbeat()) or (
            len(self.ingress.workers) == 1 and timers.shards != []))  # fmt: skip

    def submit(self, call: int) -> None:
        meta = ["udp", "10.0.0.1", 5070, 0, US, PORT, time.monotonic()]
        raw = request(call_id=f"call-{call}@10.0.0.1", via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{call}")
        assert self.ingress.submit(f"call-{call}".encode(), meta, raw) == ADMIT

    def read(self) -> bool:
        self.deltas += _drain(self.plane)
        self.tops += [e for e in _drain(self.timers) if e.kind == envelope.KIND_TOPS]
        return True

    def close(self) -> None:
        self.worker.close()
        self.ingress.close()
        self.plane.close(linger=0)
        self.timers.close(linger=0)


def _delta_calls(envs: list[envelope.Envelope]) -> list[list[str]]:
    """Per DLT envelope, the Call-IDs its deltas name."""
    return [sorted({d[1] for d in e.header[1] if isinstance(d[1], str)}) for e in envs]


def _armed_keys(envs: list[envelope.Envelope]) -> list[list[str]]:
    """Per TOPS envelope, the keys it arms."""
    return [sorted(a[0].partition("\0")[0] for a in e.header[3]) for e in envs]


def test_deltas_and_timer_ops_leave_with_the_flush_before_the_output(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Two INVITEs handled in two loop iterations within one flush interval: their dialogs'
    deltas leave in one DLT message, their lifetimes' arms in one TOPS message, and when the
    ingress gets the worker's output (the 100 Trying, the forwarded INVITE) neither pipe holds
    anything any more. Without the flush delay, each iteration's deltas would leave alone."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, FLUSH_MS)
        await node.joined()
        node.read()  # heartbeats, announcements
        node.deltas.clear()
        node.tops.clear()
        counters = node.worker.meter.counters
        node.submit(1)
        node.ingress.flush()  # to the worker now: the test times the worker's flush
        await until(lambda: counters["msgs_in"] == 1)
        t0 = time.monotonic()
        node.submit(2)
        node.ingress.flush()
        await until(lambda: counters["msgs_in"] == 2)
        both_in_time = time.monotonic() - t0 < FLUSH_MS / 1000 * 0.8
        await until(lambda: len(node.outs) >= 4)  # 100 and INVITE for each
        await until(lambda: node.read() and _delta_calls(node.deltas) != [] and (
            sum(map(len, _armed_keys(node.tops))) == 2))  # fmt: skip
        assert all(held == (0, 0) for held in node.held_at_out), node.held_at_out
        calls = ["call-1@10.0.0.1", "call-2@10.0.0.1"]
        assert sorted(c for cs in _delta_calls(node.deltas) for c in cs) == calls
        assert sorted(k for ks in _armed_keys(node.tops) for k in ks) == calls
        if both_in_time:  # a box that stalled a flush interval between them may rightly split
            assert _delta_calls(node.deltas) == [calls]
            assert _armed_keys(node.tops) == [calls]
        node.close()

    run(body, 20.0)


def test_without_a_flush_delay_each_iterations_deltas_leave_at_its_end(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """``flush_ms = 0``: the deltas leave at the end of the loop iteration that made them."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, 0)
        await node.joined()
        deltas = node.worker.deltas
        assert deltas is not None and deltas.defer is None
        sent = deltas.pipe.sent
        node.submit(1)
        node.ingress.flush()
        await until(lambda: node.worker.meter.counters["msgs_in"] == 1)
        assert deltas.pipe.sent == sent + 1 and not deltas.pipe.metas
        node.close()

    run(body, 20.0)


def test_the_loop_timer_is_rounded_up_to_the_grain(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """The core's next deadline (the forwarded INVITE's Timer A) is armed on the grain, never
    before the deadline and less than a grain after it."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, FLUSH_MS)
        await node.joined()
        node.submit(1)
        node.ingress.flush()
        await until(lambda: node.worker.meter.counters["msgs_in"] == 1)
        core = node.worker.stateful
        assert core is not None
        due = core.next_deadline()
        grain = node.worker.settings.transactions.t1_ms / 1000 / TIMER_GRAIN
        at = node.worker._timer_at
        assert due is not None and due <= at < due + grain
        assert abs(at / grain - round(at / grain)) < 1e-6
        node.close()

    run(body, 20.0)
