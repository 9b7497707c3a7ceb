"""CPU a worker spends on one forged response, through the worker's real code path.

    python -P bench/forged.py                   # 20 000 of each kind, minimum of 3 runs
    python -P bench/forged.py --count 50000 --mode stateful

(``-P``: bench/timers.py would shadow the ``timers`` package.)

A real ``workers.service.Worker`` (its own run directory under /tmp, no ingress) takes
batches of 256 responses through ``_on_batch``, as ``IngressBus`` hands them over: parse,
Via check, tag check, drop, count, throttled log. CPU is ``time.process_time`` over the
whole batch loop, divided by the messages. Kinds:

- ``bare``: our Via with a fresh tag in the old form ``<ingress>~<conn>`` (the attack of
  issue #12: each once opened a socket), dropped as ``forged_tag``
- ``badmac``: a fresh tag in the new form with a made-up mac, dropped as ``forged_tag``
- ``stray``: a top Via that is not ours, dropped as ``stray_response``
- ``genuine``: a response with a tag this worker minted, for comparison (routed; with no
  ingress to send to it is then counted ``drop_unknown_ingress``, so the pipe's cost is out)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import tempfile
import time
from typing import Any

import structlog
import uvloop
import zmq

from conf import process
from conf.load import load
from conf.settings import Settings
from workers.proxy import BRANCH_PREFIX, CONN_PARAM
from workers.service import Worker

BATCH = 256


def response(port: int, i: int, tag: str | None, ours: bool = True) -> bytes:
    host = "127.0.0.1" if ours else "192.0.2.7"
    param = f";{CONN_PARAM}={tag}" if tag is not None else ""
    return (
        f"SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TCP {host}:{port};branch={BRANCH_PREFIX}{i:016x}.00000000{param}\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5063;branch=z9hG4bK-6655-{i}-0;received=127.0.0.1;"
        f"rport=40000\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5063>;tag=6655SIPpTag00{i}\r\n"
        f"To: service <sip:service@127.0.0.1:5060>;tag=6648SIPpTag01{i}\r\n"
        f"Call-ID: {i}-6655@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:127.0.0.1:5080;transport=TCP>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def messages(kind: str, count: int, port: int, worker: Worker) -> list[bytes]:
    out = []
    for i in range(count):
        if kind == "bare":
            tag: str | None = f"ingress.{i}-{100000 + i}~{i}"
        elif kind == "badmac":
            tag = f"ingress.{i}-{100000 + i}~{i}~{i:020x}"
        elif kind == "genuine":
            tag = worker.proxy.tags.mint("ingress.1-100", i)
        else:
            tag = None
        out.append(response(port, i, tag, ours=kind != "stray"))
    return out


def measure(worker: Worker, payloads: list[bytes]) -> float:
    """µs of CPU per message for ``payloads`` through ``_on_batch`` in batches of BATCH."""
    meta: list[Any] = ["udp", "192.0.2.99", 5060, 0, "127.0.0.1", 5060, time.monotonic()]
    t0 = time.process_time()
    for start in range(0, len(payloads), BATCH):
        chunk = payloads[start : start + BATCH]
        worker._on_batch("ingress.1-100", [meta] * len(chunk), chunk)
    return (time.process_time() - t0) / len(payloads) * 1e6


async def bench(settings: Settings, count: int, repeats: int) -> dict[str, float]:
    ctx: zmq.Context[Any] = zmq.Context()
    worker = Worker(settings, f"bench-{id(settings)}", ctx)
    port = settings.listen[0].port
    process._tune_gc()  # as a worker process runs (conf/process.py)
    out: dict[str, float] = {}
    try:
        for kind in ("bare", "badmac", "stray", "genuine"):
            payloads = messages(kind, count, port, worker)
            out[kind] = min(measure(worker, payloads) for _ in range(repeats))
        counters = worker.meter.counters
        expect = repeats * count
        assert counters["drop_forged_tag"] == 2 * expect, counters
        assert counters["drop_stray_response"] == expect, counters
        assert counters["drop_unknown_ingress"] == expect, counters
    finally:
        worker.close()
        ctx.destroy(linger=0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", default="conf/sipline.toml")
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mode", choices=["stateless", "stateful"], default=None,
                    help="override [proxy] mode")  # fmt: skip
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    settings = load(args.conf)
    run_dir = tempfile.mkdtemp(prefix="sipline-bench-forged-")
    settings = dataclasses.replace(settings, node=dataclasses.replace(settings.node,
                                                                      run_dir=run_dir))  # fmt: skip
    if args.mode:
        settings = dataclasses.replace(settings, proxy=dataclasses.replace(settings.proxy,
                                                                           mode=args.mode))  # fmt: skip
    try:
        res = uvloop.run(bench(settings, args.count, args.repeats))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    mode = settings.proxy.mode
    print(f"worker CPU per response ({mode}, {args.count} each, min of {args.repeats}):")
    for kind, us in res.items():
        print(f"  {kind:8} {us:6.2f} µs")


if __name__ == "__main__":
    main()
