#!/usr/bin/env python3
"""Failover of an active/backup pair under load: calls kept, time to the first BYE served by
the backup, replication lag.

Method
------
    sipp -sn uac --> 127.0.0.10:VPORT (the pair's virtual address) --> sipp -sn uas
                      node A (primary, active)  |  node B (backup, passive, replicating A)

Two nodes are started with honcho (stateful, dialogs on, ``[stateplane] role`` primary and
backup, the product's default ``heartbeat_ms`` unless ``--heartbeat-ms``), each with
``--workers`` workers, the virtual UDP listener first and one UDP listener of its own. A sipp
UAC places ``--calls`` calls at ``--rate`` calls/s, each held ``--hold-ms``, to the virtual
address. A probe (this script, a raw UDP UAC) sets up one call of its own first.

When B's replica of A holds ``--kill-at`` of the calls, every process of A is killed with
SIGKILL at once (while sipp keeps placing calls), and the probe starts sending its BYE to the
virtual address every 10 ms (one transaction, retransmitted) until a 200 comes back.

Reported:
- calls: sipp's successful and failed calls (every call must end with its BYE answered);
- takeover: B's ``failover_takeover`` event: dialogs taken over, ``silent_ms`` (from the
  last heartbeat B heard from A to the takeover);
- last heartbeat -> first BYE served: the probe's 200 time minus (the takeover's log time
  minus ``silent_ms``), wall clocks of one host; also kill -> 200;
- replication lag at the offered rate: p50/p99/max of B's ``replication_stats`` lag over the
  intervals before the kill (worker event -> delta heard by B's state plane).

Bounds: sipp stops after ``calls/rate + hold + 60`` s (``-timeout``) and ``timeout`` kills it
15 s later; the probe gives up after 10 s; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import (
    HOST,
    REPO,
    Group,
    ctl_stateplane,
    free_port,
    last_stats_row,
    route_to,
    wait_for,
    wait_ready,
)

VIRTUAL = "127.0.0.10"


def pair_config(path: Path, *, name: str, run_dir: str, peer: str, role: str, port: int,
                vport: int, uas_port: int, heartbeat_ms: int) -> None:  # fmt: skip
    path.write_text(f"""
[node]
name = "{name}"
run_dir = "{run_dir}"

