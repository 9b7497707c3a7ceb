"""Pike on a real node: a flood from 127.0.0.3 is blocked on every ingress, sipp from
127.0.0.1 is not affected; with ``[pike] cluster`` the block holds on the peer node too."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import VENV_BIN, Proc, UacRun, env_for, sipp_uac

pytestmark = pytest.mark.e2e

FLOODER = "127.0.0.3"
# a 1 s window of 100: sipp's 20 calls/s (INVITE, ACK, BYE: 60 requests/s) stay below it
PIKE = """
[pike]
enabled = true
sampling_time_unit_s = 1.0
reqs_density_per_unit = 100
remove_latency_s = 60
"""

Uas = Callable[[str], tuple[int, Proc]]


def options_to(port: int, lport: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {FLOODER}:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 0\r\nFrom: <sip:flood@{FLOODER}>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def flood(port: int, socks: list[socket.socket], count: int) -> int:
    """``count`` OPTIONS spread over ``socks`` (several source ports, so both ingresses get
    some), paced at ~1 000/s; returns how many were answered."""
    for i in range(count):
        s = socks[i % len(socks)]
        s.sendto(options_to(port, s.getsockname()[1]), ("127.0.0.1", port))
        time.sleep(0.001)  # pacing of the flood, not a synchronisation
    answered = 0
    end = time.monotonic() + 1.0
    for s in socks:
        s.settimeout(0.05)
        while time.monotonic() < end:
            try:
                s.recvfrom(65535)
            except TimeoutError:
                break
            answered += 1
    return answered


def ctl_pike(conf: Path) -> dict[str, object]:
    done = subprocess.run([f"{VENV_BIN}/sipline", "ctl", "pike", "--json"], env=env_for(conf),
                          capture_output=True, text=True, timeout=20, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["pike"]  # type: ignore[no-any-return]


def test_flood_blocked_on_both_ingresses_sipp_unaffected(start_node: StartNode, uas: Uas,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """240 OPTIONS from 127.0.0.3 within a second: at most the density is answered, one
    pike_blocked is logged, both ingresses list the source, later packets get no answer;
    meanwhile a sipp UAC from 127.0.0.1 completes at least 99 % of its calls."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2,ingress=2", PIKE)
    run = UacRun.start(node.port, "u1", 200, 20, tmp_path, timeout_s=60)
    socks = []
    try:
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((FLOODER, 0))
            socks.append(s)
        # 240, not 200: split 4:4 over the two ingresses (SO_REUSEPORT hashes the 8 source
        # ports), 200 gave each exactly the density and neither blocked
        answered = flood(node.port, socks, 240)
        assert 0 < answered <= 100 * 2, answered  # density per ingress that saw it
        blocked = node.proc.wait_events("pike_blocked", 1)
        assert blocked and {e["src"] for e in blocked} == {FLOODER}, node.proc.text()[-3000:]
        assert len(blocked) == 1  # logged once for the node, by the ingress that measured it
        end = time.monotonic() + 5
        procs: set[object] = set()
        while time.monotonic() < end:
            state = ctl_pike(node.conf)
            listed: list[dict[str, object]] = state["blocked"]  # type: ignore[assignment]
            rows = [r for r in listed if r["src"] == FLOODER]
            procs = {r["proc"] for r in rows}
            if len(procs) == 2:
                break
            time.sleep(0.1)  # polling step, bounded by the deadline
        assert len(procs) == 2, state
        assert sorted(str(r["origin"]) for r in rows) == ["local", "peer"]
        assert flood(node.port, socks, 40) == 0  # blocked everywhere: nothing answered
    finally:
        for s in socks:
            s.close()
    res = run.wait()
    assert res.successful >= 0.99 * 200 and res.successful + res.failed == 200, res.output
    drops = [d for e in node.proc.events("load_stats") if isinstance(d := e.get("drops"), dict)]
    assert any(d.get("drop_pike") for d in drops), "drop_pike never counted in load_stats"


def cluster(peer: Path) -> str:
    """``PIKE`` shared with the node whose run directory is ``peer`` (no replication)."""
    return PIKE + f'cluster = true\n\n[stateplane]\npeers = ["{peer}"]\n'


def test_block_on_one_node_holds_on_its_peer(start_node: StartNode, uas: Uas,
                                             tmp_path: Path) -> None:  # fmt: skip
    """Two nodes listing each other in ``[stateplane] peers`` with ``[pike] cluster``: a flood
    of node A from 127.0.0.3 is blocked there (one ``pike_blocked``, on A), node B's ``ctl
    pike`` lists the source as a peer's block and B answers none of its requests, while a
    sipp UAC from 127.0.0.1 through B completes every call."""
    dport, _ = uas("u1")
    a_dir, b_dir = tmp_path / "run0", tmp_path / "run1"  # start_node's run directories
    a = start_node(dport, "worker=1", cluster(b_dir), name="node-a")
    b = start_node(dport, "worker=1", cluster(a_dir), name="node-b")
    assert (a.run_dir, b.run_dir) == (a_dir, b_dir)
    socks = []
    try:
        for _ in range(4):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((FLOODER, 0))
            socks.append(s)
        assert flood(b.port, socks[:1], 5) == 5  # B answers the source before the block
        assert 0 < flood(a.port, socks, 200) <= 100
        end = time.monotonic() + 5
        rows: list[dict[str, object]] = []
        while time.monotonic() < end and not rows:
            listed: list[dict[str, object]] = ctl_pike(b.conf)["blocked"]  # type: ignore[assignment]
            rows = [r for r in listed if r["src"] == FLOODER]
            time.sleep(0.1)  # polling step, bounded by the deadline
        assert [r["origin"] for r in rows] == ["peer"], rows
        assert flood(b.port, socks, 40) == 0  # B drops the source too
    finally:
        for s in socks:
            s.close()
    res = sipp_uac(b.port, "u1", 20, 10, tmp_path, timeout_s=30)
    assert res.successful == 20 and res.failed == 0, res.output
    assert len(a.proc.events("pike_blocked")) == 1
    assert b.proc.events("pike_blocked") == []  # B applies A's block, it did not measure one
    b_drops = [e["drops"] for e in b.proc.wait_events("load_stats", 1)
               if str(e["proc"]).startswith("ingress")]  # fmt: skip
    assert any(d.get("drop_pike") for d in b_drops if isinstance(d, dict)), b_drops
