#!/usr/bin/env python3
"""How long a worker takes to stop on SIGTERM, phase by phase, idle and under a small load.

Method
------
    sipp -sn uac --> node (honcho: ``--ingresses`` ingresses, one worker, timers,
                     stateplane) + one worker started by hand --> sipp -sn uas

For each mode (``stateless``: no dialogs; ``dialogs``: stateful, dialogs, a CDR file and
replication) and each load (``idle``; ``load``: sipp places ``--rate`` calls/s, each held
``--hold-ms``, for at most ``--calls`` calls), a fresh node is started and the hand-started
worker is stopped with SIGTERM ``--repeats`` times (a new one is started after each stop).
Each stop reads the worker's log:

    signal      SIGTERM sent -> the worker's socket file removed (``worker_leaving``)
    leave       "down" -> each ingress's LEFT (``worker_released``: left_ms per ingress)
    quiet       ``process.until_quiet`` after the last LEFT
    jobs, cdrs, close, sockets   ``Worker.aclose`` and the context (``worker_stopped``)
    exit        ``worker_stopped`` -> the process reaped (interpreter and loop teardown)

and the CPU of the phases up to ``sockets`` (``cpu_ms``, the worker's own process time), and
of the whole stop, exit included, from its rusage at exit less ``/proc/<pid>/stat`` just
before the signal (``cpu_rusage_ms``, to a clock tick: 10 ms). The machine's 1-minute load
average is printed with each figure: on a shared box the wall times are only as good as that.

With ``--silent-ingress`` the node also holds an ingress of an older release, one that never
says ``LEFT`` (a bare PULL socket in the run directory).

Bounds: sipp stops after ``--calls`` calls or ``calls/rate + 60`` s; each stop waits 15 s at
most; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import CLK_TCK, HOST, REPO, Group, free_port, route_to, wait_ready

VENV_BIN = REPO / ".venv" / "bin"
#: ``--silent-ingress``: an ingress of an older release, which reads what workers send and
#: never says ``LEFT`` (a PULL socket bound where an ingress's is, in the run directory)
SILENT_INGRESS = """
import os, sys, zmq
ctx = zmq.Context()
pull = ctx.socket(zmq.PULL)
pull.bind(f"ipc://{sys.argv[1]}/ingress-ingress.9-{os.getpid()}.ipc")
while True:
    pull.recv_multipart()
"""


def config(path: Path, *, run_dir: str, port: int, uas_port: int, cdr: Path,
           dialogs: bool) -> None:  # fmt: skip
    state = f"""
[proxy]
mode = "stateful"
record_route = true

[dialogs]
enabled = true
cdr_file = "{cdr}"

[stateplane]
replicate = true
""" if dialogs else "\n[proxy]\nrecord_route = true\n"
    path.write_text(f"""
[node]
name = "stopbench"
run_dir = "{run_dir}"

