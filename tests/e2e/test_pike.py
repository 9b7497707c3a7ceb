"""Pike on a real node: a flood from 127.0.0.3 is blocked on every ingress, sipp from
127.0.0.1 is not affected; with ``[pike] cluster`` the block holds on the peer node too."""

from __future__ import annotations

import json
import re
import select
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


CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def options_to(port: int, lport: int, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {FLOODER}:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 0\r\nFrom: <sip:flood@{FLOODER}>;tag=1\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def flood(port: int, socks: list[socket.socket], count: int) -> set[str]:
    """``count`` OPTIONS spread over ``socks`` (several source ports, so both ingresses get
    some), sent back to back: pike sees the test's rate whatever the box's load (a paced
    flood stretched by a busy box would not trip it). Returns their Call-IDs."""
    call_ids = set()
    for i in range(count):
        s = socks[i % len(socks)]
        call_id = uuid.uuid4().hex
        s.sendto(options_to(port, s.getsockname()[1], call_id), ("127.0.0.1", port))
        call_ids.add(call_id)
    return call_ids


def answered(socks: list[socket.socket], call_ids: set[str], want: int | None = None,
             deadline_s: float = 10.0, quiet_s: float = 0.5) -> int:  # fmt: skip
    """How many of ``call_ids`` got an answer: read until ``want`` of them did, or (no
    ``want``: an upper bound, which reading longer can only make harder to meet) until
    none came for ``quiet_s`` (0: what has arrived); ``deadline_s`` bounds both."""
    got: set[bytes] = set()
    wanted = {c.encode() for c in call_ids}
    start = last = time.monotonic()
    while True:
        # polling step, bounded by the deadline
        ready, _, _ = select.select(socks, [], [], min(0.05, quiet_s) if want is None else 0.05)
        for s in ready:
            m = CALL_ID.search(s.recv(65535))
            if m is not None and m.group(1) in wanted:
                got.add(m.group(1))
                last = time.monotonic()
        now = time.monotonic()
        if now - start > deadline_s or (len(got) >= want if want is not None
                                        else not ready and now - last >= quiet_s):  # fmt: skip
            return len(got)


def dropped(conf: Path) -> int:
    """Requests of the flooder the node's ingresses dropped while it was blocked."""
    rows: list[dict[str, object]] = ctl_pike(conf)["blocked"]  # type: ignore[assignment]
    return sum(int(str(r["dropped"])) for r in rows if r["src"] == FLOODER)


def assert_all_dropped(conf: Path, port: int, socks: list[socket.socket], count: int) -> None:
    """``count`` more OPTIONS from the blocked flooder: the ingresses count every one of them
    dropped (the event that tells "never answered" from "not answered yet"), and none was
    answered."""
    before = dropped(conf)
    call_ids = flood(port, socks, count)
    end = time.monotonic() + 10
    while (now_dropped := dropped(conf)) < before + count:
        assert time.monotonic() < end, f"dropped {now_dropped - before} of {count}"
        time.sleep(0.1)  # polling step, bounded by the deadline
    assert now_dropped == before + count
    assert answered(socks, call_ids, quiet_s=0.0) == 0


def wait_drop_pike_logged(proc: Proc) -> None:
    """Until an ingress's ``load_stats`` counts ``drop_pike`` (logged every 0.5 s, relayed
    by honcho), or fail at the deadline."""
    end = time.monotonic() + 10
    while not any(isinstance(d := e.get("drops"), dict) and d.get("drop_pike")
                  for e in proc.events("load_stats") if str(e["proc"]).startswith("ingress")):  # fmt: skip
        assert time.monotonic() < end, "drop_pike never counted in load_stats"
        time.sleep(0.1)  # polling step, bounded by the deadline


def ctl_pike(conf: Path) -> dict[str, object]:
    done = subprocess.run([f"{VENV_BIN}/sipline", "ctl", "pike", "--json"], env=env_for(conf),
                          capture_output=True, text=True, timeout=20, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["pike"]  # type: ignore[no-any-return]


def test_flood_blocked_on_both_ingresses_sipp_unaffected(start_node: StartNode, uas: Uas,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """240 OPTIONS from 127.0.0.3 at once: at most the density is answered, one pike_blocked
    is logged, both ingresses list the source, later packets (from 8 source ports, so both
    ingresses get some) are all dropped and get no answer; meanwhile a sipp UAC from
    127.0.0.1 completes at least 99 % of its calls."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2,ingress=2", PIKE)
    run = UacRun.start(node.port, "u1", 200, 20, tmp_path, timeout_s=60)
    socks = []
    try:
        for _ in range(8):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((FLOODER, 0))
            socks.append(s)
        # from one source port, so one ingress (SO_REUSEPORT hashes the port) sees the
        # flood and measures the block, and the other applies it as told: split over both,
        # each could pass the density before hearing the other and log a block of its own
        answers = answered(socks[:1], flood(node.port, socks[:1], 240))
        assert 0 < answers <= 100, answers  # the density of the ingress that saw it
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
        assert_all_dropped(node.conf, node.port, socks, 40)  # blocked everywhere
    finally:
        for s in socks:
            s.close()
    res = run.wait()
    assert res.successful >= 0.99 * 200 and res.successful + res.failed == 200, res.output
    wait_drop_pike_logged(node.proc)


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
        # B answers the source before the block
        assert answered(socks[:1], flood(b.port, socks[:1], 5), want=5) == 5
        assert 0 < answered(socks, flood(a.port, socks, 200)) <= 100
        end = time.monotonic() + 5
        rows: list[dict[str, object]] = []
        while time.monotonic() < end and not rows:
            listed: list[dict[str, object]] = ctl_pike(b.conf)["blocked"]  # type: ignore[assignment]
            rows = [r for r in listed if r["src"] == FLOODER]
            time.sleep(0.1)  # polling step, bounded by the deadline
        assert [r["origin"] for r in rows] == ["peer"], rows
        assert_all_dropped(b.conf, b.port, socks, 40)  # B drops the source too
    finally:
        for s in socks:
            s.close()
    res = sipp_uac(b.port, "u1", 20, 10, tmp_path, timeout_s=30)
    assert res.successful == 20 and res.failed == 0, res.output
    assert len(a.proc.events("pike_blocked")) == 1
    assert b.proc.events("pike_blocked") == []  # B applies A's block, it did not measure one
    wait_drop_pike_logged(b.proc)
