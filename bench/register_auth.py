#!/usr/bin/env python3
"""REGISTER with digest authentication against REGISTER without, through one node.

Method
------
One node (UDP on 127.0.0.1:``--port``, ``[proxy] mode = "stateful"``, ``[registrar]
enabled`` on ``local://``, ``--workers`` workers) is started per variant with
``honcho -f Procfile start``; it is ready when it answers an OPTIONS with Max-Forwards 0.
``digest`` adds ``[auth] enabled`` (MD5 offered: sipp 3.6 has no SHA-256) and an
``[[auth_realm]]`` whose credentials file lists 10 000 users.

Each step runs sipp at ``-r R -m R*duration`` on a scenario written here, every
registration a refresh of user ``bench``'s one binding (sipp 3.6 cannot take the username of
``[authentication]`` from an injection file, and ``[auth] match_user`` wants it to be the To
user, so there is one user; the AOR lock is then the same for all). ``plain``: REGISTER, 200.
``digest``: REGISTER, 401, REGISTER with ``[authentication]`` (``-au bench -ap ...``), 200:
two transactions per registration, as a phone does. A step passes with < 1 % of planned
registrations not answered 200. Reported per step: registrations/s asked, successful, mean time from the first
REGISTER to the 200 (sipp ``rtd``), the node's CPU (its honcho tree, % of one core) and CPU
per successful registration.

Bounds: sipp ``-timeout``, ``-recv_timeout 5000``, ``timeout`` kills sipp 15 s later; every
process started runs in its own session and is stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
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
    elapsed_s,
    node_config,
    start_node,
    stat_rows,
    udp_port_bound,
    wait_ready,
)

REALM = "bench.test"
PASSWORD = "bench-password"

HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register {variant}">
"""
REGISTER = """  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:bench@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:bench@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:bench@[local_ip]:[local_port]>
      {auth}Expires: 3600
      Content-Length: 0

    ]]>
  </send>
"""


def scenario(variant: str) -> str:
    body = HEAD.format(variant=variant)
    if variant == "digest":
        body += REGISTER.format(cseq=1, auth="")
        body += '  <recv response="401" auth="true"/>\n'
        body += REGISTER.format(cseq=2, auth="[authentication]\n      ")
    else:
        body += REGISTER.format(cseq=1, auth="")
    return body + '  <recv response="200" rtd="true"/>\n</scenario>\n'


def ha1(user: str) -> str:
    return hashlib.md5(f"{user}:{REALM}:{PASSWORD}".encode()).hexdigest()


def run_step(group: Group, node_pid: int, port: int, tmp: Path, variant: str, step: int,
             rate: int, duration: int) -> dict[str, object]:  # fmt: skip
    planned = rate * duration
    scen = tmp / f"{variant}.xml"
    stf = tmp / f"{variant}-{step}.csv"
    cmd = ["timeout", "-k", "5", str(duration + 30),
           "sipp", "-sf", str(scen), f"{HOST}:{port}", "-i", HOST, "-au", "bench",
           "-ap", PASSWORD, "-r", str(rate), "-m", str(planned), "-buff_size", "4194304",
           "-nostdin", "-trace_stat", "-stf", str(stf), "-fd", "1",
           "-timeout", f"{duration + 15}s", "-recv_timeout", "5000"]  # fmt: skip
    ticks0, t0 = Group.cpu_ticks(node_pid), time.monotonic()
    p = group.start(cmd, stdout=(tmp / f"sipp-{variant}-{step}.out").open("w"),
                    stderr=subprocess.STDOUT, cwd=tmp)  # fmt: skip
    p.wait()
    group.procs.remove(p)
    wall = time.monotonic() - t0
    cpu_s = (Group.cpu_ticks(node_pid) - ticks0) / CLK_TCK
    last = stat_rows(stf)[-1]
    ok = int(last["SuccessfulCall(C)"])
    return {"rate": rate, "planned": planned, "ok": ok,
            "rtd_ms": elapsed_s(last["ResponseTime1(C)"]) * 1000,
            "cpu_pct": cpu_s / wall * 100, "cpu_ms_per_reg": cpu_s * 1000 / max(ok, 1),
            "passed": (planned - ok) / planned < 0.01}  # fmt: skip


def config(tmp: Path, variant: str, port: int, users: int = 10_000) -> Path:
    conf = tmp / f"{variant}.toml"
    run_dir = str(tmp / f"run-{variant}")
    node_config(conf, name=f"regauth-{variant}", run_dir=run_dir, port=port, mode="stateful",
                registrar_url="local://")  # fmt: skip
    if variant == "digest":
        (tmp / "secret").write_bytes(os.urandom(16).hex().encode())
        creds = tmp / "users"
        # bench and users - 1 others, so the lookup is in a table of realistic size
        creds.write_text("".join(f"{u} MD5 {ha1(u)}\n"
                                 for u in ["bench", *(f"user{n}" for n in range(users - 1))]))
        conf.write_text(conf.read_text() + f'\n[auth]\nenabled = true\nalgorithms = ["MD5"]\n'
                        f'nonce_secret_file = "{tmp / "secret"}"\n\n[[auth_realm]]\n'
                        f'realm = "{REALM}"\ncredentials_file = "{creds}"\n')  # fmt: skip
    return conf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="100,200,400")
    ap.add_argument("--duration", type=int, default=5, help="s per step (-m = rate*duration)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=5162)
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    if max(rates) * args.duration > 20_000:
        raise SystemExit("at most 20 000 registrations per step")
    if shutil.which("sipp") is None:
        raise SystemExit("sipp not found")
    if udp_port_bound(args.port):
        raise SystemExit(f"UDP {HOST}:{args.port} is taken")
    group = Group()
    tmp = Path(tempfile.mkdtemp(prefix="sipline-regauth-"))
    print("| variant | asked/s | registered | mean REGISTER→200 | node CPU | CPU per registration |")
    print("|---|---:|---:|---:|---:|---:|")
    try:
        for variant in ("plain", "digest"):
            (tmp / f"{variant}.xml").write_text(scenario(variant))
            conf = config(tmp, variant, args.port)
            log = tmp / f"node-{variant}.log"
            os.environ["SIPLINE_CONF"] = str(conf)
            node = start_node(group, conf, args.workers, log)
            if not wait_ready(args.port):
                print(f"{variant}: node not ready, see {log}", file=sys.stderr)
                return 1
            for step, rate in enumerate(rates):
                r = run_step(group, node.pid, args.port, tmp, variant, step, rate, args.duration)
                print(f"| {variant} | {rate} | {r['ok']}/{r['planned']} | {r['rtd_ms']:.1f} ms "
                      f"| {r['cpu_pct']:.0f} % | {r['cpu_ms_per_reg']:.2f} ms |", flush=True)
                if not r["passed"]:
                    break
            group.stop(node)
    finally:
        group.stop_all()
    print(f"(work files in {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
