#!/usr/bin/env python3
"""REGISTERs per second through sipline's registrar, per cacheDB backend.

Method
------
For each backend (``local://``: the node's stateplane; ``redis://``: a redis-server this
script starts on a free loopback port, no persistence; ``memcached://``: a memcached it
starts likewise) the script writes a config into a temp dir (UDP on 127.0.0.1:``--port``,
``[registrar] enabled = true`` with that ``cachedb_url``, ``[proxy] mode`` as asked, no
route: only REGISTERs are sent) and starts the node with
``honcho -f Procfile start -c worker=N`` and ``SIPLINE_CONF``. It is ready when it answers an
OPTIONS with ``Max-Forwards: 0``.

Each step runs ``sipp -sf register.xml 127.0.0.1:PORT -r R -m R*duration -buff_size 4194304
-trace_stat`` on a copy of ``tests/e2e/scenarios/register.xml`` whose users are renamed
``b<backend>s<step>user<n>``: every step registers a fresh set of AORs (a new binding each,
lock + read + write in the cacheDB), never refreshes of the previous step's, and no AOR
reaches ``max_contacts_per_aor``. A step passes with < 1 % failed REGISTERs, counted as
``(planned - successful) / planned`` (sipp's failed, unfinished and never-sent REGISTERs all
count), and an effective rate (REGISTERs sent / time until the last was sent, from sipp's
once-a-second stat rows) >= 95 % of the asked rate. Steps stop at the first failure.

Bounds: sipp ``-timeout duration+margin``, ``-recv_timeout 5000`` (a REGISTER's 200 waits at
most 5 s; register.xml retransmits at 500 ms), and ``timeout`` kills sipp 15 s later. The
CPU of the node's process tree (all honcho children, by session) over each step is
reported as % of one core. Everything started (node, redis-server, memcached, sipp) runs
in its own session and is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import shutil
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
    REPO,
    Group,
    elapsed_s,
    free_port,
    node_config,
    start_node,
    stat_rows,
    udp_port_bound,
    wait_ready,
)

SCENARIO = REPO / "tests" / "e2e" / "scenarios" / "register.xml"


def start_backend(group: Group, backend: str, tmp: Path) -> str:
    if backend == "local":
        return "local://"
    port = free_port()
    if backend == "redis":
        group.start(["redis-server", "--port", str(port), "--bind", HOST, "--save", "",
                     "--appendonly", "no", "--dir", str(tmp), "--daemonize", "no"],
                    stdout=(tmp / "redis.log").open("w"), stderr=subprocess.STDOUT)
        url = f"redis://{HOST}:{port}/0"
    elif backend == "memcached":
        root = ["-u", "root"] if os.geteuid() == 0 else []
        group.start(["memcached", "-l", HOST, "-p", str(port), "-U", "0", "-m", "256", *root],
                    stdout=(tmp / "memcached.log").open("w"), stderr=subprocess.STDOUT)
        url = f"memcached://{HOST}:{port}"
    else:
        raise SystemExit(f"unknown backend {backend}")
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{backend} did not start on {port}")


def run_step(group: Group, node_sid: int, backend_pid: int | None, port: int, tmp: Path,
             tag: str, rate: int,
             duration: int, margin: int) -> dict[str, object]:
    planned = rate * duration
    scen = tmp / f"register-{tag}.xml"
    scen.write_text(SCENARIO.read_text().replace("user[call_number]",
                                                 f"{tag}user[call_number]"))
    stf = tmp / f"step-{tag}.csv"
    cmd = ["timeout", "-k", "5", str(duration + margin + 15),
           "sipp", "-sf", str(scen), f"{HOST}:{port}", "-i", HOST, "-bind_local",
           "-r", str(rate), "-m", str(planned), "-buff_size", "4194304", "-nostdin",
           "-trace_stat", "-stf", str(stf), "-fd", "1",
           "-timeout", f"{duration + margin}s", "-recv_timeout", "5000"]
    bticks0 = Group.cpu_ticks(backend_pid) if backend_pid else 0
    ticks0, t0 = Group.cpu_ticks(node_sid), time.monotonic()
    p = group.start(cmd, stdout=(tmp / f"sipp-{tag}.out").open("w"), stderr=subprocess.STDOUT,
                    cwd=tmp)
    p.wait()
    group.procs.remove(p)
    wall = time.monotonic() - t0
    cpu = (Group.cpu_ticks(node_sid) - ticks0) / CLK_TCK / wall * 100
    bcpu = ((Group.cpu_ticks(backend_pid) - bticks0) / CLK_TCK / wall * 100
            if backend_pid else 0.0)
    rows = stat_rows(stf)
    last = rows[-1]
    created = int(last["TotalCallCreated"])
    ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
    retrans = int(last["Retransmissions(C)"])
    # time the last REGISTER was sent, interpolated between sipp's once-a-second rows
    t_last, c_prev, t_prev = 0.0, 0, 0.0
    for r in rows:
        c, t = int(r["TotalCallCreated"]), elapsed_s(r["ElapsedTime(C)"])
        if c >= created:
            t_last = t_prev + (created - c_prev) / max(c - c_prev, 1) * (t - t_prev)
            break
        c_prev, t_prev = c, t
    eff = created / t_last if t_last > 0 else 0.0
    fail_pct = (planned - ok) / planned * 100
    rtd = f"{elapsed_s(last['ResponseTime1(C)']) * 1000:.0f} ms"  # mean REGISTER -> 200
    return {"rate": rate, "planned": planned, "sent": created, "ok": ok, "failed": failed,
            "retrans": retrans, "eff": eff, "fail_pct": fail_pct, "cpu": cpu, "bcpu": bcpu,
            "rtd": rtd,
            "passed": fail_pct < 1.0 and eff >= 0.95 * rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--backends", default="local,redis,memcached")
    ap.add_argument("--rates", default="500,1000,1500,2000,2500,3000,4000,5000")
    ap.add_argument("--duration", type=int, default=5, help="s per step (-m = rate*duration)")
    ap.add_argument("--margin", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--mode", default="stateful", choices=("stateful", "stateless"))
    ap.add_argument("--port", type=int, default=5160)
    ap.add_argument("--budget", type=int, default=600, help="no step starts after this many s")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found")
    if udp_port_bound(args.port):
        raise SystemExit(f"UDP {HOST}:{args.port} is taken")
    t_start = time.monotonic()
    results: dict[str, list[dict[str, object]]] = {}
    group = Group()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-reg-"))
    try:
        for bi, backend in enumerate(args.backends.split(",")):
            n_before = len(group.procs)
            url = start_backend(group, backend, tmp)
            backend_pid = group.procs[-1].pid if len(group.procs) > n_before else None
            conf = tmp / f"{backend}.toml"
            run_dir = f"/tmp/slreg-{os.getpid()}-{bi}"
            node_config(conf, name=f"reg{bi}", run_dir=run_dir, port=args.port,
                        mode=args.mode, registrar_url=url)
            log = tmp / f"node-{backend}.log"
            node = start_node(group, conf, args.workers, log)
            if not wait_ready(args.port):
                print(f"{backend}: node not ready, see {log}", file=sys.stderr)
                group.stop(node)
                continue
            print(f"== {backend} ({url}), {args.workers} worker(s), mode {args.mode}")
            print(f"{'rate':>6} {'sent':>7} {'ok':>7} {'failed':>6} {'retr':>6} "
                  f"{'eff/s':>7} {'fail%':>6} {'node cpu%':>9} {'db cpu%':>7} {'rtd avg':>8}"
                  "  verdict")
            results[backend] = []
            for si, rate in enumerate(rates):
                if time.monotonic() - t_start > args.budget:
                    print("budget spent")
                    break
                r = run_step(group, node.pid, backend_pid, args.port, tmp, f"b{bi}s{si}", rate,
                             args.duration, args.margin)
                results[backend].append(r)
                print(f"{rate:>6} {r['sent']:>7} {r['ok']:>7} {r['failed']:>6} "
                      f"{r['retrans']:>6} {r['eff']:>7.0f} {r['fail_pct']:>6.2f} "
                      f"{r['cpu']:>9.1f} {r['bcpu']:>7.1f} {r['rtd']:>8}  "
                      f"{'pass' if r['passed'] else 'FAIL'}",
                      flush=True)
                if not r["passed"]:
                    break
            group.stop(node)
            for p in list(group.procs):  # the backend server
                group.stop(p)
                group.procs.remove(p)
            shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        group.stop_all()
    print("\n| backend | best rate, < 1 % failed (REGISTER/s) | node CPU at it "
          "(% of one core) | cacheDB server CPU |")
    print("|---|---:|---:|---:|")
    for backend, rs in results.items():
        best = max((r for r in rs if r["passed"]), key=lambda r: r["rate"], default=None)
        if best is None:
            print(f"| {backend} | none passed | | |")
        else:
            print(f"| {backend} | {best['rate']} | {best['cpu']:.0f} % | {best['bcpu']:.0f} % |")
    print(f"(files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
