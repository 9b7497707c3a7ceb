#!/usr/bin/env python3
"""CPU per call of each sipline process under a fixed sipp load, and an optional py-spy
profile of the ingress (issue #16).

Method
------
    sipp -sn uac --> 127.0.0.1:PORT (sipline, 1 worker) --> 127.0.0.1:UAS_PORT sipp -sn uas

A node is started with honcho (``SIPLINE_CONF``: UDP only, on free ports, one route to the
UAS, ``[proxy] mode`` as asked, ``--dialogs``: ``[dialogs]`` with a CDR file, so the workers
hand their dialog deltas to the state plane's mirror). A fresh UAS and then the UAC run ``--calls`` calls at
``--rate`` calls/s, no hold time. While the UAC runs, every process of the node's tree is
sampled from ``/proc/PID/stat`` (utime + stime); each process's CPU over the UAC's run is
divided by the calls the UAC completed: **CPU µs per call per process** (``honcho``: honcho's
manager and its helper processes, one per child, which relay every process's log lines). CPU time, not wall
time: on a shared box other processes' bursts move wall time far more than the CPU a process
spends on its own messages (they do change batch sizes, so repeat and take medians).

``--py-spy PATH`` records the ingress (``--py-spy-proc worker``: the worker) with py-spy (``--py-spy-out``: raw folded stacks) for
the UAC's run. Rates well below saturation keep the figure about the messages, not about a
retransmission spiral; a run whose UAC saw retransmissions says so.

Bounds: the UAC stops after ``calls/rate + 20`` s (``-timeout``), ``timeout`` kills either
sipp 15 s after that; the UAS is stopped once its stat file shows no open call or after 30 s.
Everything started is stopped at the end, also on errors and Ctrl-C.

    python3 bench/ingress_load.py --rate 1500 --calls 15000 --repeats 3
    python3 bench/ingress_load.py --rate 1500 --calls 15000 --repeats 3 --flush-ms 0
    python3 bench/ingress_load.py --mode stateful --dialogs --rate 600 --calls 6000
    python3 bench/ingress_load.py --mode stateful --dialogs --workers 2 --rate 1000 --calls 20000 \
        --toml '[transactions]\nmax_transactions = 262144' --repeats 3
    python3 bench/ingress_load.py --mode stateful --dialogs --rate 200 --calls 3000 --repeats 3
    python3 bench/ingress_load.py --mode stateful --dialogs --dialogs-key 'cdr_log = "all"' --threads
    python3 bench/ingress_load.py --rate 1500 --calls 15000 --py-spy /path/py-spy --py-spy-out /tmp/ing.txt
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import (
    CLK_TCK,
    HOST,
    Group,
    free_port,
    last_stats_row,
    node_config,
    start_node,
    stop_uas_drained,
    udp_port_bound,
    wait_ready,
)


def _name(pid: int) -> str | None:
    """``ingress``, ``worker``, ... for a sipline process (its cmdline), else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace") for a in argv if a]
    for i, w in enumerate(words):
        if w.endswith("sipline") and i + 1 < len(words):
            return words[i + 1]
    return None


def _ticks(pid: int) -> int:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(f[11]) + int(f[12])


def _thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks of ``pid``'s threads: its main (Python) thread, and the rest (ZeroMQ's I/O
    thread, honcho's readers) summed as ``other``."""
    out = {"main": 0, "other": 0}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out["main" if int(tid) == pid else "other"] += int(f[11]) + int(f[12])
    return out