[[listen]]
transport = "udp"
address = "{VIRTUAL}"
port = {vport}
virtual = true

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
role = "{role}"
peers = ["{peer}"]
heartbeat_ms = {heartbeat_ms}
""" + route_to(f"{HOST}:{uas_port}"))


def start(group: Group, conf: Path, workers: int, log: Path) -> subprocess.Popen[Any]:
    env = dict(os.environ, SIPLINE_CONF=str(conf), PYTHONUNBUFFERED="1")
    venv_bin = REPO / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    return group.start([str(venv_bin / "honcho"), "-f", "Procfile", "start", "-c",
                        f"worker={workers}"], cwd=REPO, env=env, stdout=log.open("w"),
                       stderr=subprocess.STDOUT)  # fmt: skip


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if f'"{name}"' not in line:
            continue
        try:
            ev = json.loads(line[line.index("{"):])
        except ValueError:
            continue
        if ev.get("event") == name:
            out.append(ev)
    return out




class Probe:
    """One call of our own through the virtual address: INVITE, 200, ACK; later its BYE."""

    def __init__(self, vport: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = self.sock.getsockname()[1]
        self.dst = (VIRTUAL, vport)
        self.call_id, self.tag = f"probe-{uuid.uuid4().hex}", uuid.uuid4().hex[:8]
        self.to = self.contact = ""
        self.routes: list[str] = []

    def _msg(self, method: str, uri: str, cseq: int, branch: str, extra: str = "") -> bytes:
        return (f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{self.port};branch={branch}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:probe@{HOST}>;tag={self.tag}\r\n"
                f"To: {self.to or f'<sip:uas@{VIRTUAL}>'}\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:probe@{HOST}:{self.port}>\r\n{extra}"
                "Content-Length: 0\r\n\r\n").encode()  # fmt: skip

    def call(self) -> None:
        self.sock.settimeout(0.5)
        invite = self._msg("INVITE", f"sip:uas@{VIRTUAL}:{self.dst[1]}", 1, "z9hG4bK" + uuid.uuid4().hex)
        for _ in range(20):
            self.sock.sendto(invite, self.dst)
            try:
                while True:
                    data = self.sock.recv(65535).decode()
                    if data.startswith("SIP/2.0 200"):
                        self._learn(data)
                        ack = self._msg("ACK", self.contact, 1, "z9hG4bK" + uuid.uuid4().hex,
                                        "".join(f"Route: {r}\r\n" for r in self.routes))  # fmt: skip
                        self.sock.sendto(ack, self.dst)
                        return
            except TimeoutError:
                continue
        raise RuntimeError("the probe call was not answered")

    def _learn(self, resp: str) -> None:
        heads = resp.split("\r\n\r\n", 1)[0].split("\r\n")
        for h in heads:
            name, _, value = h.partition(":")
            n = name.strip().lower()
            if n in ("to", "t"):
                self.to = value.strip()
            elif n in ("contact", "m"):
                self.contact = re.sub(r"^.*<([^>]+)>.*$", r"\1", value.strip())
            elif n == "record-route":
                self.routes += [r.strip() for r in value.split(",")]

    def bye_until_answered(self, deadline_s: float = 10.0) -> float | None:
        """Send the BYE every 10 ms until its 200; the wall time of the 200."""
        bye = self._msg("BYE", self.contact, 2, "z9hG4bK" + uuid.uuid4().hex,
                        "".join(f"Route: {r}\r\n" for r in self.routes))  # fmt: skip
        self.sock.settimeout(0.01)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.sock.sendto(bye, self.dst)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            if data.startswith(b"SIP/2.0 200") and b"BYE" in data:
                return time.time()
        return None


def kill_tree(group: Group, p: subprocess.Popen[Any]) -> float:
    pids = group.tree_pids(p.pid)
    t = time.time()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it exited between the listing and the kill
    p.wait(timeout=5)
    group.procs.remove(p)
    return t


def iso_wall(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--hold-ms", type=int, default=15000)
    ap.add_argument("--kill-at", type=float, default=0.5, help="share of the calls replicated")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--heartbeat-ms", type=int, default=250)
    args = ap.parse_args()
    group, tmp = Group(), Path(tempfile.mkdtemp(prefix="sipline-failover-"))
    run_a, run_b = f"/tmp/slfo-{os.getpid()}-a", f"/tmp/slfo-{os.getpid()}-b"
    vport, pa, pb, uas_port = (free_port(socket.SOCK_DGRAM) for _ in range(4))
    conf_a, conf_b, log_a, log_b = tmp / "a.toml", tmp / "b.toml", tmp / "a.log", tmp / "b.log"
    for conf, name, run, peer, role, port in ((conf_a, "node-a", run_a, run_b, "primary", pa),
                                              (conf_b, "node-b", run_b, run_a, "backup", pb)):
        pair_config(conf, name=name, run_dir=run, peer=peer, role=role, port=port, vport=vport,
                    uas_port=uas_port, heartbeat_ms=args.heartbeat_ms)  # fmt: skip
    common = ["-i", HOST, "-buff_size", "4194304", "-nostdin", "-trace_stat", "-fd", "1"]
    secs = args.calls // args.rate + args.hold_ms // 1000 + 60
    try:
        group.start(["timeout", "-k", "5", str(secs + 30), "sipp", "-sn", "uas", "-p",
                     str(uas_port), *common, "-stf", str(tmp / "uas.csv")], cwd=tmp,
                    stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
        node_a = start(group, conf_a, args.workers, log_a)
        if not wait_ready(pa) or not wait_for(lambda: events(log_a, "virtual_bound"), 10):
            raise RuntimeError(f"node A not active, see {log_a}")
        start(group, conf_b, args.workers, log_b)
        if not wait_ready(pb) or not wait_for(
                lambda: (ctl_stateplane(conf_b).get("failover") or {}).get("roles", {}).get(VIRTUAL) == "passive",
                10, 0.3):  # fmt: skip
            raise RuntimeError(f"node B not passive, see {log_b}")
        probe = Probe(vport)
        probe.call()
        uac_stf = tmp / "uac.csv"
        uac = group.start(["timeout", "-k", "5", str(secs + 15), "sipp", "-sn", "uac",
                           f"{VIRTUAL}:{vport}", "-r", str(args.rate), "-m", str(args.calls),
                           "-d", str(args.hold_ms), *common, "-stf", str(uac_stf),
                           "-timeout", f"{secs}s"], cwd=tmp,
                          stdout=(tmp / "uac.out").open("w"), stderr=subprocess.STDOUT)  # fmt: skip
        want = int(args.calls * args.kill_at)

        def replicated() -> bool:
            rep = ctl_stateplane(conf_b).get("replicas", {}).get("node-a", {})
            return int(rep.get("dialogs", 0)) >= want

        if not wait_for(replicated, args.calls / args.rate + 30, 0.2):
            raise RuntimeError("B never replicated enough of A's calls")
        lag_before = [e["lag"].get("node-a", {}) for e in events(log_b, "replication_stats")]
        killed_at = kill_tree(group, node_a)
        served_at = probe.bye_until_answered()
        take = wait_for(lambda: events(log_b, "failover_takeover"), 10)
        uac.wait()
        group.procs.remove(uac)
        row = last_stats_row(uac_stf)
    finally:
        group.stop_all()
        for d in (run_a, run_b):
            shutil.rmtree(d, ignore_errors=True)
    ev = take[0] if take else {}
    print(f"\n{args.calls} calls at {args.rate}/s held {args.hold_ms} ms, {args.workers} workers "
          f"per node, heartbeat {args.heartbeat_ms} ms; A killed with {want}+ calls replicated\n")
    print(f"calls: {row['SuccessfulCall(C)']} successful, {row['FailedCall(C)']} failed")
    print(f"takeover: {ev.get('dialogs')} dialogs, silent {ev.get('silent_ms')} ms, "
          f"lost {ev.get('lost')}")
    if served_at is not None and ev:
        last_hb = iso_wall(str(ev["timestamp"])) - int(ev["silent_ms"]) / 1000
        print(f"last heartbeat -> first BYE 200: {(served_at - last_hb) * 1000:.0f} ms; "
              f"kill -> first BYE 200: {(served_at - killed_at) * 1000:.0f} ms")
    else:
        print("the probe's BYE was not answered")
    busy = [lag for lag in lag_before if lag.get("updates")]
    if busy:
        print("replication lag per 1 s interval before the kill (updates, p50/p99/max ms): "
              + "; ".join(f"{x['updates']}, {x['p50_ms']}/{x['p99_ms']}/{x['max_ms']}"
                          for x in busy))  # fmt: skip
    print(f"(files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
