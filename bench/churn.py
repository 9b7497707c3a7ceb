#!/usr/bin/env python3
"""Calls per second with dialogs and CDRs while workers are killed and replaced, side by side
with the same load and no churn: CDRs lost or doubled.

Method
------
    sipp -sn uac --> node (stateful, dialogs, cdr_file, replicate) --> sipp -sn uas

Two runs, one after the other, each on a fresh node (honcho, ``--workers`` workers from the
Procfile, plus one worker started by hand): a sipp UAC places ``--calls`` calls at ``--rate``
calls/s, each held ``--hold-ms``. In the churn run, every ``--every-s`` seconds the
hand-started worker is killed with SIGKILL and a new one started in its place (the kill
alternates with a SIGTERM when ``--sigterm`` is given). After sipp ends, the node is stopped
cleanly and its CDR file read.

Reported per run: sipp's successful and failed calls and the rate they completed at
(successful calls over sipp's elapsed time), the CDRs written, the Call-IDs of successful
calls without a ``bye`` CDR (lost) and the Call-IDs with more than one CDR (doubled), and the
workers killed. A call that sipp counts as failed may have no CDR (it never became a dialog):
only successful calls are held to exactly one.

Bounds: sipp stops after ``calls/rate + hold + 60`` s (``-timeout``) and ``timeout`` kills it
15 s later; the churn stops with sipp; everything started is stopped at the end.
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
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import HOST, REPO, Group, elapsed_s, free_port, last_stats_row, route_to, wait_ready


def config(path: Path, *, run_dir: str, port: int, uas_port: int, cdr: Path) -> None:
    path.write_text(f"""
[node]
name = "churn"
run_dir = "{run_dir}"

[[listen]]
transport = "udp"
address = "{HOST}"
port = {port}

[proxy]
mode = "stateful"
record_route = true

[dialogs]
enabled = true
cdr_file = "{cdr}"

[stateplane]
replicate = true
{route_to(f"{HOST}:{uas_port}")}""")


def run_once(args: argparse.Namespace, churn: bool, tmp: Path) -> dict[str, Any]:
    group = Group()
    run_dir = f"/tmp/slch-{os.getpid()}-{int(churn)}"
    port, uas_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
    conf, cdr, log = tmp / f"node{int(churn)}.toml", tmp / f"cdr{int(churn)}.jsonl", tmp / f"node{int(churn)}.log"
    config(conf, run_dir=run_dir, port=port, uas_port=uas_port, cdr=cdr)
    env = dict(os.environ, SIPLINE_CONF=str(conf))
    venv_bin = REPO / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    secs = args.calls // args.rate + args.hold_ms // 1000 + 60
    common = ["-i", HOST, "-buff_size", "4194304", "-nostdin", "-trace_stat", "-fd", "1"]
    killed = 0
    try:
        group.start(["timeout", "-k", "5", str(secs + 30), "sipp", "-sn", "uas", "-p",
                     str(uas_port), *common, "-stf", str(tmp / "uas.csv")], cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        node = group.start([str(venv_bin / "honcho"), "-f", "Procfile", "start", "-c",
                            f"worker={args.workers}"], cwd=REPO, env=env,
                           stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        if not wait_ready(port):
            raise RuntimeError(f"node not ready, see {log}")
        hand_log = (tmp / f"hand{int(churn)}.log").open("a")

        def hand_worker() -> subprocess.Popen[Any]:
            return group.start([str(venv_bin / "sipline"), "worker"], cwd=REPO, env=env,
                               stdout=hand_log, stderr=subprocess.STDOUT)  # fmt: skip

        extra = hand_worker()
        time.sleep(1.0)  # the hand worker's first heartbeats: it takes Call-IDs from the start
        uac_stf = tmp / f"uac{int(churn)}.csv"
        uac = group.start(["timeout", "-k", "5", str(secs + 15), "sipp", "-sn", "uac",
                           f"{HOST}:{port}", "-r", str(args.rate), "-m", str(args.calls),
                           "-d", str(args.hold_ms), *common, "-stf", str(uac_stf),
                           "-timeout", f"{secs}s"], cwd=tmp,
                          stdout=(tmp / f"uac{int(churn)}.out").open("w"),
                          stderr=subprocess.STDOUT)  # fmt: skip
        next_at = time.monotonic() + args.every_s
        while uac.poll() is None:
            if churn and time.monotonic() >= next_at:
                sig = signal.SIGTERM if args.sigterm and killed % 2 else signal.SIGKILL
                extra.send_signal(sig)
                extra.wait(timeout=30)
                group.procs.remove(extra)
                killed += 1
                extra = hand_worker()
                next_at += args.every_s
            time.sleep(0.1)
        group.procs.remove(uac)
        row = last_stats_row(uac_stf)
        extra.send_signal(signal.SIGTERM)
        extra.wait(timeout=30)
        group.procs.remove(extra)
        group.stop(node, grace_s=15)
        group.procs.remove(node)
    finally:
        group.stop_all()
        shutil.rmtree(run_dir, ignore_errors=True)
    rows = [json.loads(ln) for ln in cdr.read_text().splitlines() if ln.strip()] if cdr.exists() else []
    per_call = Counter(r["call_id"] for r in rows)
    byes = sum(1 for r in rows if r.get("cause") == "bye")
    ok, failed = int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])
    return {
        "churn": churn, "successful": ok, "failed": failed,
        "calls_per_s": round(ok / max(elapsed_s(row["ElapsedTime(C)"]) - args.hold_ms / 1000, 1e-9), 1),
        "cdrs": len(rows), "bye_cdrs": byes, "lost": max(0, ok - byes),
        "doubled": sum(1 for n in per_call.values() if n > 1), "workers_killed": killed,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--hold-ms", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2, help="workers under honcho")
    ap.add_argument("--every-s", type=float, default=10.0)
    ap.add_argument("--sigterm", action="store_true", help="every other stop is a SIGTERM")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-churn-"))
    out = [run_once(args, churn, tmp) for churn in (False, True)]
    for r in out:
        print(json.dumps(r))
    print(f"# files in {tmp}")
    return 0 if all(r["lost"] == r["doubled"] == 0 for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
