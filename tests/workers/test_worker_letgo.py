"""A stateful worker with dialogs, on real ipc sockets, gives a ringing call up quietly when a
worker that owns its Call-ID joins (``workers/dialogs/owners.py`` rule 2, ``StatefulProxy``
rule 12): the edge sends the call's answer there, so the worker's Timer C must have nothing
left to CANCEL or to answer 408 for."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import zmq

from conf import sockets
from conf.workerset import WorkerSet
from ingress.sip.serialize import build_response
from tests.pipeline.helpers import run, until
from tests.workers.helpers import PORT, US, parsed_req
from tests.workers.test_worker_flush import Node_, _pull


def test_a_ringing_call_the_joiner_owns_is_let_go_quietly(ctx: zmq.Context[Any],
                                                          tmp_path: Path) -> None:  # fmt: skip
    """INVITE and 180 through the worker; then a worker that owns the Call-ID appears in the
    run directory. At the worker's next look at its peers the dialog is let go and so are
    both transactions: the table is empty, and firing Timer C's moment sends nothing.
    Without the hand-back of the transactions, that fire sends a CANCEL and a 408."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, 0)
        worker = node.worker
        core = worker.stateful
        assert core is not None and core.dialogs is not None
        joiner_id = f"worker.2-{os.getpid()}"
        ring = WorkerSet.fixed({worker.worker_id: "", joiner_id: ""})
        call = next(n for n in range(1000) if ring.owner(f"call-{n}@10.0.0.1".encode()) == joiner_id)
        await node.joined()
        node.submit(call)
        node.ingress.flush()
        await until(lambda: any(o.startswith(b"INVITE") for o in node.outs))
        fwd = next(o for o in node.outs if o.startswith(b"INVITE"))
        ringing = build_response(parsed_req(fwd), 180, "Ringing", to_tag="uas")
        meta = ["udp", "127.0.0.1", 7000, 0, US, PORT, time.monotonic()]
        node.ingress.submit(f"call-{call}".encode(), meta, ringing, None)
        node.ingress.flush()
        await until(lambda: any(o.startswith(b"SIP/2.0 180") for o in node.outs))
        assert len(core.table) == 2 and len(core.dialogs) == 1
        joiner = _pull(ctx, sockets.endpoint(str(tmp_path), "worker", joiner_id))
        worker.owners.refresh_peers()  # as its heartbeat does
        assert joiner_id in worker.owners.peers.idents
        assert len(core.dialogs) == 0 and core.counters["calls_moved"] == 1
        assert len(core.table) == 0
        sent = len(node.outs)
        assert core.handle_timer(worker.loop.time() + core.timer_c_s + 1) == []
        assert core.counters["timer_c"] == 0 and len(node.outs) == sent
        joiner.close(linger=0)
        node.close()

    run(body, 20.0)
