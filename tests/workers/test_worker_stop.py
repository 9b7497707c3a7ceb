"""A worker stopping, on real ipc sockets with an ingress in the same loop
(``Worker.stop``, workers/bus.py rule 10): every message the ingress handed it before its
``LEFT`` is answered, and the quiet spell is read only when something but an ingress may
still send it work."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import zmq

from conf.loadstats import LoadMeter
from conf.settings import Bus, Node, Settings
from ingress.bus import WorkerBus
from ingress.shedding import ADMIT
from tests.pipeline.helpers import run, until
from tests.workers.helpers import PORT, US, request, settings
from tests.workers.test_worker_flush import Node_
from workers.service import Worker

CALLS = 200


def _stateless(run_dir: Path) -> Settings:
    return dataclasses.replace(settings(), node=Node(run_dir=str(run_dir)),
                               bus=Bus(heartbeat_ms=100))  # fmt: skip


def _submit(ingress: WorkerBus, n: int) -> None:
    meta = ["udp", "10.0.0.1", 5070, 0, US, PORT, time.monotonic()]
    raw = request(call_id=f"call-{n}@10.0.0.1", via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{n}")
    assert ingress.submit(f"call-{n}".encode(), meta, raw) == ADMIT


def test_a_stateless_worker_answers_all_then_skips_the_quiet_spell(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Without dialogs only ingresses send a worker work: once each said ``LEFT`` nothing
    more can come, so the worker closes without the 0.1 s quiet spell, and every INVITE the
    ingress handed it just before it stopped was forwarded (the ingress gets them all)."""

    async def body() -> None:
        worker = Worker(_stateless(tmp_path), f"worker.1-{os.getpid()}", ctx)
        outs: list[bytes] = []
        ingress = WorkerBus(ctx, worker.settings.bus, str(tmp_path), f"ingress.1-{os.getpid()}",
                            lambda metas, payloads: outs.extend(payloads), LoadMeter(0))  # fmt: skip
        await until(lambda: bool(worker.heartbeat()) or len(ingress.workers) == 1)
        for n in range(CALLS):
            _submit(ingress, n)
        ingress.flush()  # on their way, unread, when the worker stops
        phases: list[str] = []
        await worker.stop(phases.append)
        assert phases == ["leave", "jobs", "cdrs", "close"]  # no "quiet"
        await until(lambda: len(outs) == CALLS)
        assert sorted(o.split(b"\r\n", 1)[0] for o in outs) == [b"INVITE sip:bob@example.com SIP/2.0"] * CALLS
        assert worker.meter.counters["msgs_in"] == CALLS
        ingress.close()

    run(body, 10.0)


def test_a_worker_with_dialogs_reads_a_quiet_spell_after_the_lefts(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """With dialogs, a worker that has not re-read the run directory may still pass the
    stopping worker a call (``FWD``), which no ``LEFT`` covers: the quiet spell stays."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, 0)
        await node.joined()
        phases: list[str] = []
        await node.worker.stop(phases.append)
        assert phases == ["leave", "quiet", "jobs", "cdrs", "close"]
        node.ingress.close()
        node.plane.close(linger=0)
        node.timers.close(linger=0)

    run(body, 10.0)
