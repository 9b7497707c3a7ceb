#!/usr/bin/env python3
"""Late-joiner sync through real processes and sockets, while the owner keeps changing.

Method
------
    this script (as the node's workers) --DLT--> stateplane A  --PUB/ROUTER--> stateplane B

Node A is a ``sipline stateplane`` process alone (``replicate = true``); this script stands in
for A's workers: it pushes ``--dialogs`` "c" deltas of confirmed dialogs (bench/replica_memory's
records, each with its own Call-ID and tags) into A's ``stateplane-deltas.ipc`` in envelopes
of 1 000, and waits until A's mirror owns them all (``sipline ctl stats``). Then it starts
node B's state plane with ``peers = [A]`` and, during the whole sync, keeps changing A at
``--rate`` calls/s (one new dialog and one ended per call), as serving calls would.

Reported: B's ``replica_synced`` seconds (from its ask to the swap) and dialogs/records, the
time from B's start to that event, and whether B's replica equals A's mirror once the load
stops (dialog counts from ``ctl stats``).

Bounds: every wait has a deadline; both processes are stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _node import REPO, Group, ctl_stateplane, route_to, wait_for

from bench.replica_memory import owner_records
from conf import envelope as env

SIPLINE = str(REPO / ".venv" / "bin" / "sipline")


def config(path: Path, name: str, run_dir: str, peers: list[str], n: int) -> None:
    quoted = ", ".join(f'"{p}"' for p in peers)
    path.write_text(f"""
[node]
name = "{name}"
run_dir = "{run_dir}"

[proxy]
mode = "stateful"

[dialogs]
enabled = true
max_dialogs = {max(2 * n, 1000)}

[stateplane]
replicate = true
peers = [{quoted}]
""" + route_to("127.0.0.1:5080"))



def synced_event(log: Path) -> dict[str, Any] | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"replica_synced"' in line:
            return json.loads(line[line.index("{"):])  # type: ignore[no-any-return]
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dialogs", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=500, help="calls/s changing A during the sync")
    args = ap.parse_args()
    n = args.dialogs
    tmp = Path(tempfile.mkdtemp(prefix="sipline-sync-"))
    run_a, run_b = f"/tmp/slsync-{os.getpid()}-a", f"/tmp/slsync-{os.getpid()}-b"
    conf_a, conf_b = tmp / "a.toml", tmp / "b.toml"
    config(conf_a, "node-a", run_a, [], n)
    config(conf_b, "node-b", run_b, [run_a], n)
    group = Group()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    now, wall = time.monotonic(), time.time()
    records = owner_records(n + args.rate * 120, now, wall)
    try:
        group.start([SIPLINE, "stateplane", "--conf", str(conf_a)], cwd=REPO,
                    stdout=(tmp / "a.log").open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        if not wait_for(lambda: os.path.exists(f"{run_a}/{env.STATEPLANE_DELTAS}"), 20):
            raise RuntimeError("A's state plane did not start")
        push = ctx.socket(zmq.PUSH)
        push.sndhwm = 0  # the bench waits, the product would not
        push.connect(f"ipc://{run_a}/{env.STATEPLANE_DELTAS}")
        for i in range(0, n, 1000):
            push.send_multipart(env.pack(env.KIND_DELTAS, ["bench-1",
                                [["c", *r] for r in records[i:i + 1000]]]))  # fmt: skip
        if not wait_for(lambda: ctl_stateplane(conf_a).get("owned") == n, 120, 0.5):
            raise RuntimeError("A's mirror never held every dialog")
        t_start = time.monotonic()
        group.start([SIPLINE, "stateplane", "--conf", str(conf_b)], cwd=REPO,
                    stdout=(tmp / "b.log").open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        nxt, oldest, t_next = n, 0, time.monotonic()
        synced = None
        end = time.monotonic() + 120
        while time.monotonic() < end and synced is None:
            while args.rate and time.monotonic() >= t_next and nxt < len(records):  # the load
                r, gone = records[nxt], records[oldest]
                push.send_multipart(env.pack(env.KIND_DELTAS, ["bench-1", [
                    ["c", *r], ["t", gone[0], gone[1], "bye", "caller", time.time()]]]))  # fmt: skip
                nxt, oldest, t_next = nxt + 1, oldest + 1, t_next + 1 / args.rate
            synced = synced_event(tmp / "b.log")
            time.sleep(0.002)
        total_s = time.monotonic() - t_start
        if synced is None:
            raise RuntimeError("B never synced")
        load_calls = nxt - n
        time.sleep(1.5)  # the load stopped: let the last updates reach B (one stats interval)
        a_owned = ctl_stateplane(conf_a).get("owned")
        b_held = ctl_stateplane(conf_b).get("replicas", {}).get("node-a", {}).get("dialogs")
    finally:
        group.stop_all()
        ctx.destroy(linger=0)
        for d in (run_a, run_b):
            shutil.rmtree(d, ignore_errors=True)
    print(f"\n{n} dialogs on A, {args.rate} calls/s changing A during the sync "
          f"({load_calls} calls, {2 * load_calls} updates)")
    print(f"B replica_synced: {synced['seconds']} s (ask to swap), {synced['dialogs']} dialogs, "
          f"{synced['records']} records; B start to synced {total_s:.2f} s")
    print(f"after the load: A owns {a_owned}, B holds {b_held} -> "
          f"{'in sync' if a_owned == b_held else 'DIFFERENT'}")
    print(f"(logs in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
