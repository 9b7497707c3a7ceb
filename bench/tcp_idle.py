"""Memory per idle TCP connection held by one ingress's TcpHub (target: <= 4 KB, 10 000 held).

A child process runs a real ``TcpHub`` on uvloop, listening on a free loopback port; this
process opens N client connections to it and reads the child's VmRSS (``/proc/PID/status``,
after ``gc.collect()``) before and after. Kernel socket buffers are not process memory and are
not counted (they are not in RSS either). A warm-up batch is opened before the baseline so
one-time growth (dict resizes, allocator arenas) is not charged to the measured batch.

    .venv/bin/python bench/tcp_idle.py                 # 10 000 connections
    .venv/bin/python bench/tcp_idle.py -n 2000 --ping  # each sends a CRLFCRLF keep-alive first
    .venv/bin/python bench/tcp_idle.py --trace         # plus the child's top tracemalloc growth

Bounded: N <= 60 000 and every wait has a deadline. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 120.0


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < need:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors needed")


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# -- child: the server ---------------------------------------------------------------------------


def serve(trace: bool) -> None:
    """Run a TcpHub; answer each stdin line with one JSON line of its state."""
    import tracemalloc

    import uvloop

    sys.path.insert(0, str(REPO))
    from conf.settings import Tcp
    from ingress.tcp import TcpHub

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cfg = Tcp(max_connections=100_000, max_connections_per_ip=100_000)
        hub = TcpHub(cfg, lambda conn, data: None, lambda conn, exc: None)
        _, port = await hub.listen("127.0.0.1", 0)
        done = asyncio.Event()
        snapshot: list[Any] = []

        def on_line() -> None:
            line = sys.stdin.readline().strip()
            if not line or line == "quit":
                done.set()
                return
            gc.collect()
            state: dict[str, Any] = {"conns": len(hub.conns), "rss": rss_bytes()}
            if trace and line == "base":
                snapshot[:] = [tracemalloc.take_snapshot()]
            if trace and line == "after" and snapshot:
                diff = tracemalloc.take_snapshot().compare_to(snapshot[0], "lineno")
                state["top"] = [str(d) for d in diff[:12]]
            print(json.dumps(state), flush=True)

        loop.add_reader(sys.stdin.fileno(), on_line)
        print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
        await done.wait()
        loop.remove_reader(sys.stdin.fileno())
        await hub.close()

    if trace:
        tracemalloc.start(5)
    uvloop.run(main())


# -- parent: the clients ---------------------------------------------------------------------------


class Child:
    def __init__(self, trace: bool) -> None:
        argv = [sys.executable, __file__, "--serve"] + (["--trace"] if trace else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO)  # fmt: skip
        self.hello = self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.read()

    def wait_conns(self, n: int) -> dict[str, Any]:
        end = time.monotonic() + DEADLINE_S
        while (state := self.ask("poll"))["conns"] < n:
            if time.monotonic() > end:
                raise RuntimeError(f"server holds {state['conns']} of {n} connections")
            time.sleep(0.05)
        return state

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def open_clients(port: int, n: int, ping: bool, socks: list[socket.socket]) -> None:
    """Open n connections, spreading source addresses over 127.0.0.1-127.0.0.8 so no one
    source runs out of ephemeral ports."""
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.0.{1 + i % 8}", 0))
        s.connect(("127.0.0.1", port))
        if ping:
            s.sendall(b"\r\n\r\n")
        socks.append(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="connections measured (default 10000)")
    ap.add_argument("--warmup", type=int, default=500, help="connections opened before baseline")
    ap.add_argument("--ping", action="store_true", help="each client sends CRLFCRLF once")
    ap.add_argument("--trace", action="store_true", help="tracemalloc in the server")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.trace)
        return
    if not 0 < args.n <= 60_000:
        sys.exit("-n must be in 1..60000")
    total = args.n + args.warmup
    raise_nofile(total + 256)  # inherited by the child, which holds the other ends
    child = Child(args.trace)
    socks: list[socket.socket] = []
    try:
        port = child.hello["port"]
        open_clients(port, args.warmup, args.ping, socks)
        base = child.wait_conns(args.warmup)
        base = child.ask("base")
        t0 = time.monotonic()
        open_clients(port, args.n, args.ping, socks)
        after = child.wait_conns(total)
        after = child.ask("after")
        took = time.monotonic() - t0
        per = (after["rss"] - base["rss"]) / args.n
        print(f"server pid {child.hello['pid']}: {after['conns']} connections held")
        print(f"RSS {base['rss'] / 2**20:.1f} MiB with {base['conns']} -> "
              f"{after['rss'] / 2**20:.1f} MiB with {after['conns']} "
              f"({args.n} opened in {took:.1f} s)")  # fmt: skip
        print(f"bytes per idle connection: {per:.0f} (target <= 4096)")
        for line in after.get("top", []):
            print("  ", line)
    finally:
        for s in socks:
            s.close()
        child.stop()


if __name__ == "__main__":
    main()
