"""A worker that leaves a stateful worker's view and comes back before anyone said
``HANDED`` for it was never gone (``workers/dialogs/handover.py`` rule 1,
``workers/dialogs/owners.py`` rule 1): on a loaded box the edge drops another host's worker
whose heartbeats are a second late and takes it back at the next one. Its dialogs stayed
with it and its host's state plane says nothing for a live worker, so the wait for it ends
when it is back, and what was held meanwhile is served then, not 15 s later."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import zmq

from conf import sockets
from conf.workerset import WorkerSet
from dialogstate.sources import STATEPLANE, vanished_source
from tests.pipeline.helpers import run, until
from tests.workers.helpers import PORT, US, request
from tests.workers.test_worker_flush import Node_, _pull


def test_a_worker_back_in_the_view_ends_the_wait_for_its_hand_over(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Another worker's socket file goes and comes back (its ident, so its process, the
    same). While it is gone a BYE for a dialog this worker lacks is held; once it is back
    nothing is expected and the BYE goes on at the next heartbeat. Without the change the
    wait for its ``HANDED`` goes on (15 s) and the BYE stays held."""

    async def body() -> None:
        node = Node_(ctx, tmp_path, 0)
        other_id = f"worker.2-{os.getpid()}"
        other_ep = sockets.endpoint(str(tmp_path), "worker", other_id)
        other = _pull(ctx, other_ep)
        await node.joined()
        worker, owners = node.worker, node.worker.owners
        owners.on_handed([STATEPLANE, worker.worker_id])  # as the state plane says at start
        owners.refresh_peers()  # as its heartbeat does
        assert other_id in owners.peers.idents and not owners.gate.pending()

        other.close(linger=0)
        os.unlink(sockets.endpoint_path(other_ep))  # out of the view
        owners.refresh_peers()
        assert owners.gate.expected == [vanished_source(other_id)]
        # a BYE for a dialog not held here, of a Call-ID this worker owns without the other
        ring = WorkerSet.fixed({worker.worker_id: "", other_id: ""})
        call = next(n for n in range(1000)
                    if ring.owner(f"call-{n}@10.0.0.1".encode()) == worker.worker_id)  # fmt: skip
        bye = request("BYE", f"sip:bob@{US}:{PORT}", to_tag="totag", cseq=2,
                      call_id=f"call-{call}@10.0.0.1",
                      via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKbye{call}")  # fmt: skip
        node.ingress.submit(b"bye", ["udp", "10.0.0.1", 5070, 0, US, PORT, 0.0], bye)
        node.ingress.flush()
        await until(lambda: len(owners.gate) == 1)

        back = _pull(ctx, other_ep)  # the same worker, heard again
        owners.heartbeat()
        assert not owners.gate.pending(), owners.gate.stats()
        assert owners.gate.counters["waits_cancelled"] == 1
        try:
            async with asyncio.timeout(3):
                await until(lambda: any(o.startswith(b"BYE ") for o in node.outs))
        except TimeoutError:
            raise AssertionError(f"{node.outs} {dict(worker.meter.counters)} {owners.gate.stats()}")
        assert len(owners.gate) == 0 and owners.gate.counters["waits_expired"] == 0
        back.close(linger=0)
        node.close()

    run(body, 20.0)
