"""Where a worker's memory per confirmed dialog goes: the worker's whole code path, in memory.

Usage (repo root):  .venv/bin/python bench/worker_memory.py [--calls 100000] [--rate 1000]
                    [--mode trace|rss] [--top 25]

Method. One process plays the worker as ``workers/service.py`` runs it with the config
``bench/dialog_rss.py`` writes (stateful, Record-Route, dialogs on, lifetimes in the timer
service): a ``StatefulProxy`` fed the bytes of sipp's ``uac``/``uas`` scenarios (INVITE with
SDP -> 100 and the forwarded INVITE; 180 and 200 from the UAS, answered as sipp's uas does
from the forwarded copy; the ACK for the 2xx), at ``--rate`` calls per second of simulated
time, its transaction and Timer C timers fired in deadline order as the loop would, and each
input's ``timer_ops`` handed to a real ``TimerClient`` (no timers process: its armed set is
what stays in the worker). Nothing ends the calls: they are held, as with sipp ``-d``.

Readings: a baseline after a few warm-up calls that end (BYE) and whose transactions expire;
"setup" right after the last call is placed (the INVITE transactions of the last 32 s are
alive: Timers L and M, RFC 6026); "steady" 33 s of simulated time later (none is).

- ``--mode trace``: tracemalloc at each reading, the growth split by structure (a deep size
  of each container the worker keeps per call, objects counted once, in the order listed)
  and by allocation site (the top ``--top`` lines).
- ``--mode rss``: no tracemalloc (it adds its own memory); VmRSS from /proc at each reading,
  as bench/dialog_rss.py reads the real worker's, and what pymalloc holds
  (``sys._debugmallocstats``: arenas allocated vs blocks in use).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import re
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from contextlib import redirect_stderr
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack
import zmq

from conf.load import from_dict
from conf.process import GC_GEN0_THRESHOLD
from ingress.sip import grammar, headers
from timers.client import TimerClient
from workers.proxy import Inbound, StatelessProxy
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

US, UAC_PORT, UAS_PORT = "127.0.0.1", 5061, 5080
SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
PID = 4242  # sipp puts its pid in tags and Call-IDs


def config(run_dir: str, rate: int) -> dict[str, Any]:
    """What bench/dialog_rss.py writes (``sipline_conf``), as a dict."""
    return {
        "node": {"name": "wmem", "run_dir": run_dir},
        "listen": [{"transport": "udp", "address": US, "port": 5060}],
        "proxy": {"record_route": True, "mode": "stateful"},
        "destination_set": [{"name": "uas", "destinations": [f"sip:{US}:{UAS_PORT}"],
                             "algorithm": "hash_call_id"}],
        "route": [{"name": "default", "to": "uas"}],
        "transactions": {"max_transactions": max(65536, 160 * rate)},
        "dialogs": {"enabled": True, "default_lifetime_s": 900.0},
    }


def uac(method: str, i: int, to_tag: str = "", cseq: int | None = None) -> bytes:
    """sipp ``-sn uac``'s INVITE / ACK / BYE of call ``i``."""
    body = SDP if method == "INVITE" else b""
    branch = f"z9hG4bK-{PID}-{i}-{ {'INVITE': 0, 'ACK': 4, 'BYE': 7}[method]}"
    return (
        f"{method} sip:service@{US}:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {US}:{UAC_PORT};branch={branch}\r\n"
        f"From: sipp <sip:sipp@{US}:{UAC_PORT}>;tag={PID}SIPpTag00{i}\r\n"
        f"To: service <sip:service@{US}:5060>{to_tag}\r\n"
        f"Call-ID: {i}-{PID}@{US}\r\n"
        f"CSeq: {cseq or (2 if method == 'BYE' else 1)} {method}\r\n"
        f"Contact: sip:sipp@{US}:{UAC_PORT}\r\nMax-Forwards: 70\r\n"
        "Subject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_LAST = re.compile(rb"^(Via|From|To|Call-ID|CSeq|Record-Route):[^\r\n]*", re.MULTILINE | re.IGNORECASE)


def uas_answer(req: bytes, status: int, i: int) -> bytes:
    """sipp ``-sn uas``'s answer to a forwarded request: its [last_*:] headers copied."""
    head = req.split(b"\r\n\r\n", 1)[0]
    lines = [m.group(0) for m in _LAST.finditer(head)]
    lines = [ln + f";tag={PID}SIPpTag01{i}".encode() if ln.lower().startswith(b"to:") else ln
             for ln in lines]  # fmt: skip
    body = SDP if status == 200 and req.startswith(b"INVITE") else b""
    reason = {180: b"Ringing", 200: b"OK"}[status]
    out = [b"SIP/2.0 %d %s" % (status, reason), *lines,
           f"Contact: <sip:{US}:{UAS_PORT};transport=UDP>".encode()]
    if body:
        out.append(b"Content-Type: application/sdp")
    out.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


class Worker:
    """The worker's per-input glue (``Worker._on_batch`` + ``_after_core``), without I/O."""

    def __init__(self, settings: Any, timers: TimerClient) -> None:
        self.core = StatefulProxy(settings, StatelessProxy(settings, RoutingTable(settings)),
                                  external_timers=True)  # fmt: skip
        self.timers = timers
        self.uac = ["udp", US, UAC_PORT, 0, US, 5060, 0.0]
        self.uas = ["udp", US, UAS_PORT, 0, US, 5060, 0.0]
        self.now = 0.0

    def feed(self, data: bytes, meta: list[Any]) -> list[Any]:
        # through msgpack as the bus receives it: fresh strings per message, as in a worker
        ingress, [m] = msgpack.unpackb(msgpack.packb(["ingress.1-1", [meta]]))
        inb = Inbound(ingress, m[0], m[1], m[2], m[3], m[4], m[5])
        outs = self.core.handle(bytes(data), inb, self.now, 1.7e9 + self.now)
        self._after_core()
        return outs

    def _after_core(self) -> None:
        d = self.core.dialogs
        assert d is not None
        if d.timer_ops:
            ops, d.timer_ops = d.timer_ops, []
            for op in ops:
                if op[0] == "arm":
                    self.timers.arm(op[1], op[2], "dialog")
                else:
                    self.timers.cancel(op[1])
        d.take_cdrs()
        d.take_deltas()

    def advance(self, to: float) -> None:
        """Fire every core timer due up to ``to``, in deadline order."""
        while (at := self.core.next_deadline()) is not None and at <= to:
            self.now = max(self.now, at)
            self.core.handle_timer(self.now, 1.7e9 + self.now)
            self._after_core()
        self.now = to

    def call(self, i: int, hold: bool = True) -> None:
        down = [data for _, meta, data in self.feed(uac("INVITE", i), self.uac)
                if meta[2] == UAS_PORT]  # fmt: skip
        assert len(down) == 1, down
        for status in (180, 200):
            self.feed(uas_answer(down[0], status, i), self.uas)
        tag = f";tag={PID}SIPpTag01{i}"
        self.feed(uac("ACK", i, tag), self.uac)
        if not hold:
            for _, meta, data in self.feed(uac("BYE", i, tag), self.uac):
                if meta[2] == UAS_PORT:
                    self.feed(uas_answer(data, 200, i), self.uas)
        self.timers.flush()


def clear_codec_caches() -> None:
    """The parse caches are bounded (grammar.CACHE_MAX): not per dialog; counted apart."""
    for mod in (grammar, headers):
        for name in dir(mod):
            obj = getattr(mod, name)
            if name.endswith("_CACHE") and isinstance(obj, dict):
                obj.clear()


def deep_size(roots: Iterator[Any], seen: set[int]) -> int:
    """Bytes of everything reachable from ``roots`` not in ``seen`` (modules, types and
    functions are not followed: shared code, not per-call state)."""
    stack = list(roots)
    total = 0
    skip = (type, type(sys), type(deep_size), type(len))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def structures(w: Worker) -> dict[str, Any]:
    """The containers the worker keeps per call, in the order they are charged."""
    core, d = w.core, w.core.dialogs
    assert d is not None
    return {
        "dialog table (Dialog objects, keys, values)": lambda: [d._table],
        "dialog intern table": lambda: [d._intern],
        "dialog profiles": lambda: [d.profiles],
        "TimerClient armed set": lambda: [w.timers._armed],
        "transactions (servers, clients, heap, held)": lambda: [core.table._servers, core.table._held,
                                                          core.table._clients, core.table._heap],
        "Timer C heap": lambda: [core._timer_c],
    }


def sizes(w: Worker) -> dict[str, int]:
    seen: set[int] = set()
    out = {}
    # shared objects that are not per call: the settings and routing objects
    deep_size(iter([w.core.sl, w.core.dispatcher]), seen)
    for name, roots in structures(w).items():
        out[name] = deep_size(iter(roots()), seen)
    return out


def pymalloc() -> tuple[int, int]:
    """(arena bytes allocated, bytes in used blocks) from ``sys._debugmallocstats``."""
    buf = io.StringIO()
    fd = os.dup(2)
    with tempfile.TemporaryFile("w+") as f:
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(fd, 2)
            os.close(fd)
        f.seek(0)
        buf.write(f.read())
    text = buf.getvalue()
    arenas = int(re.search(r"# bytes in allocated blocks\s+=\s+([\d,]+)", text)[1].replace(",", ""))
    total = int(re.search(r"Total\s+=\s+([\d,]+)", text)[1].replace(",", ""))
    return total, arenas


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def run(args: argparse.Namespace) -> None:
    run_dir = tempfile.mkdtemp(prefix="wmem-")
    settings = from_dict(config(run_dir, args.rate))
    ctx: zmq.Context[Any] = zmq.Context()
    timers = TimerClient(ctx, settings, "worker.1-1", lambda fired: None)
    w = Worker(settings, timers)
    trace = args.mode == "trace"
    for i in range(50):  # warm-up: lazily built objects; these calls end and expire
        w.call(-1 - i, hold=False)
    w.advance(w.now + 40)
    gc.collect()  # conf/process.py _tune_gc, as every sipline process starts
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    readings: dict[str, Any] = {}

    def read(name: str) -> None:
        r: dict[str, Any] = {"dialogs": len(w.core.dialogs or ()), "txns": len(w.core.table),
                             "armed": len(timers)}  # fmt: skip
        if trace:
            clear_codec_caches()
            gc.collect()
            r["snap"] = tracemalloc.take_snapshot()
            r["traced"] = tracemalloc.get_traced_memory()[0]
            r["sizes"] = sizes(w)
        else:  # as the worker is: no collection forced, the codec's caches as they are
            r["rss_kb"] = rss_kb()
            r["pymalloc"] = pymalloc()
            r["gc_unreachable"] = gc.collect()  # after the reading: garbage it included
        readings[name] = r
        print(name, {k: v for k, v in r.items() if k != "snap"}, flush=True)

    if trace:
        tracemalloc.start(args.frames)
    read("baseline")
    t0 = w.now
    for i in range(args.calls):
        w.advance(t0 + i / args.rate)
        w.call(i)
    read("setup")
    w.advance(w.now + 33)
    read("steady")
    n = args.calls
    base = readings["baseline"]
    for name in ("setup", "steady"):
        r = readings[name]
        print(f"\n== {name}: {r['dialogs']} dialogs, {r['txns']} transactions, "
              f"{r['armed']} timers armed")
        if trace:
            print(f"traced growth: {(r['traced'] - base['traced']) / n:.0f} B per dialog")
            for k, v in r["sizes"].items():
                print(f"  {k:45s} {(v - base['sizes'][k]) / n:8.0f} B per dialog")
            stats = r["snap"].compare_to(base["snap"], "lineno")
            for s in stats[: args.top]:
                fr = s.traceback[0]
                print(f"  {s.size_diff / n:7.0f} B {s.count_diff / n:6.2f} blocks "
                      f"{fr.filename.rsplit('/', 2)[-2:]}:{fr.lineno}")
        else:
            a, u = r["pymalloc"]
            ba, bu = base["pymalloc"]
            print(f"RSS growth {(r['rss_kb'] - base['rss_kb']) * 1024 / n:.0f} B per dialog; "
                  f"pymalloc arenas {(a - ba) / n:.0f} B, blocks in use {(u - bu) / n:.0f} B")
    timers.close()
    ctx.term()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--mode", choices=("trace", "rss"), default="trace")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--frames", type=int, default=1)
    args = ap.parse_args()
    with redirect_stderr(sys.stderr):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
