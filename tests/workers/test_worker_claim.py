"""A stateful worker starts a call only when it owns the Call-ID in its own view
(``workers/dialogs/owners.py`` rule 3): an ingress whose ring does not have a worker that has
just joined the run directory yet sends that worker's new calls elsewhere, and they are
passed on to it (``FWD``) instead of starting dialogs its in-dialog requests would never
find or, dialogs off, transactions whose answers go to the joiner; a request a job held is
passed on the same way (``StatefulProxy`` rule 13)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import zmq

from conf import envelope, sockets
from conf.loadstats import LoadMeter
from conf.settings import Bus, Node, Proxy
from conf.workerset import WorkerSet
from ingress.bus import WorkerBus
from ingress.shedding import ADMIT
from tests.pipeline.helpers import run, until
from tests.workers.helpers import PORT, US, parsed_req, request, settings
from tests.workers.test_worker_flush import Node_, _drain, _pull
from workers.proxy import Inbound
from workers.service import Worker


def test_a_new_call_the_joiner_owns_goes_to_the_joiner(ctx: zmq.Context[Any],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """The joiner is a socket file in the run directory that never told the ingress about
    itself. Of two new calls the ingress sends the worker, the one whose Call-ID the joiner
    owns reaches the joiner as a ``FWD`` and starts no dialog here; the other is served
    here. Without the claim, both dialogs start here."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, 0)
        joiner_id = f"worker.2-{os.getpid()}"
        joiner = _pull(ctx, sockets.endpoint(str(tmp_path), "worker", joiner_id))
        await node.joined()
        worker = node.worker
        core = worker.stateful
        assert core is not None and core.dialogs is not None
        worker.owners.refresh_peers()  # as its heartbeat does
        assert joiner_id in worker.owners.peers.idents
        ring = WorkerSet.fixed({worker.worker_id: "", joiner_id: ""})

        def call_owned_by(ident: str) -> int:
            return next(n for n in range(1000)
                        if ring.owner(f"call-{n}@10.0.0.1".encode()) == ident)  # fmt: skip

        theirs, ours = call_owned_by(joiner_id), call_owned_by(worker.worker_id)
        node.submit(theirs)
        node.submit(ours)
        node.ingress.flush()
        got: list[envelope.Envelope] = []
        await until(lambda: bool(got.extend(_drain(joiner)) or got))
        assert [e.kind for e in got] == [envelope.KIND_FWD]
        assert f"call-{theirs}@10.0.0.1".encode() in got[0].payloads[0]
        await until(lambda: len(node.outs) >= 2)  # our call's 100 Trying and its INVITE
        calls = sorted(k.partition("\0")[0] for k in core.dialogs.keys())  # noqa: SIM118
        assert calls == [f"call-{ours}@10.0.0.1"]
        assert all(f"call-{theirs}@".encode() not in out for out in node.outs)
        joiner.close(linger=0)
        node.close()

    run(body, 20.0)


def test_without_dialogs_new_calls_and_job_answers_go_to_the_joiner(ctx: zmq.Context[Any],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    """Dialogs off, the edge still routes a call's messages by Call-ID: a new INVITE whose
    Call-ID the joiner owns reaches the joiner as a ``FWD`` (``claim``) and starts no
    transaction here, and a request a job held is passed on the same way (``pass_on``), its
    bytes and where it came from unchanged. Without the claim, the INVITE is forwarded from
    here, and its Timer C would CANCEL a call answered at the joiner."""

    async def body() -> None:
        s = dataclasses.replace(settings(proxy=Proxy(mode="stateful")),
                                node=Node(run_dir=str(tmp_path)), bus=Bus(heartbeat_ms=100))  # fmt: skip
        worker = Worker(s, f"worker.1-{os.getpid()}", ctx)
        outs: list[bytes] = []
        ingress_id = f"ingress.1-{os.getpid()}"
        ingress = WorkerBus(ctx, s.bus, str(tmp_path), ingress_id,
                            lambda metas, payloads: outs.extend(payloads), LoadMeter(0))  # fmt: skip
        joiner_id = f"worker.2-{os.getpid()}"
        joiner = _pull(ctx, sockets.endpoint(str(tmp_path), "worker", joiner_id))
        core = worker.stateful
        assert core is not None and core.dialogs is None
        await until(lambda: bool(worker.heartbeat()) or len(ingress.workers) == 1)
        worker.owners.refresh_peers()  # as its heartbeat does
        assert joiner_id in worker.owners.peers.idents
        ring = WorkerSet.fixed({worker.worker_id: "", joiner_id: ""})
        theirs = [n for n in range(1000) if ring.owner(f"call-{n}@10.0.0.1".encode()) == joiner_id]
        meta = ["udp", "10.0.0.1", 5070, 0, US, PORT, time.monotonic()]
        raw = request(call_id=f"call-{theirs[0]}@10.0.0.1",
                      via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{theirs[0]}")  # fmt: skip
        assert ingress.submit(f"call-{theirs[0]}".encode(), meta, raw) == ADMIT
        ingress.flush()
        got: list[envelope.Envelope] = []
        await until(lambda: bool(got.extend(_drain(joiner)) or got))
        assert [e.kind for e in got] == [envelope.KIND_FWD] and got[0].payloads == [raw]
        assert len(core.table) == 0 and outs == []
        held = request(call_id=f"call-{theirs[1]}@10.0.0.1")
        inb = Inbound(ingress_id, "tcp", "10.0.0.7", 5071, 3, US, PORT)
        assert core.pass_on is not None and core.pass_on(parsed_req(held), inb)
        got.clear()
        await until(lambda: bool(got.extend(_drain(joiner)) or got))
        ((fwd,),) = [e.header[1] for e in got]
        assert got[0].header[0] == ingress_id and got[0].payloads == [held]
        assert fwd[:6] == ["tcp", "10.0.0.7", 5071, 3, US, PORT]
        joiner.close(linger=0)
        worker.close()
        ingress.close()

    run(body, 20.0)