[[listen]]
transport = "udp"
address = "{HOST}"
port = {port}
{state}
{route_to(f"{HOST}:{uas_port}", stats_interval_s=0.5)}""")


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        brace = line.find("{")
        if brace >= 0 and f'"{name}"' in line:
            try:
                ev = json.loads(line[brace:])
            except ValueError:
                continue
            if ev.get("event") == name:
                out.append(ev)
    return out


def ts(ev: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(ev["timestamp"])).timestamp()


def joined_by(log: Path, ident: str) -> int:
    """How many ingresses logged ``worker_joined`` for ``ident``."""
    return len({e["proc"] for e in events(log, "worker_joined")
                if e.get("worker") == ident and str(e["proc"]).startswith("ingress")})


def busy(wlog: Path) -> bool:
    return any(float(e.get("msgs_in_per_s", 0)) > 0 for e in events(wlog, "load_stats"))


def cpu_s(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def wait_for(pred: Any, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)  # polling step, bounded by the deadline
    return False


def stop_one(group: Group, proc: subprocess.Popen[Any], log: Path) -> dict[str, Any]:
    """SIGTERM ``proc``, reap it, and read where its time went."""
    cpu0 = cpu_s(proc.pid)
    load = float(Path("/proc/loadavg").read_text().split()[0])
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 15
    while not (reaped := os.wait4(proc.pid, os.WNOHANG))[0]:
        if time.monotonic() > end:
            proc.kill()
        time.sleep(0.001)  # polling step, bounded by the deadline (then SIGKILL)
    t_exit = time.time()
    _, status, usage = reaped
    proc.returncode = os.waitstatus_to_exitcode(status)
    group.procs.remove(proc)
    leaving, released = events(log, "worker_leaving"), events(log, "worker_released")
    stopped = events(log, "worker_stopped")
    row: dict[str, Any] = {"rc": proc.returncode, "load1": load,
                           "wall_ms": round((t_exit - t0) * 1000, 1),
                           # the exit included; /proc counts in clock ticks (10 ms)
                           "cpu_rusage_ms": round((usage.ru_utime + usage.ru_stime - cpu0) * 1000)}
    if leaving:
        row["signal_ms"] = round((ts(leaving[-1]) - t0) * 1000, 1)
    if released:
        row["left_ms"] = released[-1].get("left_ms")
        row["holding"] = released[-1].get("holding")
    if stopped:
        row.update({k: v for k, v in stopped[-1].items() if k.endswith("_ms")})
        row["exit_ms"] = round((t_exit - ts(stopped[-1])) * 1000, 1)
    return row


def run(args: argparse.Namespace, dialogs: bool, loaded: bool, tmp: Path) -> list[dict[str, Any]]:
    group = Group()
    tag = f"{'d' if dialogs else 's'}{'l' if loaded else 'i'}"
    run_dir = f"/tmp/slstop-{os.getpid()}-{tag}"
    port, uas_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    conf, cdr, log = tmp / f"{tag}.toml", tmp / f"{tag}.cdr", tmp / f"{tag}.log"
    config(conf, run_dir=run_dir, port=port, uas_port=uas_port, cdr=cdr, dialogs=dialogs)
    env = dict(os.environ, SIPLINE_CONF=str(conf), PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    secs = args.calls // args.rate + 60
    common = ["-i", HOST, "-nostdin", "-trace_stat", "-fd", "1"]
    rows = []
    try:
        group.start(["timeout", "-k", "5", str(secs + 30), "sipp", "-sn", "uas", "-p",
                     str(uas_port), *common, "-stf", str(tmp / f"{tag}-uas.csv")], cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        group.start([str(VENV_BIN / "honcho"), "-f", "Procfile", "start", "-c",
                     f"worker=1,ingress={args.ingresses}"], cwd=REPO, env=env,
                    stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        if not wait_ready(port):
            raise RuntimeError(f"node not ready, see {log}")
        if args.silent_ingress:
            group.start([str(VENV_BIN / "python"), "-c", SILENT_INGRESS, run_dir])
        if loaded:
            group.start(["timeout", "-k", "5", str(secs + 15), "sipp", "-sn", "uac",
                         f"{HOST}:{port}", "-r", str(args.rate), "-m", str(args.calls),
                         "-d", str(args.hold_ms), *common, "-timeout", f"{secs}s",
                         "-stf", str(tmp / f"{tag}-uac.csv")], cwd=tmp,
                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        for n in range(args.repeats):
            wlog = tmp / f"{tag}-worker{n}.log"
            worker = group.start([str(VENV_BIN / "sipline"), "worker"], cwd=REPO, env=env,
                                 stdout=wlog.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
            ident = f"worker-{worker.pid}"
            # every ingress counts it (honcho's log), and under load it has had calls
            if not wait_for(lambda i=ident: joined_by(log, i) >= args.ingresses, 30):
                raise RuntimeError(f"worker {ident} not seen, see {log}")
            if loaded and not wait_for(lambda w=wlog: busy(w), 30):
                raise RuntimeError(f"no traffic reached {ident}, see {wlog}")
            time.sleep(args.settle_s)  # its dialogs and transactions build up
            row = stop_one(group, worker, wlog)
            row.update(mode="dialogs" if dialogs else "stateless", load="load" if loaded else "idle")
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        group.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ingresses", type=int, default=2)
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--hold-ms", type=int, default=2000)
    ap.add_argument("--settle-s", type=float, default=1.0, help="wait before each stop")
    ap.add_argument("--silent-ingress", action="store_true",
                    help="add an ingress that never says LEFT (an older release)")
    ap.add_argument("--mode", choices=("stateless", "dialogs", "both"), default="both")
    ap.add_argument("--load", choices=("idle", "load", "both"), default="both")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-stop-"))
    modes = [m == "dialogs" for m in ("stateless", "dialogs") if args.mode in (m, "both")]
    loads = [x == "load" for x in ("idle", "load") if args.load in (x, "both")]
    for dialogs in modes:
        for loaded in loads:
            run(args, dialogs, loaded, tmp)
    print(f"# logs in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
