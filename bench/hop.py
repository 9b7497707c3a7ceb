"""Cost per message of the ZeroMQ hop, batched vs one message per send.

Drives the real ``conf.pipe.PushPipe`` (sender) and a PULL socket drained with the same
NOBLOCK loop the processes use, in two processes over ipc://, for a fixed number of
messages of a typical INVITE's size. Prints messages per second and CPU microseconds per
message on each side, for each batch size.

    python bench/hop.py                 # batch sizes 1 and 256, 200 000 messages each
    python bench/hop.py --batch 1,16,256 --count 100000
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import tempfile
import time

import uvloop
import zmq

from conf import envelope, sockets
from conf.pipe import PushPipe

PAYLOAD = b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" + b"X-Pad: " + b"x" * 700 + b"\r\n\r\n"
META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 0.0]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def receiver(ep: str, count: int, ready: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = sockets.bind_pull(ctx, ep, 1000)
    ready.set()
    got = 0
    poller = zmq.Poller()
    poller.register(pull, zmq.POLLIN)
    cpu0 = None
    while got < count:
        poller.poll(5000)
        while True:
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if cpu0 is None:
                cpu0, t0 = _cpu(), time.perf_counter()
            got += len(envelope.unpack(frames).payloads)
    out.put((_cpu() - (cpu0 or 0.0), time.perf_counter() - t0))
    pull.close(linger=0)
    ctx.term()


async def send(ep: str, count: int, batch: int) -> tuple[float, float]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = sockets.connect_push(ctx, ep, 1000)
    pipe = PushPipe("bench", sock, envelope.KIND_IN, lambda m: ["bench", m], batch, 100_000)
    while not sock.getsockopt(zmq.EVENTS) & zmq.POLLOUT:
        await asyncio.sleep(0.001)
    cpu0, t0 = _cpu(), time.perf_counter()
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        for _ in range(n):
            while not pipe.add(META, PAYLOAD):
                await asyncio.sleep(0)  # backlog full: let POLLOUT drain it
        pipe.flush()  # one loop iteration's worth
        sent += n
        await asyncio.sleep(0)
    while pipe.backlog:
        await asyncio.sleep(0.001)
    result = (_cpu() - cpu0, time.perf_counter() - t0)
    pipe.close(linger_ms=1000)
    ctx.term()
    return result


def run(batch: int, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ep = f"ipc://{tmp}/hop.ipc"
        ready, out = mp.Event(), mp.Queue()
        proc = mp.Process(target=receiver, args=(ep, count, ready, out))
        proc.start()
        ready.wait(10)
        s_cpu, s_wall = uvloop.run(send(ep, count, batch))
        r_cpu, r_wall = out.get(timeout=120)
        proc.join(10)
    print(f"batch={batch:4d}  {count / max(s_wall, r_wall):9.0f} msg/s   "
          f"sender {s_cpu / count * 1e6:5.2f} us/msg   receiver {r_cpu / count * 1e6:5.2f} us/msg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,256", help="comma-separated batch sizes")
    ap.add_argument("--count", type=int, default=200_000, help="messages per batch size")
    args = ap.parse_args()
    print(f"pid {os.getpid()}: {args.count} messages of {len(PAYLOAD)} bytes per run")
    for b in (int(x) for x in args.batch.split(",")):
        run(b, args.count)


if __name__ == "__main__":
    main()
