#!/usr/bin/env python3
"""What a worker's timer client holds for calls that ended, and its CPU per call's timer ops
(issue #16, docs/benchmarks.md "Sixth sitting"), in process: no timers process.

    python -P bench/timer_due.py [--calls 100000]

Each call is what the dialog table asks of the client: arm the early lifetime (+300 s) at the
INVITE, re-arm the answered one (+12 h, the default lifetime) at the 200, cancel at the BYE.
Then the overdue check (``timers/client.py`` rule 7) runs as heartbeats would 70 s later, and
tracemalloc says how many bytes per ended call are still held (``_due``'s slots and the keys
they keep alive). (``-P``: bench/timers.py would shadow the ``timers`` package.)
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc

import uvloop
import zmq

from conf.settings import Node, Settings
from timers.client import TimerClient


async def main(calls: int) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    c = TimerClient(ctx, Settings(node=Node(run_dir=tempfile.mkdtemp())), "worker.1", lambda f: None)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    now = time.monotonic()
    t0 = time.process_time()
    for i in range(calls):
        k = f"{i}-31580@127.0.0.1\x0031580SIPpTag0{i}"  # a sipp dialog's key
        c.arm(k, now + 300, "dialog")
        c.arm(k, now + 43_200, "dialog")
        c.cancel(k)
    cpu = (time.process_time() - t0) / calls * 1e6
    for _ in range(calls // 20_000 + 2):  # heartbeats, each examining at most OVERDUE_SLICE keys
        c._check_overdue(now + 70 + c.overdue_s)
    gc.collect()
    held = (tracemalloc.get_traced_memory()[0] - base) / calls
    tracemalloc.stop()
    slots = sum(map(len, c._due.values()))
    print(f"{cpu:.2f} us CPU per call (2 arms, 1 cancel; under tracemalloc); 70 s later: "
          f"{slots} slots, {held:.0f} bytes held per ended call")
    c.close()
    ctx.term()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=100_000)
    args = ap.parse_args()
    if not 0 < args.calls <= 2_000_000:
        raise SystemExit("--calls: 1 .. 2 000 000")
    uvloop.run(main(args.calls))
