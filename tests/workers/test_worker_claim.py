"""A stateful worker with dialogs starts a call's dialog only when it owns the Call-ID in its
own view (``workers/dialogs/owners.py`` rule 3): an ingress whose ring does not have a worker
that has just joined the run directory yet sends that worker's new calls elsewhere, and
they are passed on to it (``FWD``) instead of starting dialogs its in-dialog requests would
never find."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zmq

from conf import envelope, sockets
from conf.workerset import WorkerSet
from tests.pipeline.helpers import run, until
from tests.workers.test_worker_flush import Node_, _drain, _pull


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
