#!/usr/bin/env python3
"""REGISTER with digest authentication against REGISTER without, through one node.

Method
------
One node (UDP on 127.0.0.1:``--port``, ``[proxy] mode = "stateful"``, ``[registrar]
enabled`` on ``local://``, ``--workers`` workers) is started per variant with
``honcho -f Procfile start``; it is ready when it answers an OPTIONS with Max-Forwards 0.
``digest`` adds ``[auth] enabled`` (MD5 offered: sipp 3.6 has no SHA-256) and an
``[[auth_realm]]`` whose credentials file lists 10 000 users.

Each step runs sipp at ``-r R -m R*duration`` on a scenario written here whose From/To user
comes from an injection file (``s<step>u<n>``): every registration creates a binding for a
fresh AOR, as in bench/register.py (one AOR for all would measure its lock instead). sipp 3.6
cannot take the ``[authentication]`` username from that file, so every registration
authenticates as ``bench`` (``-au bench``) and the digest node runs with ``[auth] match_user =
false`` (that check is a string compare). ``plain``: REGISTER, 200. ``digest``: REGISTER,
401, REGISTER with ``[authentication]``, 200: two transactions per registration, as a phone
does. A step passes with < 1 % of planned
registrations not answered 200. Reported per step: registrations/s asked, successful, mean time from the first
REGISTER to the 200 (sipp ``rtd``), the node's CPU (its honcho tree, % of one core) and CPU
per successful registration.

``--micro`` instead times the sans-IO part alone in this process (``timeit``, best of 5):
``AuthGate.check`` of a REGISTER without credentials (a challenge: nonce minted, headers
built) and with good credentials (parse, HA1 from a 10 000-user table, response, nonce MAC,
nc), per algorithm; the parse of the request is not included.

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
      From: <sip:[field0]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
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
    inf = tmp / f"users-{variant}-{step}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"s{step}u{n};\n" for n in range(planned)))
    scen = tmp / f"{variant}.xml"
    stf = tmp / f"{variant}-{step}.csv"
    cmd = ["timeout", "-k", "5", str(duration + 30),
           "sipp", "-sf", str(scen), f"{HOST}:{port}", "-i", HOST, "-inf", str(inf), "-au", "bench",
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
        conf.write_text(conf.read_text() + '\n[auth]\nenabled = true\nalgorithms = ["MD5"]\n'
                        "match_user = false\n"
                        f'nonce_secret_file = "{tmp / "secret"}"\n\n[[auth_realm]]\n'
                        f'realm = "{REALM}"\ncredentials_file = "{creds}"\n')  # fmt: skip
    return conf


def micro() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from conf.settings import Auth, AuthRealm
    from ingress.sip.parser import parse_message
    from workers.auth.digest import ha1 as make_ha1
    from workers.auth.gate import AuthGate, Challenge
    from workers.auth.header import parse_credentials

    table = {(f"user{n}", a): make_ha1(a, f"user{n}", REALM, PASSWORD)
             for n in range(10_000) for a in ("MD5", "SHA-256")}  # fmt: skip
    table.update({("bench", a): make_ha1(a, "bench", REALM, PASSWORD) for a in ("MD5", "SHA-256")})

    def lookup(realm: str, algorithm: str, user: str) -> str | None:
        return table.get((user, algorithm))

    def register(auth: str = "", nc: int = 1) -> object:
        lines = [f"REGISTER sip:{REALM} SIP/2.0", "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx",
                 "Max-Forwards: 70", f"From: <sip:bench@{REALM}>;tag=1", f"To: <sip:bench@{REALM}>",
                 "Call-ID: bench-call", f"CSeq: {nc} REGISTER", *([auth] if auth else []),
                 "Content-Length: 0"]  # fmt: skip
        return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())

    print("| algorithm | challenge (µs) | verify good credentials (µs) |")
    print("|---|---:|---:|")
    for algorithm in ("MD5", "SHA-256"):
        cfg = Auth(enabled=True, algorithms=[algorithm], max_nonces=10_000_000)
        gate = AuthGate(cfg, [AuthRealm(realm=REALM, credentials_file="-")], b"x" * 32, "b/w.1", 0.0)
        bare = register()
        ch = gate.check(bare, 401, lookup, 1.0)  # type: ignore[arg-type]
        assert isinstance(ch, Challenge)
        c = parse_credentials(ch.headers[0].split(b": ", 1)[1])
        assert c is not None
        nonce, h1 = c.params["nonce"], table[("bench", algorithm)]
        hh = hashlib.md5 if algorithm == "MD5" else hashlib.sha256
        ha2 = hh(f"REGISTER:sip:{REALM}".encode()).hexdigest()
        reqs = []
        for i in range(1, 20_001):  # one nc each: a verify spends its nc
            resp = hh(f"{h1}:{nonce}:{i:08x}:c:auth:{ha2}".encode()).hexdigest()
            reqs.append(register(f'Authorization: Digest username="bench", realm="{REALM}", '
                                 f'nonce="{nonce}", uri="sip:{REALM}", response="{resp}", '
                                 f'algorithm={algorithm}, cnonce="c", qop=auth, nc={i:08x}', i))
        t_ch, t_ok = _time(gate, bare, iter(reqs), lookup, len(reqs) // 5)
        print(f"| {algorithm} | {t_ch * 1e6:.1f} | {t_ok * 1e6:.1f} |")


def _time(gate: Any, bare: object, reqs: Iterator[object], lookup: Any, per: int,
          ) -> tuple[float, float]:  # fmt: skip
    """Seconds per challenge and per verification, best of 5."""
    import timeit

    from workers.auth.gate import Verified

    assert isinstance(gate.check(next(reqs), 401, lookup, 2.0), Verified)
    t_ch = min(timeit.repeat(lambda: gate.check(bare, 401, lookup, 1.0), number=2000, repeat=5))
    t_ok = min(timeit.repeat(lambda: gate.check(next(reqs), 401, lookup, 2.0), number=per - 1,
                             repeat=5))  # fmt: skip
    return t_ch / 2000, t_ok / (per - 1)


def workers_joined(log: Path, workers: int, deadline_s: float = 30.0) -> bool:
    """The ingress has seen every worker: a nonce is checked by the worker that issued it
    (docs/auth.md), so a registration started before the last worker joined may be answered
    stale=true by the worker its Call-ID moved to, which sipp's linear scenario counts as a
    failure."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if f'"workers": {workers}, "event": "worker_joined"' in log.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rates", default="100,200,400")
    ap.add_argument("--duration", type=int, default=5, help="s per step (-m = rate*duration)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=5162)
    ap.add_argument("--micro", action="store_true", help="time the sans-IO part alone")
    args = ap.parse_args()
    if args.micro:
        micro()
        return 0
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
            if not wait_ready(args.port) or not workers_joined(log, args.workers):
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
