"""Timer service lateness with 1 000 000 armed timers and 5 000 expiring per second.

Method:
1. Start a real ``sipline timers`` process on a fresh run directory (defaults, except the
   stats interval). In this process a worker end runs as a worker does: the real worker bus
   (PULL socket, heartbeats to ingress-* and timers-*) and a ``TimerClient``.
2. Arm ``--background`` timers (900 000) with deadlines after the run, in slices so the loop
   keeps heartbeating; wait until the service's ``load_stats`` says they are all armed.
3. Arm ``--window`` timers (100 000) expiring ``--rate`` per second (5 000) from 2 s on:
   1 000 000 armed in all. Every fire re-arms a new timer far ahead, so the armed count stays
   at 1 000 000 and the service takes 5 000 arms a second while it fires 5 000.
4. Drive for ``--seconds`` (20) past the first deadline, bounded, then count: fired, lost (a
   window timer whose deadline passed 1 s before the end and that never fired), doubled
   (delivered twice to the worker; also raw duplicates the client absorbed), and lateness
   p50/p99/max measured at the worker (delivery time - deadline, both CLOCK_MONOTONIC) and as
   the service reports it in ``load_stats``. RSS of the service per armed timer, too.

Run from the repo root:  .venv/bin/python bench/timers.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop
import zmq

from conf.load import load
from conf.loadstats import LoadMeter
from timers.client import Fired, TimerClient
from workers.bus import IngressBus

ARM_SLICE = 20_000


class ServiceLog:
    """The service's stdout JSON lines, read on a thread; keeps the load_stats lines."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.stats: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            (self.stats if e.get("event") == "load_stats" else self.events).append(e)

    def armed(self) -> int:
        return int(self.stats[-1]["armed"]) if self.stats else 0


class BenchWorker:
    def __init__(self, ctx: zmq.Context[Any], conf: str, far: float) -> None:
        settings = load(conf)
        self.ident = f"worker.bench-{os.getpid()}"
        self.far = far
        self.delivered: list[tuple[str, float, float]] = []  # key, deadline, delivered at
        self.raw: Counter[tuple[str, int]] = Counter()
        self.timers = TimerClient(ctx, settings, self.ident, self._on_fire)
        self.bus = IngressBus(ctx, settings.bus, settings.node.run_dir, self.ident,
                              lambda *_: None, LoadMeter(0), on_timer=self._on_timer)
        self.rearm = True
        self._n = 0

    def _on_timer(self, header: list[Any], payloads: list[bytes]) -> None:
        for m in header[1]:
            if m[0] == "f":
                self.raw[(m[1], m[5])] += 1
        self.timers.receive(header, payloads)

    def _on_fire(self, batch: list[Fired]) -> None:
        now = time.monotonic()
        for f in batch:
            self.delivered.append((f.key, f.deadline, now))
            if self.rearm:  # a new dialog for each one that ended: 1 000 000 stay armed
                self._n += 1
                self.timers.arm(f"new-{self._n}", self.far + self._n / 5000, "dialog")

    async def arm_many(self, prefix: str, n: int, first: float, rate: float) -> None:
        for i in range(0, n, ARM_SLICE):
            for j in range(i, min(n, i + ARM_SLICE)):
                self.timers.arm(f"{prefix}-{j}", first + j / rate, "dialog", b"dlg")
            await asyncio.sleep(0)


def _window_fired(w: BenchWorker) -> int:
    return sum(1 for k, _, _ in w.delivered if k.startswith("win-"))


def _pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _heartbeats(w: BenchWorker, stop: asyncio.Event) -> None:
    while not stop.is_set():
        w.bus.heartbeat()
        await asyncio.sleep(0.25)


async def _until(pred: Any, limit_s: float, what: str) -> None:
    end = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)


