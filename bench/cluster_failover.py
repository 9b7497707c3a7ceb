#!/usr/bin/env python3
"""Failover among three nodes under load: replication lag to both replicas, calls kept, time
to the first BYE served by the taker.

Method
------
    sipp -sn uac --> 127.0.0.10:VPORT (node A's virtual address) --> sipp -sn uas
    node A, node B, node C: ``[stateplane] role = "member"``, each state plane bound on its
    own loopback address (127.0.0.21-23) over CURVE TCP, each replicating the other two

Three nodes are started with honcho (stateful, dialogs on, ``--workers`` workers each, the
product's default ``heartbeat_ms`` unless ``--heartbeat-ms``). Each has its own virtual
address (127.0.0.10-12) and listens for the others' as standby. A sipp UAC places ``--calls``
calls at ``--rate`` calls/s, each held ``--hold-ms``, to A's address; a probe (a raw UDP UAC,
``bench/failover.py``) sets up one call of its own first.

When B's and C's replicas of A hold ``--kill-at`` of the calls, every process of A is killed
with SIGKILL at once (sipp keeps placing calls), and the probe sends its BYE to A's address
every 10 ms until a 200 comes back.

Reported:
- replication lag at the offered rate, on B and on C: p50/p99/max of their
  ``replication_stats`` lag for node-a per 1 s interval before the kill (worker event on A ->
  delta heard by the replica's state plane; one host's clock);
- takeover: which node logged ``failover_takeover`` for node-a, with how many dialogs
  (exactly one node must);
- kill -> first BYE 200 (wall clocks of one host);
- calls: sipp's successful and failed calls.

Bounds: sipp stops after ``calls/rate + hold + 60`` s (``-timeout``) and ``timeout`` kills it
15 s later; the probe gives up after 10 s; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import failover as pair
from _node import HOST, REPO, Group, ctl_stateplane, last_stats_row, route_to, wait_for, wait_ready

NAMES = ("node-a", "node-b", "node-c")
VIRTUALS = ("127.0.0.10", "127.0.0.11", "127.0.0.12")
PLANES = ("127.0.0.21", "127.0.0.22", "127.0.0.23")


def free_on(host: str, count: int) -> int:
    """A TCP port P on ``host`` with P .. P + count - 1 free."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        socks = []
        try:
            for p in range(port, port + count):
                t = socket.socket()
                socks.append(t)
                t.bind((host, p))
            return port
        except OSError:
            continue
        finally:
            for t in socks:
                t.close()
    raise RuntimeError(f"no {count} free ports on {host}")


def config(i: int, *, run_dir: str, port: int, vport: int, uas_port: int, planes: list[int],
           keys: Path, heartbeat_ms: int) -> str:  # fmt: skip
    others = [j for j in range(3) if j != i]
    eps = [f"tcp://{PLANES[j]}:{planes[j]}" for j in range(3)]
    listen = "".join(f"""
[[listen]]
transport = "udp"
address = "{VIRTUALS[j]}"
port = {vport}
virtual = true
standby = {str(j != i).lower()}
""" for j in [i, *others])
    text = f"""
[node]
name = "{NAMES[i]}"
run_dir = "{run_dir}"
{listen}
[[listen]]
transport = "udp"
address = "{HOST}"
port = {port}

[proxy]
mode = "stateful"

[dialogs]
enabled = true

[stateplane]
replicate = true
role = "member"
members = [{", ".join(f'"{n}"' for n in NAMES)}]
peers = [{", ".join(f'"{eps[j]}"' for j in others)}]
bind = "{PLANES[i]}:{planes[i]}"
heartbeat_ms = {heartbeat_ms}

[curve]
secret_key_file = "{keys / NAMES[i]}.key_secret"
"""
    for j in others:
        text += f"""
[[peer]]
name = "{NAMES[j]}"
stateplane = "{eps[j]}"
public_key_file = "{keys / NAMES[j]}.key"
virtual = ["{VIRTUALS[j]}"]
"""
    return text + route_to(f"{HOST}:{uas_port}")


