#!/usr/bin/env python3
"""Retransmissions absorbed vs forwarded by sipline under a lossy UAS, stateless vs stateful.

Method
------
    sipp -sn uac --> 127.0.0.1:PORT (sipline, 1 worker) --> 127.0.0.1:UAS_PORT sipp -sn uas -lost L

For each mode (``[proxy] mode = "stateless"``, then ``"stateful"``) a node is started with
honcho and ``SIPLINE_CONF`` pointing at a config written into a temp dir (UDP only, one route
to the UAS, ``stats_interval_s = 1``). A fresh UAS runs with ``-lost L``: sipp drops each
message it would send or has received with probability L % (``-lost`` sets the default of a
scenario element's ``lost`` attribute, a percentage), so the UAC, the proxy or the UAS must
retransmit. The UAC places ``--calls`` calls at ``--rate`` calls/s, no hold time, lossless.

Counted per mode:
- UAC and UAS retransmissions: sipp's own ``Retransmissions(C)`` (messages sipp re-sent on
  its timers), from the final stat row;
- what reached the UAS: the UAS runs with ``-trace_msg``; every received message is logged
  before ``-lost`` decides to drop it, so duplicates of a (Call-ID, CSeq, method) request at
  the UAS are retransmissions that reached it (sent by the UAC through a stateless proxy, or
  by the stateful proxy's own timers);
- the worker's ``txn`` counters (``absorbed``: request retransmissions answered or dropped by
  a server transaction, and ACKs for non-2xx absorbed; ``timeout``) from its last
  ``load_stats`` line, and the calls that failed on either side.

Bounds: the UAC stops after ``calls/rate + 40`` s (``-timeout``), each message is awaited at
most ``--recv-timeout`` ms, ``timeout`` kills either sipp 15 s later; the UAS is stopped
once its stat file shows no open call (sipp's UAS pauses 4 s at the end of each call) or
after 40 s. Everything started is stopped at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import (
    HOST,
    Group,
    last_stats_row,
    node_config,
    start_node,
    stop_uas_drained,
    udp_port_bound,
    wait_ready,
    worker_load_stats,
)

FIRST_LINE = re.compile(rb"^([A-Z]+) sip:", re.MULTILINE)


def uas_duplicates(trace: Path) -> tuple[Counter[str], Counter[str]]:
    """Requests received by the UAS per method, and how many of them were duplicates."""
    data = trace.read_bytes()
    received: Counter[str] = Counter()
    dups: Counter[str] = Counter()
    seen: set[tuple[bytes, bytes]] = set()
    for block in data.split(b"----------------------------------------------- ")[1:]:
        if b"message received" not in block[:120]:  # timestamp line, then the direction
            continue
        m = FIRST_LINE.search(block)
        if not m:
            continue  # a response
        method = m.group(1).decode()
        cid = re.search(rb"^Call-ID:\s*(\S+)", block, re.MULTILINE | re.IGNORECASE)
        cseq = re.search(rb"^CSeq:\s*(.+?)\s*$", block, re.MULTILINE | re.IGNORECASE)
        if not (cid and cseq):
            continue
        received[method] += 1
        # an ACK sent again for a retransmitted 2xx counts as a duplicate like the rest
        key = (cid.group(1), cseq.group(1))
        if key in seen:
            dups[method] += 1
        else:
            seen.add(key)
    return received, dups


def run_mode(group: Group, mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    conf = tmp / f"{mode}.toml"
    run_dir = f"/tmp/slretr-{os.getpid()}-{mode}"
    node_config(conf, name=f"retr-{mode}", run_dir=run_dir, port=args.port, mode=mode,
                uas_port=args.uas_port)
    log = tmp / f"node-{mode}.log"
    node = start_node(group, conf, 1, log)
    try:
        if not wait_ready(args.port):
            raise RuntimeError(f"node not ready, see {log}")
        common = ["-i", HOST, "-bind_local", "-buff_size", "4194304", "-nostdin",
                  "-trace_stat", "-fd", "1", "-recv_timeout", str(args.recv_timeout)]
        uas_stf, uac_stf = tmp / f"uas-{mode}.csv", tmp / f"uac-{mode}.csv"
        uas_trace = tmp / f"uas-{mode}-messages.log"
        uac_secs = args.calls // args.rate + 40
        uas = group.start(["timeout", "-k", "5", str(uac_secs + 60), "sipp", "-sn", "uas",
                           "-p", str(args.uas_port), "-lost", str(args.lost), *common,
                           "-stf", str(uas_stf), "-trace_msg", "-message_file", str(uas_trace),
                           "-timeout", f"{uac_secs + 50}s"],
                          cwd=tmp, stdout=(tmp / f"uas-{mode}.out").open("w"),
                          stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not udp_port_bound(args.uas_port) and time.monotonic() < end:
            time.sleep(0.1)
        uac = group.start(["timeout", "-k", "5", str(uac_secs + 15), "sipp", "-sn", "uac",
                           f"{HOST}:{args.port}", "-r", str(args.rate), "-m", str(args.calls),
                           *common, "-stf", str(uac_stf), "-timeout", f"{uac_secs}s"],
                          cwd=tmp, stdout=(tmp / f"uac-{mode}.out").open("w"),
                          stderr=subprocess.STDOUT)
        uac.wait()
        group.procs.remove(uac)
        stop_uas_drained(group, uas, uas_stf, 40, 1)
        time.sleep(args.stats_wait)  # one more load_stats line after the last message
    finally:
        group.stop(node)
        group.procs.remove(node)
        shutil.rmtree(run_dir, ignore_errors=True)
    uac_row, uas_row = last_stats_row(uac_stf), last_stats_row(uas_stf)
    received, dups = uas_duplicates(uas_trace)
    stats = worker_load_stats(log)
    txn = stats[-1].get("txn", {}) if stats else {}
    return {
        "mode": mode,
        "uac_ok": int(uac_row["SuccessfulCall(C)"]), "uac_failed": int(uac_row["FailedCall(C)"]),
        "uac_retrans": int(uac_row["Retransmissions(C)"]),
        "uas_calls": int(uas_row["TotalCallCreated"]), "uas_failed": int(uas_row["FailedCall(C)"]),
        "uas_retrans": int(uas_row["Retransmissions(C)"]),
        "uas_received": dict(received), "uas_dups": dict(dups),
        "absorbed": txn.get("absorbed", "-"), "txn_timeout": txn.get("timeout", "-"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--modes", default="stateless,stateful")
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--lost", type=int, default=10)
    ap.add_argument("--port", type=int, default=5170)
    ap.add_argument("--uas-port", type=int, default=5180)
    ap.add_argument("--recv-timeout", type=int, default=35000)
    ap.add_argument("--stats-wait", type=float, default=2.5)
    args = ap.parse_args()
    for port in (args.port, args.uas_port):
        if udp_port_bound(port):
            raise SystemExit(f"UDP {HOST}:{port} is taken")
    group = Group()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-retrans-"))
    results = []
    try:
        for mode in args.modes.split(","):
            r = run_mode(group, mode, args, tmp)
            results.append(r)
            print(r, flush=True)
    finally:
        group.stop_all()
    print(f"\n{args.calls} calls at {args.rate}/s, UAS -lost {args.lost}\n")
    print("| mode | UAC ok / failed | UAC retrans | UAS calls / failed | UAS retrans "
          "| duplicate requests at UAS (INVITE, ACK, BYE) | worker absorbed | txn timeout |")
    print("|---|---|---:|---|---:|---|---:|---:|")
    for r in results:
        d = r["uas_dups"]
        assert isinstance(d, dict)
        dup = f"{sum(d.values())} ({d.get('INVITE', 0)}, {d.get('ACK', 0)}, {d.get('BYE', 0)})"
        print(f"| {r['mode']} | {r['uac_ok']} / {r['uac_failed']} | {r['uac_retrans']} "
              f"| {r['uas_calls']} / {r['uas_failed']} | {r['uas_retrans']} | {dup} "
              f"| {r['absorbed']} | {r['txn_timeout']} |")
    print(f"(files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
