"""Cost per message of the ZeroMQ hop, batched vs one message per send.

Drives the real ``conf.pipe.PushPipe`` (sender) and a PULL socket drained by the real
``conf.pipe.drain_pull`` from a uvloop reader on ``zmq.FD`` (receiver), as the processes do,
in two processes over ipc://, for a fixed number of messages of a typical INVITE's size.
Prints messages per second and CPU microseconds per message on each side, for each batch size.

    python bench/hop.py                 # batch sizes 1 and 256, 200 000 messages each
    python bench/hop.py --batch 1,16,256 --count 100000
    python bench/hop.py --batch 1 --gap-us 100 --count 20000   # paced, as a proxy at 1-2 k
                                                               # calls/s: every batch wakes
                                                               # an idle receiver
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import tempfile
import time
from collections import Counter
from multiprocessing.queues import Queue as MpQueue
from multiprocessing.synchronize import Event as MpEvent

import uvloop
import zmq

from conf import envelope, sockets
from conf.pipe import PushPipe, drain_pull

PAYLOAD = b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" + b"X-Pad: " + b"x" * 700 + b"\r\n\r\n"
META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 0.0]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def receiver(ep: str, count: int, ready: MpEvent, out: MpQueue[tuple[float, float]]) -> None:
    out.put(uvloop.run(_receive(ep, count, ready)))


async def _receive(ep: str, count: int, ready: MpEvent) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = sockets.bind_pull(ctx, ep, 1000)
    done = asyncio.Event()
    got = 0
    start: list[float] = []
    counters: Counter[str] = Counter()

    def on_envelope(env: envelope.Envelope) -> None:
        nonlocal got
        if not start:
            start.extend((_cpu(), time.perf_counter()))
        got += len(env.payloads)
        if got >= count:
            done.set()

    def on_readable() -> None:
        if drain_pull(pull, on_envelope, counters):
            loop.call_soon(on_readable)

    loop.add_reader(pull.FD, on_readable)
    loop.call_soon(on_readable)
    ready.set()
    await done.wait()
    result = (_cpu() - start[0], time.perf_counter() - start[1])
    loop.remove_reader(pull.FD)
    pull.close(linger=0)
    ctx.term()
    return result


async def send(ep: str, count: int, batch: int, gap_s: float) -> tuple[float, float]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = sockets.connect_push(ctx, ep, 1000)
    pipe = PushPipe("bench", sock, envelope.KIND_IN, lambda m: ["bench", m], batch, 100_000)
    while not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLOUT:
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
        if gap_s:
            time.sleep(gap_s)  # noqa: ASYNC251 - off-CPU on purpose: the receiver goes idle and every batch wakes it
        await asyncio.sleep(0)
    while pipe.backlog:
        await asyncio.sleep(0.001)
    result = (_cpu() - cpu0, time.perf_counter() - t0)
    pipe.close(linger_ms=1000)
    ctx.term()
    return result


def run(batch: int, count: int, gap_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ep = f"ipc://{tmp}/hop.ipc"
        ready = mp.Event()
        out: MpQueue[tuple[float, float]] = mp.Queue()
        proc = mp.Process(target=receiver, args=(ep, count, ready, out))
        proc.start()
        ready.wait(10)
        s_cpu, s_wall = uvloop.run(send(ep, count, batch, gap_s))
        r_cpu, r_wall = out.get(timeout=120)
        proc.join(10)
    print(f"batch={batch:4d}  {count / max(s_wall, r_wall):9.0f} msg/s   "
          f"sender {s_cpu / count * 1e6:5.2f} us/msg   receiver {r_cpu / count * 1e6:5.2f} us/msg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,256", help="comma-separated batch sizes")
    ap.add_argument("--count", type=int, default=200_000, help="messages per batch size")
    ap.add_argument("--gap-us", type=float, default=0.0, help="sleep between batches (paced)")
    args = ap.parse_args()
    print(f"pid {os.getpid()}: {args.count} messages of {len(PAYLOAD)} bytes per run")
    for b in (int(x) for x in args.batch.split(",")):
        run(b, args.count, args.gap_us / 1e6)


if __name__ == "__main__":
    main()
