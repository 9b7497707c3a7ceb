"""Cost per message of the ZeroMQ hop, batched vs one message per send, over ipc:// (one
host) or TCP with CURVE (stages on several hosts, ``conf/bustcp.py``).

Drives the real ``conf.pipe.PushPipe`` (sender) and a PULL socket drained by the real
``conf.pipe.drain_pull`` from a uvloop reader on ``zmq.FD`` (receiver), as the processes do,
in two processes, for a fixed number of messages of a typical INVITE's size. Over TCP the
receiver's PULL is a CURVE server behind the real ZAP handler (``conf.curve.ZapHandler``) and
the sender a CURVE client, as an ingress and a worker on two hosts (here both on 127.0.0.1).
Prints messages per second, CPU microseconds per message on each side and the one-way latency
(each message carries its send time on the shared monotonic clock, as ``received_at`` does),
for each transport and batch size.

    python bench/hop.py                 # batch sizes 1 and 256, 200 000 messages each
    python bench/hop.py --batch 1,16,256 --count 100000
    python bench/hop.py --batch 1 --gap-us 100 --count 20000   # paced, as a proxy at 1-2 k
                                                               # calls/s: every batch wakes
                                                               # an idle receiver
    python bench/hop.py --transport ipc,tcp --batch 1,256      # TCP+CURVE against ipc
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

from conf import curve, envelope, sockets
from conf.pipe import PushPipe, drain_pull

PAYLOAD = b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" + b"X-Pad: " + b"x" * 700 + b"\r\n\r\n"
META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 0.0]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


#: (server, client) key pairs for the TCP runs: made once, as ``sipline keygen`` would
Keys = tuple[curve.KeyPair, curve.KeyPair]


def _keys() -> Keys:
    pairs = [zmq.curve_keypair() for _ in range(2)]
    return curve.KeyPair(*pairs[0]), curve.KeyPair(*pairs[1])


def receiver(ep: str, count: int, ready: MpEvent, out: MpQueue[Result],
             keys: Keys | None, bound: MpQueue[str]) -> None:  # fmt: skip
    out.put(uvloop.run(_receive(ep, count, ready, keys, bound)))


#: receiver CPU s, receiver wall s, one-way latencies in s (sorted)
Result = tuple[float, float, list[float]]


def _bind(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, keys: Keys | None) -> zmq.Socket[bytes]:
    if keys is None:
        return sockets.bind_pull(ctx, ep, 1000)
    # as conf.bustcp.TcpHop: the ZAP handler first, then a CURVE-server PULL
    curve.ZapHandler(ctx, asyncio.get_running_loop(), {keys[1].public: "bench"})
    pull = sockets.base(ctx.socket(zmq.PULL), 1000, sockets.MAX_MSG_BYTES)
    curve.serve_curve(pull, keys[0])
    pull.bind(ep)
    return pull


async def _receive(ep: str, count: int, ready: MpEvent, keys: Keys | None,
                   bound: MpQueue[str]) -> Result:  # fmt: skip
    loop = asyncio.get_running_loop()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pull = _bind(ctx, ep, keys)
    bound.put(pull.getsockopt_string(zmq.LAST_ENDPOINT))
    done = asyncio.Event()
    got = 0
    start: list[float] = []
    lat: list[float] = []
    counters: Counter[str] = Counter()

    def on_envelope(env: envelope.Envelope) -> None:
        nonlocal got
        now = time.monotonic()
        if not start:
            start.extend((_cpu(), time.perf_counter()))
        lat.extend(now - m[6] for m in env.header[1])
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
    result = (_cpu() - start[0], time.perf_counter() - start[1], sorted(lat))
    loop.remove_reader(pull.FD)
    ctx.destroy(linger=0)
    return result


def _connect(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, keys: Keys | None) -> zmq.Socket[bytes]:
    if keys is None:
        return sockets.connect_push(ctx, ep, 1000)
    sock = sockets.base(ctx.socket(zmq.PUSH), 1000, sockets.MAX_SEND_ONLY_BYTES)
    sock.setsockopt(zmq.IMMEDIATE, 1)
    curve.connect_curve(sock, keys[1], keys[0].public)
    sock.connect(ep)
    return sock


async def send(ep: str, count: int, batch: int, gap_s: float,
               keys: Keys | None) -> tuple[float, float]:  # fmt: skip
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = _connect(ctx, ep, keys)
    pipe = PushPipe("bench", sock, envelope.KIND_IN, lambda m: ["bench", m], batch, 100_000)
    while not int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLOUT:
        await asyncio.sleep(0.001)
    cpu0, t0 = _cpu(), time.perf_counter()
    sent = 0
    while sent < count:
        n = min(batch, count - sent)
        for _ in range(n):
            meta = [*META[:6], time.monotonic()]  # as received_at: latency at the far end
            while not pipe.add(meta, PAYLOAD):
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


def run(transport: str, batch: int, count: int, gap_s: float) -> None:
    keys = _keys() if transport == "tcp" else None
    with tempfile.TemporaryDirectory() as tmp:
        ep = f"ipc://{tmp}/hop.ipc" if keys is None else "tcp://127.0.0.1:*"
        ready = mp.Event()
        out: MpQueue[Result] = mp.Queue()
        bound: MpQueue[str] = mp.Queue()
        proc = mp.Process(target=receiver, args=(ep, count, ready, out, keys, bound))
        proc.start()
        ep = bound.get(timeout=10)
        ready.wait(10)
        s_cpu, s_wall = uvloop.run(send(ep, count, batch, gap_s, keys))
        r_cpu, r_wall, lat = out.get(timeout=300)
        proc.join(10)

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6

    print(f"{transport:3s} batch={batch:4d}  {count / max(s_wall, r_wall):9.0f} msg/s   "
          f"sender {s_cpu / count * 1e6:5.2f} us/msg   receiver {r_cpu / count * 1e6:5.2f} us/msg"
          f"   latency p50 {pct(0.5):7.0f} us  p99 {pct(0.99):7.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,256", help="comma-separated batch sizes")
    ap.add_argument("--count", type=int, default=200_000, help="messages per batch size")
    ap.add_argument("--gap-us", type=float, default=0.0, help="sleep between batches (paced)")
    ap.add_argument("--transport", default="ipc", help="comma-separated: ipc, tcp (TCP+CURVE)")
    args = ap.parse_args()
    print(f"pid {os.getpid()}: {args.count} messages of {len(PAYLOAD)} bytes per run, "
          f"load average {os.getloadavg()[0]:.2f}")
    for t in args.transport.split(","):
        for b in (int(x) for x in args.batch.split(",")):
            run(t, b, args.count, args.gap_us / 1e6)


if __name__ == "__main__":
    main()
