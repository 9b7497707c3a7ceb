#!/usr/bin/env python3
"""CPU time per call of a real stateless ingress and worker under a fixed offered load, with
no sipp: what the stateless path costs per message, without retransmission spirals (issue #16).

Method
------
    UAC socket --INVITE, ACK, BYE-->  ingress --> worker --> ingress --> UAS socket
    UAS socket --180, 200, 200----->  ingress --> worker --> ingress --> UAC socket

One ``sipline ingress`` and one ``sipline worker`` of ``--tree`` (default: this checkout; the
processes run on this interpreter with ``PYTHONPATH`` set to the tree, so another checkout's
own compiled build is used if it has one) on free ports, stateless, one route to the UAS
socket. This script plays both sipp ends from two UDP sockets: the six messages of a sipp
call (``bench/codec.py``'s, each call with its own Call-ID, branch and tags) leave at
``--rate`` calls/s, paced per millisecond; the responses carry a Via of the proxy's on top
(a stateless proxy checks that it is ours, not its hash), so nothing waits for a round trip
and the offered load is the same whatever the box does meanwhile. What the proxy forwards is
read and counted (six per call). The processes' CPU time is read from
``/proc/PID/task/*/schedstat`` (ns, every thread: ZeroMQ's I/O thread too) before the first
message and once the last forwarded one arrived, and divided by the calls forwarded (messages
read / 6): **µs of CPU per call, per process**; what was not forwarded in time is printed
(``lost``), and a run that lost more than 1 % says so: its figure is not one to compare.

CPU time, not wall time: other processes' bursts on a shared box move wall time far more than
the CPU a process spends on its messages (they change batch sizes, so alternate trees and
take medians). Bounded: ``--seconds`` of sending (at most 60), then at most 30 s waiting for
the forwarded messages; everything started is stopped at the end.

    .venv/bin/python bench/stateless_cpu.py --rate 3000 --seconds 5 --repeats 3
    .venv/bin/python bench/stateless_cpu.py --tree /tmp/old --rate 3000 --seconds 5
    .venv/bin/python bench/stateless_cpu.py --pure      # SIPLINE_PURE=1: no compiled modules
    .venv/bin/python bench/stateless_cpu.py --py-spy /path/py-spy --py-spy-proc ingress
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import HOST, REPO, Group, free_port, node_config, wait_ready
from codec import CALL
from rejects import cpu_ns

#: what the UAC and UAS sockets' messages name as their own port in codec.py's templates
UAC_PORT, NODE_PORT, UAS_PORT = b"5063", b"5060", b"5080"


def call_messages(i: int, uac: int, node: int, uas: int) -> list[tuple[bool, bytes]]:
    """Call ``i``'s six messages, (sent by the UAC, bytes), ports made ours."""
    out = []
    for k, m in enumerate(CALL):
        m = m.replace(b"{n:08d}", b"%08d" % i).replace(b"{n}", b"%d" % i)
        m = m.replace(b":" + NODE_PORT, b":%d" % node).replace(b":" + UAC_PORT, b":%d" % uac)
        m = m.replace(b":" + UAS_PORT, b":%d" % uas)
        out.append((k in (0, 3, 4), m))
    return out


