"""``sipline ctl`` against a running node: destination health from OPTIONS probing, stats."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conf import compiled
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response

from .conftest import StartNode
from .node import LOCALHOST, VENV_BIN, env_for, free_port

pytestmark = pytest.mark.e2e

PROBING = """
[proxy]
mode = "stateful"
"""


@pytest.fixture
def responder() -> Iterator[int]:
    """A UDP peer that answers every OPTIONS 200 (a live destination)."""
    port = free_port()
    stop = threading.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCALHOST, port))
    sock.settimeout(0.05)

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "OPTIONS":
                sock.sendto(build_response(msg, 200, "OK"), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join(2)
    sock.close()


def ctl(conf: Path, what: str, *extra: str) -> dict[str, object]:
    # 60 s: at load 15-20 the CLI's imports alone took 4-7 s, and one ctl ran past 20 s
    done = subprocess.run([f"{VENV_BIN}/sipline", "ctl", what, "--json", *extra], env=env_for(conf),
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_ctl_destinations_shows_probed_health(start_node: StartNode, responder: int,
                                              tmp_path: Path) -> None:  # fmt: skip
    """With probing on, a destination that never answers goes down and one that answers stays
    up, as ``sipline ctl destinations`` shows; the change is one ``destination_health`` event."""
    dead = free_port()  # nothing listens there
    node = start_node([responder, dead], "worker=2", PROBING,
                      "probe_interval_s = 0.2\nprobe_timeout_s = 0.1")  # fmt: skip
    end = time.monotonic() + 10
    states: dict[str, object] = {}
    while time.monotonic() < end:
        rows = ctl(node.conf, "destinations")["destinations"]
        states = {str(r["uri"]): r["state"] for r in rows}  # type: ignore[index,union-attr]
        if states.get(f"sip:127.0.0.1:{dead}") == "down" and (
                states.get(f"sip:127.0.0.1:{responder}") == "up"):  # fmt: skip
            break
        time.sleep(0.2)  # polling step, bounded by the deadline
    assert states == {f"sip:127.0.0.1:{responder}": "up", f"sip:127.0.0.1:{dead}": "down"}
    events = node.proc.events("destination_health")
    assert [e["new"] for e in events if e["uri"] == f"sip:127.0.0.1:{dead}"][-1] == "down"
    stats = ctl(node.conf, "stats")
    procs = {str(r["proc"]) for r in stats["stats"]}  # type: ignore[union-attr]
    assert sum(p.startswith("worker") for p in procs) == 2


def test_stats_say_which_build_each_process_runs(start_node: StartNode) -> None:
    """Each ingress and worker answers ``ctl stats`` with ``compiled``: true exactly when this
    checkout's compiled build is up to date and SIPLINE_PURE is not set (conf/compiled.py)."""
    node = start_node(free_port(), "worker=1")
    expected = compiled.check().usable and not compiled.pure_forced()
    rows = ctl(node.conf, "stats")["stats"]
    got = {str(r["proc"]).split(".")[0]: r.get("compiled") for r in rows}  # type: ignore[union-attr]
    assert got["ingress"] is expected and got["worker"] is expected, got


def test_slow_messages_are_logged_with_call_id(start_node: StartNode, tmp_path: Path) -> None:
    """Above ``[log] slow_message_ms`` a worker logs where a message's time went (queued,
    handled) with its Call-ID; here the threshold is so low every message crosses it."""
    from .node import sipp_uac, sipp_uas

    port = free_port()
    uas = sipp_uas(port, "u1", tmp_path)
    try:
        node = start_node(port, "worker=1", log_extra="slow_message_ms = 0.001")
        res = sipp_uac(node.port, "u1", 3, 3, tmp_path)
        assert (res.successful, res.failed) == (3, 0), res.output
        slow = node.proc.wait_events("slow_message", 18)
        calls = {str(e["call_id"]) for e in slow} - {""}
        assert len({c for c in calls if c.endswith("@127.0.0.1")}) == 3  # sipp's, not the probes
        assert {e["method"] for e in slow} >= {"INVITE", "ACK", "BYE", "response"}
        assert all(float(str(e["handle_ms"])) > 0 for e in slow)
    finally:
        uas.stop(timeout_s=5)
