"""A worker of a host of several that the edge dropped from its ring and took back holds what
needs a dialog it lacks until each other host's state plane said ``HANDED``
(``workers/dialogs/owners.py`` rule 7, ``workers/bus.py`` rule 12): while it was out the
other hosts' workers started calls of its Call-IDs, and their state planes hand those to it
as to a joiner. Before, it did not know it had been out: a BYE that reached it before its
dialog went on statelessly, and the call's CDR came at its lifetime's end."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import zmq

from conf import envelope as env
from conf.workerset import WorkerSet
from dialogstate.hosts import host_source
from dialogstate.sources import STATEPLANE
from tests.pipeline.helpers import run, until
from tests.workers.dialog_helpers import Call, table
from tests.workers.helpers import PORT, US
from tests.workers.test_worker_keep import HOST_B, HostC
from workers.bus import _Remote
from workers.dialogs.handover import BACK_WAIT_S, HoldGate


def test_a_heartbeat_after_a_silence_says_we_may_have_been_out() -> None:
    """``_Remote.heard``: heartbeats a beat apart say nothing, the first one ever neither;
    one after a silence longer than the bound says so, once."""
    r = _Remote("tcp://127.0.0.2:1", None)  # type: ignore[arg-type]
    assert not r.heard(10.0, 0.3)  # the first
    assert not any(r.heard(10.0 + 0.1 * i, 0.3) for i in range(1, 20))
    assert r.heard(12.5, 0.3)
    assert not r.heard(12.6, 0.3)


def test_a_gate_expecting_the_hosts_holds_until_each_said_handed() -> None:
    """What ``Owners.back`` sets up: each host expected for ``BACK_WAIT_S``; a message held
    meanwhile is released once every host said ``HANDED``, or at the bound; a ``HANDED``
    that came first counts."""
    g = HoldGate()
    g.handed(host_source("d"), 0.5)  # d's state plane was quicker than our heartbeat read
    for s in (host_source("b"), host_source("d")):
        g.expect(s, 1.0, BACK_WAIT_S)
    assert g.expected == [host_source("b")]
    assert g.hold("bye") is None and g.take_released() == []
    g.handed(host_source("b"), 1.2)
    assert g.take_released() == ["bye"] and not g.pending()
    g.expect(host_source("b"), 2.0, BACK_WAIT_S)  # a false alarm: nobody says HANDED
    g.hold("bye2")
    assert g.expire(2.0 + BACK_WAIT_S - 0.1) == [] and g.take_released() == []
    assert g.expire(2.0 + BACK_WAIT_S) == [host_source("b")]
    assert g.take_released() == ["bye2"]


def test_a_worker_back_in_the_edges_ring_holds_a_bye_until_its_dialog_is_handed(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Real sockets: host c's worker hears the edge's ring (itself and a worker of host b)
    and b's ``HANDED`` for its join. The edge falls silent longer than it waits before it
    drops a worker, then its heartbeat comes again naming c's worker (the edge's ring after it
    took it back). A BYE for a call b's worker started meanwhile (a Call-ID c's worker owns)
    is held; b's state plane hands the dialog (``ADOPT``, source ``stateplane@b``), then
    ``HANDED``: the BYE is served then, with its dialog in the table. Without rule 7 the BYE
    is not held (nothing is expected) and goes on before its dialog came."""

    async def body() -> None:
        c = HostC(ctx, tmp_path)
        try:
            owners = c.worker.owners
            edge, b = c.client("edge"), c.client("b")
            edge_id, edge_ep = "edge.ingress.1-1", c.settings.bus.ingresses[0]
            b_worker = f"b.worker.1-{os.getpid()}"
            ring = [c.me, b_worker]
            eps = [c.worker.bus.tcp_endpoint, f"tcp://{HOST_B}:5999"]

            def edge_hb() -> None:
                edge.send_multipart(env.pack(env.KIND_HB, [edge_id, edge_ep, "up", ring, eps]))

            owners.on_handed([STATEPLANE, c.me])  # as c's state plane says at start
            edge_hb()
            await until(lambda: owners.gate.expected == [host_source("b")])
            b.send_multipart(env.pack(env.KIND_HANDED, [host_source("b"), c.me]))
            await until(lambda: not owners.gate.pending())
            assert c.counters["ring_back"] == 0

            # the edge is silent longer than it waits before it drops a worker (the
            # stimulus: heartbeat_ms 100, liveness 4), then hears c's worker again
            await asyncio.sleep(0.5)
            # a call b's worker started while c's was out: c's worker owns it now
            now_ring = WorkerSet.fixed({c.me: "", c.owner: "", b_worker: ""})
            without = WorkerSet.fixed({c.owner: "", b_worker: ""})
            call = next(x for x in (Call(i) for i in range(400))
                        if now_ring.owner(x.call_id.encode()) == c.me
                        and without.owner(x.call_id.encode()) == b_worker)  # fmt: skip
            meta = ["udp", call.src, 5070, 0, US, PORT, 0.0]
            bye = call.in_dialog("BYE", 2).raw
            edge_hb()
            # its BYE comes right behind the heartbeat (one socket: in that order)
            edge.send_multipart(env.pack(env.KIND_IN, [edge_id, [meta]], [bye]))
            await until(lambda: len(owners.gate) == 1)
            assert c.counters["ring_back"] == 1
            assert owners.gate.expected == [host_source("b")], owners.gate.stats()

            t = table(max_dialogs=10)
            call.confirmed(t)
            records = [d[1:] for d in t.take_deltas() if d[0] == "c"]
            records = env.unpack(env.pack(env.KIND_ADOPT, ["b", records, True, ""])).header[1]
            b.send_multipart(env.pack(env.KIND_ADOPT, ["b", records, True, host_source("b")]))
            await until(lambda: len(c.table_keys()) == 1)
            assert len(owners.gate) == 1  # held still: b has not said HANDED
            b.send_multipart(env.pack(env.KIND_HANDED, [host_source("b"), c.me]))
            await until(lambda: owners.gate.counters["released"] == 1)
            assert not owners.gate.pending() and owners.gate.counters["waits_expired"] == 0
            assert not c.counters["drop_host_records"], dict(c.counters)
            edge.close(linger=0)
            b.close(linger=0)
        finally:
            c.close()

    run(body, 20.0)
