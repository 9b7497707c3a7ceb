"""A worker's delta link and a state plane restarted alone (workers/dialogs/deltas.py rule 4), over
real ipc:// sockets: the new state plane gets the worker's whole table, the first one
nothing extra."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

from conf import envelope as env
from conf import sockets
from conf.pipe import PushPipe
from conf.settings import Bus
from tests.pipeline.helpers import run, until
from tests.workers.dialog_helpers import Call
from tests.workers.dialog_helpers import table as dialog_table
from workers.dialogs.deltas import DeltaLink


def bind_state_plane(ctx: zmq.Context[Any], ep: str) -> zmq.Socket[bytes]:
    sockets.unlink(ep)  # what a state plane does at start: a file left here is a dead one's
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.bind(ep)
    return pull


def received(pull: zmq.Socket[bytes], into: list[list[Any]]) -> bool:
    """Read what is waiting into ``into`` (delta lists); True when an ``s-`` came."""
    while True:
        try:
            e = env.unpack(pull.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return any(d[0] == "s-" for d in into)
        into.extend(e.header[1])


def disconnected(monitor: zmq.Socket[bytes]) -> bool:
    """Whether the monitored socket reported a disconnection."""
    try:
        event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
    except zmq.Again:
        return False
    return bool(event["event"] == zmq.EVENT_DISCONNECTED)


def test_a_new_state_plane_gets_the_whole_table(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Heartbeats with the same state plane owe nothing; once its socket file is another
    file (a restart), the next heartbeat starts a resync: s+, the live dialog, s-."""

    async def body() -> None:
        ep = f"ipc://{tmp_path}/stateplane-deltas.ipc"
        first = bind_state_plane(ctx, ep)
        push = sockets.connect_push(ctx, ep, Bus().hwm)
        monitor = push.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        pipe = PushPipe("stateplane", push, env.KIND_DELTAS,
                        lambda batches: ["worker.1-1", [d for b in batches for d in b]], 1,
                        Bus().max_pending)  # fmt: skip
        table = dialog_table()
        table.emit_deltas = True
        counters: Counter[str] = Counter()
        link = DeltaLink(pipe, table, "worker.1-1", counters, sockets.endpoint_path(ep))
        call = Call(1)
        call.confirmed(table)
        link.after_iteration()  # the call's deltas to the first state plane
        for _ in range(3):
            link.heartbeat()
        seen: list[list[Any]] = []
        await until(lambda: received(first, seen) or len(seen) >= 3)
        assert counters["stateplane_restarts_seen"] == 0 and not counters["delta_resyncs"]
        # the first state plane exits: the worker's socket sees it go long before a new
        # process binds (a restart takes a second), so the resync is not sent into a dead pipe
        first.close()
        await until(lambda: disconnected(monitor))
        # and its pipe is gone (no POLLOUT: IMMEDIATE sends only on live connections)
        await until(lambda: not push.get(zmq.EVENTS) & zmq.POLLOUT)
        second = bind_state_plane(ctx, ep)
        link.heartbeat()
        assert counters["stateplane_restarts_seen"] == 1
        got: list[list[Any]] = []
        await until(lambda: received(second, got))
        assert [d[0] for d in got] == ["s+", "c", "s-"] and got[1][1] == call.call_id, got
        second.close()
        push.disable_monitor()
        monitor.close(linger=0)
        push.close(linger=0)

    run(body)


def test_the_other_hosts_workers_go_before_the_markers_and_open_a_resync(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Rule 6: the ring the worker sees goes before the ``y`` marker that follows from it, and
    a resync (a state plane restarted alone knows no other host) starts with the last one."""

    async def body() -> None:
        ep = f"ipc://{tmp_path}/stateplane-deltas.ipc"
        plane = bind_state_plane(ctx, ep)
        push = sockets.connect_push(ctx, ep, Bus().hwm)
        pipe = PushPipe("stateplane", push, env.KIND_DELTAS,
                        lambda batches: ["b.worker-1", [d for b in batches for d in b]], 1,
                        Bus().max_pending)  # fmt: skip
        table = dialog_table()
        table.emit_deltas = True
        link = DeltaLink(pipe, table, "b.worker-1", Counter())
        ring = [["c.worker-2", "tcp://127.0.0.4:5002"]]
        link.ring(ring)
        link.yielded("c.worker-2")
        link.owed = True
        got: list[list[Any]] = []

        def resynced() -> bool:
            link.heartbeat()  # the resync starts once the pipe has drained (rule 2)
            return received(plane, got)

        await until(resynced)
        assert got[:2] == [["ring", "b.worker-1", ring], ["y", "b.worker-1", "c.worker-2"]], got
        assert [d[0] for d in got[2:]] == ["ring", "s+", "s-"], got
        plane.close()
        push.close(linger=0)

    run(body)
