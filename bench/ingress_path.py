#!/usr/bin/env python3
"""CPU per message of the ingress's own code on the UDP path, in process: what one
``sipline ingress`` spends on a message between the kernel and ZeroMQ, without its wake-ups.

Method
------
A real ``ingress.service.Ingress`` on uvloop (a UDP listener on a free port, a run directory
of its own) and, in the same process, a stand-in worker: a PULL socket at a worker's
canonical endpoint, announced to the ingress by ``HB`` envelopes as a worker would, and a
PUSH socket to the ingress's endpoint. Two phases, each timed with ``time.thread_time`` (the
loop's thread only: ZeroMQ's I/O thread is not in it) around the ingress's code alone, the
stand-in's side done outside the timed spans:

``in``  a sipp call's six messages (``bench/codec.py``'s, each call its own Call-ID) handed
        to ``Ingress._on_datagram`` as uvloop would, ``--batch`` at a time, then the bus's
        ``flush`` (the timer ``[bus] flush_ms`` arms): scan, pike off, the meta, ``submit``,
        the batch's pack and send.
``out`` OUT envelopes of ``--batch`` messages each, as a worker sends them, to a sink UDP
        socket, read by the ingress's own reader (``WorkerBus._on_readable``): receive,
        unpack, the metas' checks, ``_on_out`` and uvloop's ``sendto`` (the real syscall).

Prints µs of CPU per message for each phase, the minimum and the median of ``--repeats``
rounds of ``--count`` messages. The uvloop receive of a datagram and the wake-ups are not
here: ``bench/stateless_cpu.py`` measures the whole process live.

    .venv/bin/python -P bench/ingress_path.py                 # this tree
    SIPLINE_PURE=1 .venv/bin/python -P bench/ingress_path.py  # interpreted
    (cd /tmp/old && PYTHONPATH=$PWD .venv/bin/python -P bench/ingress_path.py)
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import free_port
from codec import CALL

from conf import envelope, sockets
from conf.load import from_dict
from conf.pipe import recv_frames, send_frames
from ingress.service import Ingress

WORKER = "worker.bench-1"


def messages(n: int, port: int) -> list[bytes]:
    out = []
    for i in range(n // len(CALL) + 1):
        for m in CALL:
            m = m.replace(b"{n:08d}", b"%08d" % i).replace(b"{n}", b"%d" % i)
            out.append(m.replace(b":5060", b":%d" % port))
    return out[:n]


async def bench(args: argparse.Namespace, run_dir: str) -> dict[str, list[float]]:
    port = free_port()
    settings = from_dict({
        "node": {"run_dir": run_dir},
        "listen": [{"transport": "udp", "address": "127.0.0.1", "port": port}],
        "bus": {"first_worker_wait_s": 5},
    })  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    ep = sockets.endpoint(run_dir, "worker", WORKER)
    pull = sockets.bind_pull(ctx, ep, 100_000)
    ing = Ingress(settings, "ingress.bench-1", ctx)
    push = ctx.socket(zmq.PUSH)
    push.connect(ing.bus.endpoint)
    hb = envelope.pack(envelope.KIND_HB, [WORKER, ep, "up"])

    async def beat() -> None:
        while True:
            send_frames(push, hb)
            await asyncio.sleep(0.05)

    beating = asyncio.ensure_future(beat())
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sink.setblocking(False)
    sink_port = sink.getsockname()[1]
    try:
        await ing.start()
        lst = ing.udp[("127.0.0.1", port)]
        msgs = messages(args.count, port)
        src = ("127.0.0.1", sink_port)
        out_meta = ["udp", "127.0.0.1", sink_port, 0, "127.0.0.1", port]
        b = args.batch
        out_frames = [envelope.pack(envelope.KIND_OUT, [[out_meta] * len(msgs[i:i + b])],
                                    msgs[i:i + b]) for i in range(0, len(msgs), b)]  # fmt: skip
        poller = zmq.Poller()
        poller.register(ing.bus._pull, zmq.POLLIN)  # the bench waits for it as the loop would
        res: dict[str, list[float]] = {"in": [], "out": []}
        for _ in range(args.repeats):
            spent = 0.0
            for i in range(0, len(msgs), b):
                t0 = time.thread_time()
                for m in msgs[i : i + b]:
                    ing._on_datagram(lst, m, src)
                ing.bus.flush()
                spent += time.thread_time() - t0
                got = 0
                while got < min(b, len(msgs) - i):  # the stand-in worker takes the batch
                    got += len(recv_frames_blocking(pull)) - 2
            res["in"].append(spent / len(msgs) * 1e6)
            spent = 0.0
            for frames in out_frames:
                send_frames(push, frames)
                poller.poll(1000)
                t0 = time.thread_time()
                ing.bus._on_readable()
                spent += time.thread_time() - t0
                while True:
                    try:
                        sink.recv(65536)
                    except BlockingIOError:
                        break
            res["out"].append(spent / len(msgs) * 1e6)
            await asyncio.sleep(0)  # the loop's own work (heartbeats) between rounds
        return res
    finally:
        beating.cancel()
        sink.close()
        await ing.close()
        push.close(linger=0)
        pull.close(linger=0)
        ctx.term()


def recv_frames_blocking(sock: zmq.Socket[bytes]) -> list[bytes]:
    if not sock.poll(2000):
        raise TimeoutError("the ingress sent nothing to the stand-in worker")
    return recv_frames(sock)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=12_000, help="messages per round")
    ap.add_argument("--batch", type=int, default=8, help="messages per ZeroMQ batch")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipline-ipath-") as run_dir:
        res = uvloop.run(bench(args, run_dir))
    from conf import compiled

    print(compiled.describe())
    for phase, xs in res.items():
        print(f"{phase:3s} us CPU per message: min {min(xs):6.2f}  median "
              f"{statistics.median(xs):6.2f}  ({' '.join(f'{x:.2f}' for x in xs)})")  # fmt: skip


if __name__ == "__main__":
    main()