def lags(log: Path) -> list[dict[str, Any]]:
    return [x for e in pair.events(log, "replication_stats")
            if (x := e["lag"].get("node-a", {})).get("updates")]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--hold-ms", type=int, default=15000)
    ap.add_argument("--kill-at", type=float, default=0.5, help="share of the calls replicated")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--heartbeat-ms", type=int, default=250)
    args = ap.parse_args()
    group, tmp = Group(), Path(tempfile.mkdtemp(prefix="sipline-cluster-"))
    keys = tmp / "keys"
    keys.mkdir()
    for name in NAMES:
        subprocess.run([str(REPO / ".venv" / "bin" / "sipline"), "keygen", str(keys / name)],
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    runs = [f"/tmp/slcl-{os.getpid()}-{n[-1]}" for n in NAMES]
    vport, uas_port = free_on(VIRTUALS[0], 1), pair.free_port(socket.SOCK_DGRAM)
    ports = [pair.free_port(socket.SOCK_DGRAM) for _ in NAMES]
    planes = [free_on(h, 2) for h in PLANES]
    confs, logs = [tmp / f"{n}.toml" for n in NAMES], [tmp / f"{n}.log" for n in NAMES]
    for i in range(3):
        confs[i].write_text(config(i, run_dir=runs[i], port=ports[i], vport=vport,
                                   uas_port=uas_port, planes=planes, keys=keys,
                                   heartbeat_ms=args.heartbeat_ms))  # fmt: skip
    common = ["-i", HOST, "-buff_size", "4194304", "-nostdin", "-trace_stat", "-fd", "1"]
    secs = args.calls // args.rate + args.hold_ms // 1000 + 60
    pair.VIRTUAL = VIRTUALS[0]  # the probe calls A's address
    try:
        group.start(["timeout", "-k", "5", str(secs + 30), "sipp", "-sn", "uas", "-p",
                     str(uas_port), *common, "-stf", str(tmp / "uas.csv")], cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        nodes = [pair.start(group, confs[i], args.workers, logs[i]) for i in range(3)]

        def settled() -> bool:
            return all((ctl_stateplane(confs[i]).get("failover") or {}).get("roles", {})
                       .get(VIRTUALS[i]) == "active" for i in range(3))  # fmt: skip

        if not all(wait_ready(p) for p in ports) or not wait_for(settled, 30, 0.3):
            raise RuntimeError(f"the three nodes did not settle, see {tmp}")
        probe = pair.Probe(vport)
        probe.call()
        uac_stf = tmp / "uac.csv"
        uac = group.start(["timeout", "-k", "5", str(secs + 15), "sipp", "-sn", "uac",
                           f"{VIRTUALS[0]}:{vport}", "-r", str(args.rate), "-m", str(args.calls),
                           "-d", str(args.hold_ms), *common, "-stf", str(uac_stf),
                           "-timeout", f"{secs}s"], cwd=tmp,
                          stdout=(tmp / "uac.out").open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        want = int(args.calls * args.kill_at)

        def replicated() -> bool:
            return all(int(ctl_stateplane(confs[i]).get("replicas", {}).get("node-a", {})
                           .get("dialogs", 0)) >= want for i in (1, 2))  # fmt: skip

        if not wait_for(replicated, args.calls / args.rate + 30, 0.2):
            raise RuntimeError("B and C never replicated enough of A's calls")
        lag_b, lag_c = lags(logs[1]), lags(logs[2])
        killed_at = pair.kill_tree(group, nodes[0])
        served_at = probe.bye_until_answered()
        wait_for(lambda: any(pair.events(logs[i], "failover_takeover") for i in (1, 2)), 10)
        uac.wait()
        group.procs.remove(uac)
        row = last_stats_row(uac_stf)
    finally:
        group.stop_all()
        for d in runs:
            shutil.rmtree(d, ignore_errors=True)
    takers = {NAMES[i]: [e.get("dialogs") for e in pair.events(logs[i], "failover_takeover")
                         if e.get("source") == "node-a"] for i in (1, 2)}  # fmt: skip
    print(f"\n{args.calls} calls at {args.rate}/s held {args.hold_ms} ms to A, {args.workers} "
          f"workers per node, heartbeat {args.heartbeat_ms} ms, state planes over CURVE TCP; "
          f"A killed with {want}+ calls replicated on B and C\n")
    for name, lag in (("B", lag_b), ("C", lag_c)):
        print(f"replication lag A -> {name} per 1 s interval (updates, p50/p99/max ms): "
              + "; ".join(f"{x['updates']}, {x['p50_ms']}/{x['p99_ms']}/{x['max_ms']}"
                          for x in lag))  # fmt: skip
    print(f"takeover of node-a (dialogs per node): {takers}")
    if served_at is not None:
        print(f"kill -> first BYE 200: {(served_at - killed_at) * 1000:.0f} ms")
    else:
        print("the probe's BYE was not answered")
    print(f"calls: {row['SuccessfulCall(C)']} successful, {row['FailedCall(C)']} failed")
    print(f"(files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