def start(group: Group, tree: Path, conf: Path, role: str, log: Path, pure: bool) -> int:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    env.pop("HONCHO_PROCESS_NAME", None)
    if pure:
        env["SIPLINE_PURE"] = "1"
    run = "import sys; from sipline.cli import main; sys.exit(main(sys.argv[1:]))"
    p = group.start([sys.executable, "-c", run, role, "--conf", str(conf)], cwd=tree, env=env,
                    stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    return p.pid


def drain(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(65536)
        except BlockingIOError:
            return n
        n += 1


def run_once(args: argparse.Namespace, tmp: Path, n: int) -> dict[str, float]:
    group = Group()
    uac, uas = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        for s in (uac, uas):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((HOST, 0))
            s.setblocking(False)
        port = free_port(socket.SOCK_DGRAM)
        conf = tmp / f"node-{n}.toml"
        node_config(conf, name=f"cpu-{n}", run_dir=str(tmp / f"run-{n}"), port=port,
                    mode="stateless", uas_port=uas.getsockname()[1], stats_interval_s=5.0)  # fmt: skip
        if args.toml:
            with conf.open("a") as f:
                f.write("\n" + args.toml.replace("\\n", "\n") + "\n")
        pids = {role: start(group, args.tree, conf, role, tmp / f"{role}-{n}.log", args.pure)
                for role in ("worker", "ingress")}  # fmt: skip
        if not wait_ready(port):
            raise SystemExit(f"node not ready, see {tmp}")
        calls = int(args.rate * args.seconds)
        uac_port, uas_port = uac.getsockname()[1], uas.getsockname()[1]
        msgs = [m for i in range(calls) for m in call_messages(i, uac_port, port, uas_port)]
        dest = (HOST, port)
        got = 0
        spy = None
        if args.py_spy:  # sampled over the sending (py-spy writes its file on SIGINT)
            spy = group.start([args.py_spy, "record", "-p", str(pids[args.py_spy_proc]), "-r",
                               "250", "--nonblocking", "-f", "raw", "-o", args.py_spy_out,
                               "-d", str(int(args.seconds) + 5)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
            time.sleep(1)  # py-spy attaches before the load starts
        before = {r: cpu_ns(p) for r, p in pids.items()}
        t0 = time.monotonic()
        per_s = 6 * args.rate
        sent = 0
        while sent < len(msgs):
            due = min(len(msgs), int((time.monotonic() - t0) * per_s) + 1)
            for from_uac, data in msgs[sent:due]:
                (uac if from_uac else uas).sendto(data, dest)
            sent = max(sent, due)
            got += drain(uac) + drain(uas)
            time.sleep(0.001)  # pacing step; the next round sends what fell due meanwhile
        send_s = time.monotonic() - t0
        end = time.monotonic() + 30
        while got < len(msgs) and time.monotonic() < end:
            time.sleep(0.005)  # polling step, bounded by the deadline
            got += drain(uac) + drain(uas)
        after = {r: cpu_ns(p) for r, p in pids.items()}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
            group.procs.remove(spy)
    finally:
        group.stop_all()
        uac.close()
        uas.close()
    out = {"calls": float(calls), "lost": float(len(msgs) - got), "send_s": send_s}
    for role in pids:
        out[role] = (after[role] - before[role]) / 1000 / max(got / 6, 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--tree", type=Path, default=REPO, help="the checkout to run")
    ap.add_argument("--rate", type=int, default=3000, help="calls/s offered")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pure", action="store_true", help="SIPLINE_PURE=1 (no compiled modules)")
    ap.add_argument("--toml", default="", help="TOML appended to the node's config (\\n: newline)")
    ap.add_argument("--py-spy", default="", help="path of py-spy: record --py-spy-proc meanwhile")
    ap.add_argument("--py-spy-proc", default="worker", choices=("worker", "ingress"))
    ap.add_argument("--py-spy-out", default="/tmp/stateless-pyspy.txt", help="raw folded stacks")
    args = ap.parse_args()
    if not 0 < args.seconds <= 60 or not 0 < args.rate <= 20_000:
        raise SystemExit("--seconds in (0, 60], --rate in (0, 20 000]: keep the load bounded")
    args.tree = args.tree.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-cpu-"))
    rows = []
    for n in range(args.repeats):
        r = run_once(args, tmp, n)
        rows.append(r)
        bad = " (LOST > 1 %: not comparable)" if r["lost"] > r["calls"] * 6 / 100 else ""
        print(f"calls={r['calls']:.0f} lost={r['lost']:.0f} send_s={r['send_s']:.1f} "
              f"ingress={r['ingress']:.1f} worker={r['worker']:.1f} us/call{bad}", flush=True)  # fmt: skip
    for key in ("ingress", "worker"):
        vals = sorted(r[key] for r in rows)
        print(f"{key}: median {vals[len(vals) // 2]:.1f} us CPU per call "
              f"({', '.join(f'{v:.1f}' for v in vals)})")
    both = sorted(r["ingress"] + r["worker"] for r in rows)
    print(f"ingress + worker: median {both[len(both) // 2]:.1f} us CPU per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
