"""A worker that ended: its last deltas are read before its dialogs move
(stateplane/handover.py rule 7), with a real ``Replication`` and a real deltas pipe."""

from __future__ import annotations

import asyncio
import os
import shutil

import zmq

from conf import envelope as env
from conf import sockets
from conf.workerset import WorkerSet

from ..workers.dialog_helpers import Call, table
from .test_hostile import config, replication, short_dir

GONE = "worker.2-4194301"  # a pid no process has: its process is gone


def test_a_gone_workers_last_deltas_are_read_before_its_dialogs_move() -> None:
    """GONE created a call and ended; its ``c`` is in the state plane's pipe, not read yet,
    when a heartbeat sees the process gone. Its dialogs move only at the next heartbeat,
    after the pipe was read: the call goes to the worker that owns it now. (Moved at once,
    the mirror had nothing of it, and the ``c`` read after stayed there, nobody's.)"""

    async def run(run_dir: str) -> None:
        async with replication(config(run_dir)) as (ctx, repl):
            live = f"worker.1-{os.getpid()}"
            pull = sockets.bind_pull(ctx, sockets.endpoint(run_dir, "worker", live), 1000)
            push = ctx.socket(zmq.PUSH)
            push.linger = 0
            try:
                push.connect(repl.endpoints[0])
                ring = WorkerSet.fixed({live: "", GONE: ""})
                call = next(c for c in (Call(i) for i in range(100))
                            if ring.owner(c.call_id.encode()) == GONE)  # fmt: skip
                t = table(max_dialogs=10)
                call.confirmed(t)
                repl.handover.workers = {live: "", GONE: ""}  # both, as last read
                push.send_multipart(env.pack(env.KIND_DELTAS, [GONE, t.take_deltas()]))
                # the pipe has it, and the loop has not run its reader (no await since): a
                # blocking poll, bounded, so that the loop cannot run meanwhile
                assert repl.readers[0].sock.poll(10_000, zmq.POLLIN)
                loop = asyncio.get_running_loop()
                repl.handover.track(loop.time())  # GONE's process is gone: seen
                assert repl.counters["worker_dialogs_moved"] == 0
                repl.handover.track(loop.time() + 0.25)  # the next heartbeat
                got: list[str] = []
                async with asyncio.timeout(10):
                    while call.call_id not in got:
                        try:
                            e = env.unpack(pull.recv_multipart(zmq.NOBLOCK))
                        except zmq.Again:
                            await asyncio.sleep(0.01)  # polling step, bounded by the timeout
                            continue
                        if e.kind == env.KIND_ADOPT:
                            got += [r[0] for r in e.header[1]]
                assert got == [call.call_id]
                assert repl.counters["worker_dialogs_moved"] == 1
            finally:
                push.close(linger=0)
                pull.close(linger=0)

    run_dir = short_dir()
    try:
        asyncio.run(run(run_dir))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