def run_once(group: Group, args: argparse.Namespace, tmp: Path, n: int) -> dict[str, float]:
    port, uas_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    conf = tmp / f"node-{n}.toml"
    run_dir = f"/tmp/slload-{os.getpid()}-{n}"
    node_config(conf, name=f"load-{n}", run_dir=run_dir, port=port, mode=args.mode,
                uas_port=uas_port, stats_interval_s=5.0)
    with conf.open("a") as f:
        if args.flush_ms is not None:
            f.write(f"\n[bus]\nflush_ms = {args.flush_ms}\n")
        if args.dialogs:  # the stateful case: dialogs and a CDR file
            f.write(f'\n[dialogs]\nenabled = true\ncdr_file = "{tmp / f"cdr-{n}.jsonl"}"\n')
            for line in args.dialogs_key:
                f.write(line + "\n")
        if args.toml:
            f.write("\n" + args.toml.replace("\\n", "\n") + "\n")
    log = tmp / f"node-{n}.log"
    node = start_node(group, conf, args.workers, log)
    spy = None
    try:
        if not wait_ready(port):
            raise RuntimeError(f"node not ready, see {log}")
        # honcho relays every process's log lines (a CDR line per call): its manager and the
        # one helper process per child that reads the child's stdout (multiprocessing) count
        procs = {pid: _name(pid) or "honcho" for pid in Group.tree_pids(node.pid)}
        common = ["-i", HOST, "-bind_local", "-buff_size", "4194304", "-nostdin",
                  "-trace_stat", "-fd", "1", "-recv_timeout", "10000"]
        uas_stf, uac_stf = tmp / f"uas-{n}.csv", tmp / f"uac-{n}.csv"
        secs = args.calls // args.rate + 20
        uas = group.start(["timeout", "-k", "5", str(secs + 45), "sipp", "-sn", "uas",
                           "-p", str(uas_port), *common, "-stf", str(uas_stf),
                           "-timeout", f"{secs + 30}s"],
                          cwd=tmp, stdout=(tmp / f"uas-{n}.out").open("w"),
                          stderr=subprocess.STDOUT)  # fmt: skip
        end = time.monotonic() + 10
        while not udp_port_bound(uas_port) and time.monotonic() < end:
            time.sleep(0.1)  # polling step, bounded by the deadline
        before = {pid: _ticks(pid) for pid in procs}
        threads_before = {pid: _thread_ticks(pid) for pid in procs} if args.threads else {}
        if args.py_spy:
            target = next(pid for pid, name in procs.items() if name == args.py_spy_proc)
            mode = "--native" if args.py_spy_native else "--nonblocking"  # native stops the target
            spy = group.start([args.py_spy, "record", "-p", str(target), "-r", "250", mode, "-f", "raw",
                               "-o", args.py_spy_out, "-d", str(secs)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
            time.sleep(1)  # py-spy attaches before the load starts
        t0 = time.monotonic()
        uac = group.start(["timeout", "-k", "5", str(secs + 15), "sipp", "-sn", "uac",
                           f"{HOST}:{port}", "-r", str(args.rate), "-m", str(args.calls),
                           *common, "-stf", str(uac_stf), "-timeout", f"{secs}s"],
                          cwd=tmp, stdout=(tmp / f"uac-{n}.out").open("w"),
                          stderr=subprocess.STDOUT)  # fmt: skip
        uac.wait()
        wall = time.monotonic() - t0
        group.procs.remove(uac)
        after = {pid: _ticks(pid) for pid in procs}
        threads_after = {pid: _thread_ticks(pid) for pid in procs} if args.threads else {}
        if spy is not None:
            os.kill(spy.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(timeout=30)
            group.procs.remove(spy)
        stop_uas_drained(group, uas, uas_stf, 30, 0.5)
    finally:
        group.stop(node)
        group.procs.remove(node)
        shutil.rmtree(run_dir, ignore_errors=True)
    row = last_stats_row(uac_stf)
    ok = int(row["SuccessfulCall(C)"])
    out: dict[str, float] = {"ok": ok, "failed": int(row["FailedCall(C)"]),
                             "retrans": int(row["Retransmissions(C)"]), "wall_s": wall}
    for pid, name in procs.items():
        us = (after[pid] - before[pid]) / CLK_TCK * 1e6 / max(ok, 1)
        out[name] = out.get(name, 0.0) + us
        for part in threads_after.get(pid, {}):
            t = threads_after[pid][part] - threads_before[pid].get(part, 0)
            key = f"{name}.{part}"
            out[key] = out.get(key, 0.0) + t / CLK_TCK * 1e6 / max(ok, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--mode", default="stateless", choices=("stateless", "stateful"))
    ap.add_argument("--rate", type=int, default=1500)
    ap.add_argument("--calls", type=int, default=15000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="worker processes (the issue's stateful case: 2)")
    ap.add_argument("--dialogs", action="store_true", help="[dialogs] with a CDR file (use --mode stateful)")
    ap.add_argument("--dialogs-key", action="append", default=[],
                    help='a line for [dialogs], e.g. \'cdr_log = "all"\' (repeatable)')
    ap.add_argument("--toml", default="",
                    help="TOML appended to the node's config (other sections; \\n for newlines)")
    ap.add_argument("--flush-ms", type=int, default=None, help="[bus] flush_ms (default: its default)")
    ap.add_argument("--threads", action="store_true",
                    help="also split each process's CPU: main thread, other threads")
    ap.add_argument("--py-spy", default="", help="path of py-spy: record the ingress")
    ap.add_argument("--py-spy-out", default="/tmp/ingress-pyspy.txt")
    ap.add_argument("--py-spy-native", action="store_true",
                    help="C frames too (py-spy --native; it pauses the process per sample)")
    ap.add_argument("--py-spy-proc", default="ingress", help="the process to record")
    args = ap.parse_args()
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found")
    if args.calls > 200_000:
        raise SystemExit("--calls above 200 000: keep the load bounded")
    group = Group()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-load-"))
    rows = []
    try:
        for n in range(args.repeats):
            r = run_once(group, args, tmp, n)
            rows.append(r)
            print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in r.items()), flush=True)  # fmt: skip
    finally:
        group.stop_all()
    for key in ("ingress", "worker", "stateplane", "timers", "honcho"):
        vals = sorted(r.get(key, 0.0) for r in rows)
        print(f"{key}: median {vals[len(vals) // 2]:.1f} us CPU per call "
              f"({', '.join(f'{v:.1f}' for v in vals)})")
    nodes = sorted(sum(r.get(k, 0.0) for k in ("ingress", "worker", "stateplane", "timers", "honcho"))
                   for r in rows)
    print(f"node: median {nodes[len(nodes) // 2]:.1f} us CPU per call ({', '.join(f'{v:.1f}' for v in nodes)})")
    print(f"(files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