async def _until_quiet(pred: Any, limit_s: float) -> None:
    end = time.monotonic() + limit_s
    while not pred() and time.monotonic() < end:
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace, conf: str, svc: subprocess.Popen[bytes],
                slog: ServiceLog) -> dict[str, Any]:
    # as conf.process.run does for a worker: start-up objects out of the collector's way
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    ctx: zmq.Context[Any] = zmq.Context()
    t0 = time.monotonic()
    w = BenchWorker(ctx, conf, far=t0 + 3600)
    stop = asyncio.Event()
    beats = asyncio.create_task(_heartbeats(w, stop))
    try:
        await _until(lambda: w.timers.shards, 10, "timers process")
        await w.arm_many("bg", args.background, t0 + 1800, args.rate)
        arm_s = time.monotonic() - t0
        await _until(lambda: slog.armed() >= args.background, 120, "background armed")
        first = time.monotonic() + 2.0
        await w.arm_many("win", args.window, first, args.rate)
        rss_armed = _rss_kb(svc.pid)
        await asyncio.sleep(max(0.0, first + args.seconds - time.monotonic()))
        w.rearm = False
        end = time.monotonic()
        cutoff = end - 0.05  # what was due by now must arrive; wait for it, bounded
        want = sum(1 for j in range(args.window) if first + j / args.rate < cutoff)
        await _until_quiet(lambda: _window_fired(w) >= want, 5.0)
    finally:
        stop.set()
        await beats
        w.timers.close()
        w.bus.close()
        ctx.destroy(linger=0)
    due = {f"win-{j}" for j in range(args.window) if first + j / args.rate < cutoff}
    got = Counter(k for k, _, _ in w.delivered)
    late = [at - d for k, d, at in w.delivered if k.startswith("win-")]
    measured = [s for s in slog.stats if s.get("fired", 0) > 0]
    return {
        "armed": args.background + args.window,
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "arm_background_s": round(arm_s, 2),
        "fired": len(late),
        "due": len(due),
        "lost": len(due - set(got)),
        "doubled": sum(1 for n in got.values() if n > 1),
        "raw_duplicates_absorbed": sum(n - 1 for n in w.raw.values() if n > 1),
        "worker_late_p50_ms": round(_pct(late, 0.5) * 1000, 2),
        "worker_late_p99_ms": round(_pct(late, 0.99) * 1000, 2),
        "worker_late_max_ms": round(max(late, default=0.0) * 1000, 2),
        "within_50ms": round(sum(1 for x in late if x <= 0.050) / max(1, len(late)), 5),
        "service_late_p99_ms_worst": max((s["late_p99_ms"] for s in measured), default=0.0),
        "service_late_max_ms_worst": max((s["late_max_ms"] for s in measured), default=0.0),
        "service_busy_1s_during": [s["busy_1s"] for s in measured][-5:],
        "service_rss_mb": round(rss_armed / 1024, 1),
        "service_bytes_per_timer": round(rss_armed * 1024 / (args.background + args.window)),
        "adaptations": [e for e in slog.events if e.get("event") == "timers_adapted"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--background", type=int, default=900_000)
    p.add_argument("--window", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=5000.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--json")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="sl-tb-", dir="/tmp")
    conf = f"{tmp}/sipline.toml"
    Path(conf).write_text(f'[node]\nrun_dir = "{tmp}/run"\n[log]\nstats_interval_s = 1.0\n')
    os.mkdir(f"{tmp}/run", 0o700)  # our in-process workers bind in it before the service starts
    # TIMERS_PROFILE=out.prof runs the service under cProfile (written when it stops)
    prof_out = os.environ.get("TIMERS_PROFILE")
    prof = ["-m", "cProfile", "-o", prof_out] if prof_out else []
    svc = subprocess.Popen([sys.executable, *prof, "-m", "sipline.cli", "--conf", conf, "timers"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    slog = ServiceLog(svc)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            out = runner.run(asyncio.wait_for(bench(args, conf, svc, slog), 600))
    finally:
        svc.terminate()
        svc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if out["lost"] == 0 and out["doubled"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
