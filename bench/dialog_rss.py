#!/usr/bin/env python3
"""Memory per confirmed dialog with N concurrent calls held open, sipline and Kamailio.

Usage (repo root):  python3 bench/dialog_rss.py [--calls 100000] [--rate 2000]
                    [--hold-ms 120000] [--target sipline --target kamailio] [--json out.json]

Method, per target, on loopback (sipp UAC -> 127.0.0.1:5060 -> sipp UAS 127.0.0.1:5080, UDP):

1. The target starts: sipline with ``honcho -f Procfile start -c worker=1`` and a config of its
   own (``[proxy] mode = "stateful"``, ``[dialogs] enabled = true``, ``default_lifetime_s``
   longer than the hold, ``[transactions] max_transactions`` = 160 * rate: at 2 000 calls/s
   ~128 000 INVITE transactions are alive, Timers L and M; no CDR file; its own node name and
   run_dir under /tmp), or Kamailio with ``../shared/peers/kamailio-stateful.cfg`` as the
   peers' README starts it (``-DD -E -n 2 -m 512 -Y /tmp/kamailio-peer``; ``--kam-shm-mb``
   changes ``-m``). Ready when it answers an OPTIONS with ``Max-Forwards: 0``.
2. Baseline: sipline's worker VmRSS (and the timers process's, which holds the lifetimes, and
   the node's total), from /proc; Kamailio's ``kamcmd core.shmmem`` (``real_used``, which
   counts the allocator's own headers, and ``used``).
3. ``sipp -sn uas`` on 5080, then ``sipp -sn uac 127.0.0.1:5060 -d HOLD -r RATE -m N -l N
   -buff_size 4194304``: every call is answered and held open HOLD ms before its BYE.
4. Once the UAC has placed all N calls (its stat file), the script waits ``--settle`` s (33:
   more than 64*T1 = 32 s, Timers M/L/J, so every INVITE transaction has ended), then until
   the target reports the dialogs confirmed (sipline: ``sipline ctl --json stats``, the
   worker's ``dialogs`` active minus early; Kamailio: ``kamcmd dlg.stats_active``, ongoing)
   and stable, and reads the same figures as in 2. Bytes per dialog = (after - before) / N
   confirmed. The same figures are also read as the UAC has placed the last call
   (``at_placed``: the peak, with the INVITE transactions of the last 32 s alive).
5. Everything started is stopped (SIGTERM to its process group, SIGKILL after 5 s), also on
   SIGTERM or Ctrl-C; the held calls are not ended with BYEs.

Bounds: each sipp runs under ``timeout`` and sipp ``-timeout``; no target waits more than
``--budget`` s. Standard library + subprocess; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _node import REPO, Group, last_stats_row, udp_port_bound, wait_ready

HOST = "127.0.0.1"
PORT, UAS_PORT = 5060, 5080
KAM_DIR = "/tmp/kamailio-peer"
KAM_CTL = f"unix:{KAM_DIR}/kamailio_ctl"
#: the repository's venv, or (a git worktree without one) the venv of the running python
VENV_BIN = REPO / ".venv" / "bin" if (REPO / ".venv").is_dir() else Path(sys.executable).parent


def vm_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def sipline_conf(path: Path, run_dir: str, lifetime_s: float, max_txns: int) -> None:
    path.write_text("\n".join([
        "[node]", 'name = "dlgrss"', f'run_dir = "{run_dir}"', "",
        "[[listen]]", 'transport = "udp"', f'address = "{HOST}"', f"port = {PORT}", "",
        "[proxy]", "record_route = true", 'mode = "stateful"', "",
        "[[destination_set]]", 'name = "uas"', f'destinations = ["sip:{HOST}:{UAS_PORT}"]',
        'algorithm = "hash_call_id"', "",
        "[[route]]", 'name = "default"', 'to = "uas"', "",
        # 2 000 calls/s hold ~128 000 INVITE transactions (Timers L and M, 32 s): above the
        # default table (65 536, 503 past 7/8 of it)
        "[transactions]", f"max_transactions = {max_txns}", "",
        "[dialogs]", "enabled = true", f"default_lifetime_s = {lifetime_s}", "",
        "[log]", 'level = "info"', "stats_interval_s = 5.0", "",
    ]))


class Sipline:
    name = "sipline"

    def __init__(self, group: Group, tmp: Path, args: argparse.Namespace) -> None:
        self.group, self.tmp = group, tmp
        self.run_dir = f"/tmp/dlgrss-{os.getpid()}"
        self.conf = tmp / "sipline.toml"
        sipline_conf(self.conf, self.run_dir, args.hold_ms / 1000 + 600,
                     max(65536, 4 * 40 * args.rate))
        venv_bin = VENV_BIN
        self.env = dict(os.environ, SIPLINE_CONF=str(self.conf),
                        PATH=f"{venv_bin}:{os.environ.get('PATH', '')}")
        self.proc = group.start([str(venv_bin / "honcho"), "-f", "Procfile", "start", "-c",
                                 "worker=1"], cwd=REPO, env=self.env,
                                stdout=(tmp / "node.log").open("w"), stderr=subprocess.STDOUT)

    def _pids(self) -> dict[str, int]:
        out = {}
        for pid in Group.tree_pids(self.proc.pid):
            cl = cmdline(pid)
            for role in ("ingress", "worker", "stateplane", "timers"):
                if f"sipline {role}" in cl:
                    out[role] = pid
        return out

    def ctl(self) -> dict[str, Any]:
        out = subprocess.run([str(VENV_BIN / "sipline"), "ctl", "--json", "stats"],
                             check=False, env=self.env, cwd=REPO, capture_output=True,
                             text=True, timeout=20)
        doc = json.loads(out.stdout)
        for rep in doc["stats"]:
            if "dialogs" in rep:
                return rep
        raise RuntimeError(f"no worker reported dialogs: {out.stdout[:500]}")

    def confirmed(self) -> int:
        d = self.ctl()["dialogs"]
        return int(d["active"]) - int(d["early"])

    def reading(self) -> dict[str, Any]:
        pids = self._pids()
        rep = self.ctl()
        return {
            "rss_kb": {r: vm_kb(p) for r, p in pids.items()},
            "hwm_kb": {r: vm_kb(p, "VmHWM") for r, p in pids.items()},
            "dialogs": {k: v for k, v in rep["dialogs"].items() if k != "profiles"},
            "transactions": rep.get("transactions"),
        }

    @staticmethod
    def per_dialog(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
        b, a = before["rss_kb"], after["rss_kb"]
        out = {f"{r}_B": (a[r] - b[r]) * 1024 / n for r in a if r in b}
        out["node_B"] = (sum(a.values()) - sum(b.values())) * 1024 / n
        return out

    def close(self) -> None:
        shutil.rmtree(self.run_dir, ignore_errors=True)


def kamcmd(cmd: str) -> dict[str, int]:
    out = subprocess.run(["kamcmd", "-s", KAM_CTL, cmd], check=False, capture_output=True,
                         text=True, timeout=20)
    pairs = re.findall(r"^\s*([\w-]+):\s*(-?\d+)\s*$", out.stdout, re.MULTILINE)
    return {k: int(v) for k, v in pairs}


class Kamailio:
    name = "kamailio"

    def __init__(self, group: Group, tmp: Path, args: argparse.Namespace) -> None:
        os.makedirs(KAM_DIR, exist_ok=True)
        cfg = args.shared / "peers" / "kamailio-stateful.cfg"
        self.proc = group.start(["kamailio", "-f", str(cfg), "-DD", "-E", "-n", "2",
                                 "-m", str(args.kam_shm_mb), "-Y", KAM_DIR],
                                stdout=(tmp / "kamailio.log").open("w"), stderr=subprocess.STDOUT)

    def confirmed(self) -> int:
        return kamcmd("dlg.stats_active").get("ongoing", 0)

    def reading(self) -> dict[str, Any]:
        return {"shmmem": kamcmd("core.shmmem"), "dialogs": kamcmd("dlg.stats_active")}

    @staticmethod
    def per_dialog(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, float]:
        b, a = before["shmmem"], after["shmmem"]
        out: dict[str, Any] = {f"shm_{k}_B": (a[k] - b[k]) / n for k in ("real_used", "used")
                               if k in a}
        # kamcmd prints total as a signed 32-bit value (-2147483648 for 2 GB): free + real_used
        total = a.get("free", 0) + a.get("real_used", 0)
        out["shm_exhausted"] = a.get("max_used", 0) >= total  # calls failed for memory
        return out

    def close(self) -> None:
        pass


TARGETS = {"sipline": Sipline, "kamailio": Kamailio}


def ports_free() -> bool:
    return not udp_port_bound(PORT) and not udp_port_bound(UAS_PORT)


def run_target(kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    group = Group()
    tdir = tmp / kind
    tdir.mkdir()
    res: dict[str, Any] = {"target": kind, "calls": args.calls, "rate": args.rate,
                           "hold_ms": args.hold_ms}
    t0 = time.monotonic()
    try:
        if not ports_free():
            raise RuntimeError(f"UDP {PORT} or {UAS_PORT} is taken")
        target = TARGETS[kind](group, tdir, args)
        if not wait_ready(PORT, 30):
            raise RuntimeError(f"{kind} not ready, see {tdir}")
        time.sleep(3)
        res["before"] = target.reading()
        place_s = args.calls / args.rate
        life = int(place_s + args.hold_ms / 1000 + 90)
        common = ["-i", HOST, "-bind_local", "-buff_size", "4194304", "-nostdin", "-trace_stat",
                  "-fd", "1", "-recv_timeout", str(args.hold_ms + 60000), "-timeout", f"{life}s"]
        uas_stf, uac_stf = tdir / "uas.csv", tdir / "uac.csv"
        group.start(["timeout", "-k", "5", str(life + 10), "sipp", "-sn", "uas", "-p",
                     str(UAS_PORT), *common, "-stf", str(uas_stf)], cwd=tdir,
                    stdout=(tdir / "uas.out").open("w"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 10
        while not udp_port_bound(UAS_PORT) and time.monotonic() < end:
            time.sleep(0.1)
        uac = group.start(["timeout", "-k", "5", str(life + 5), "sipp", "-sn", "uac",
                           f"{HOST}:{PORT}", "-d", str(args.hold_ms), "-r", str(args.rate),
                           "-m", str(args.calls), "-l", str(args.calls), *common,
                           "-stf", str(uac_stf)], cwd=tdir,
                          stdout=(tdir / "uac.out").open("w"), stderr=subprocess.STDOUT)
        t_start = time.monotonic()
        deadline = t_start + args.budget
        placed = 0
        while time.monotonic() < deadline and uac.poll() is None:
            time.sleep(1)
            try:
                placed = int(last_stats_row(uac_stf)["TotalCallCreated"])
            except (RuntimeError, OSError, KeyError, ValueError):
                continue
            if placed >= args.calls:
                break
        t_last = time.monotonic()
        res["placed"], res["place_s"] = placed, round(t_last - t_start, 1)
        # the peak: every call set up, the INVITE transactions of the last 32 s still alive
        res["at_placed"] = target.reading()
        print(f"dialog_rss: {kind}: {placed} calls placed in {res['place_s']} s", flush=True)
        time.sleep(max(0.0, min(args.settle, deadline - time.monotonic())))
        last, stable = -1, 0
        while time.monotonic() < deadline and stable < 2:  # two equal readings 2 s apart
            n = target.confirmed()
            stable = stable + 1 if n == last else 0
            last = n
            time.sleep(2)
        res["after_s"] = round(time.monotonic() - t_last, 1)
        res["after"] = target.reading()
        res["confirmed"] = n = target.confirmed()
        uac_row = last_stats_row(uac_stf)
        res["uac"] = {k: uac_row.get(k) for k in ("TotalCallCreated", "CurrentCall",
                                                  "FailedCall(C)", "Retransmissions(C)")}
        res["per_dialog"] = target.per_dialog(res["before"], res["after"], max(n, 1))
        print(f"dialog_rss: {kind}: {n} confirmed, per dialog {res['per_dialog']}", flush=True)
        target.close()
    finally:
        group.stop_all()
        res["wall_s"] = round(time.monotonic() - t0, 1)
    return res


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # run the finally blocks: stop what was started


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=TARGETS, action="append")
    p.add_argument("--calls", type=int, default=100000)
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--hold-ms", type=int, default=120000)
    p.add_argument("--settle", type=float, default=33.0,
                   help="s after the last INVITE before reading (> 64*T1)")
    p.add_argument("--budget", type=float, default=300.0, help="s per target at most")
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    p.add_argument("--kam-shm-mb", type=int, default=512,
                   help="Kamailio's shared memory, MB (-m; the peers' README uses 512)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.calls < 1 or args.calls > 200000 or args.rate < 1:
        p.error("--calls 1..200000, --rate >= 1")
    if args.settle + args.calls / args.rate > args.budget:
        p.error("--budget shorter than placing the calls plus --settle")
    if args.hold_ms / 1000 < args.calls / args.rate + args.settle + 15:
        p.error("--hold-ms too short: the first calls would end before the reading")
    tmp = Path(tempfile.mkdtemp(prefix="dialog-rss-"))
    results = [run_target(k, args, tmp) for k in (args.target or ["sipline", "kamailio"])]
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"dialog_rss: files in {tmp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
