"""Transaction-stateful proxying end to end: sipp UAC -> sipline (honcho) -> sipp UAS, with the
scenarios in tests/e2e/scenarios/. T1 is 50 ms here so that 64*T1 timeouts take 3.2 s."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import LOCALHOST, Proc, free_port, read_stat, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

STATEFUL = """
[proxy]
mode = "stateful"

[transactions]
t1_ms = 50
"""


@pytest.fixture
def sink() -> Iterator[tuple[int, socket.socket]]:
    """A UDP port that takes requests and never answers: a dead destination."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, port))
        s.setblocking(False)
        yield port, s


def drained(s: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(s.recv(65535))
        except BlockingIOError:
            return out


def uas_stats(uas: Uas, scenario: str, calls: int, tmp_path: Path) -> tuple[int, Proc, Path, Path]:
    """A scenario UAS that exits after ``calls`` calls, with its statistics and message log."""
    stf, msgs = tmp_path / f"{scenario}-stat.csv", tmp_path / f"{scenario}-msgs.log"
    port, proc = uas("u1", scenario, ("-m", str(calls), "-trace_stat", "-stf", str(stf),
                                      "-trace_msg", "-message_file", str(msgs)))  # fmt: skip
    return port, proc, stf, msgs


def uas_done(proc: Proc, stf: Path) -> tuple[int, int]:
    try:
        proc.popen.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the UAS did not finish its calls:\n{proc.text()[-2000:]}")
    return read_stat(stf)


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_stateful_calls_complete(start_node: StartNode, uas: Uas, tmp_path: Path,
                                 transport: str) -> None:  # fmt: skip
    """1000 calls at 200 calls/s through the stateful proxy: every one completes."""
    dport, _ = uas(transport)
    node = start_node(dport, "worker=2", STATEFUL)
    res = sipp_uac(node.port, transport, 1000, 200, tmp_path)
    assert (res.successful, res.failed) == (1000, 0), res.output


def test_uac_retransmission_is_absorbed(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """With no 100 Trying from the proxy, sipp's UAC retransmits each INVITE until the UAS
    answers a second later: the proxy absorbs the retransmissions (one INVITE per call reaches
    the UAS) and every call completes."""
    calls = 20
    dport, proc, stf, msgs = uas_stats(uas, "uas_slow", calls, tmp_path)
    node = start_node(dport, "worker=2", STATEFUL + "send_trying = false\n")
    res = sipp_uac(node.port, "u1", calls, 10, tmp_path)
    assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(proc, stf) == (calls, 0)
    retransmitted = int(re.findall(r"INVITE -+>\s+\d+\s+(\d+)", res.output)[0])
    assert retransmitted >= calls  # about two each at T1 = 500 ms before the 180
    received = msgs.read_text(errors="replace").count("INVITE sip:")
    assert received == calls, f"{received} INVITEs reached the UAS for {calls} calls"


def test_cancel_before_answer(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """CANCEL while ringing: the UAC gets 200 and 487, the UAS gets the CANCEL and the
    proxy's ACK for its 487; both sides count every call as a success."""
    calls = 20
    dport, proc, stf, _ = uas_stats(uas, "uas_ring_cancel", calls, tmp_path)
    node = start_node(dport, "worker=2", STATEFUL)
    res = sipp_uac(node.port, "u1", calls, 10, tmp_path, scenario="uac_cancel")
    assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(proc, stf) == (calls, 0)


def test_busy_is_relayed_and_acked_hop_by_hop(start_node: StartNode, uas: Uas,
                                              tmp_path: Path) -> None:  # fmt: skip
    """A 486 from the UAS reaches the UAC; the UAS gets its ACK (from the proxy)."""
    calls = 20
    dport, proc, stf, _ = uas_stats(uas, "uas_busy", calls, tmp_path)
    node = start_node(dport, "worker=2", STATEFUL)
    res = sipp_uac(node.port, "u1", calls, 10, tmp_path, scenario="uac_busy")
    assert (res.successful, res.failed) == (calls, 0), res.output
    assert uas_done(proc, stf) == (calls, 0)


def test_uas_that_never_answers_gets_408(start_node: StartNode, sink: tuple[int, socket.socket],
                                         tmp_path: Path) -> None:  # fmt: skip
    """A destination that never answers: the proxy retransmits to it and the UAC gets 408
    after 64*T1."""
    port, sock = sink
    node = start_node(port, "worker=2", STATEFUL)
    res = sipp_uac(node.port, "u1", 5, 5, tmp_path, scenario="uac_timeout", timeout_s=30)
    assert (res.successful, res.failed) == (5, 0), res.output
    invites = [d for d in drained(sock) if d.startswith(b"INVITE ")]
    assert len(invites) > 5  # Timer A retransmissions reached the dead end


def test_failover_from_a_dead_destination(start_node: StartNode, uas: Uas,
                                          sink: tuple[int, socket.socket],
                                          tmp_path: Path) -> None:  # fmt: skip
    """First destination dead, second alive: every call completes, those hashed to the dead
    one after Timer B moves them on."""
    dead, sock = sink
    live, _ = uas("u1", "uas_rr")
    node = start_node([dead, live], "worker=2", STATEFUL)
    res = sipp_uac(node.port, "u1", 20, 10, tmp_path, scenario="uac_rr", timeout_s=60)
    assert (res.successful, res.failed) == (20, 0), res.output
    assert any(d.startswith(b"INVITE ") for d in drained(sock)), "no call tried the dead one"


REGISTRAR = """
[registrar]
enabled = true
near_cache_ttl_s = 0
"""


def test_register_then_call_the_aor(start_node: StartNode, uas: Uas,
                                    sink: tuple[int, socket.socket], tmp_path: Path) -> None:  # fmt: skip
    """A phone registers (sipp register.xml, from the port its UAS then listens on) and a call
    to its AOR reaches it, not the default route (a dead end here), and the call's ACK and BYE
    follow its route set to the phone's Contact (uac_rr); once it unregisters,
    calls to it get 480 and no INVITE leaves the proxy."""
    dead, sock = sink
    node = start_node(dead, "worker=2", REGISTRAR)
    phone = free_port()
    reg = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register", local_port=phone)
    assert (reg.successful, reg.failed) == (1, 0), reg.output
    uas_port, _ = uas("u1", "uas_rr", (), phone)
    assert uas_port == phone
    res = sipp_uac(node.port, "u1", 10, 10, tmp_path, scenario="uac_rr", service="user1")
    assert (res.successful, res.failed) == (10, 0), res.output
    assert not drained(sock)
    unreg = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="unregister")
    assert (unreg.successful, unreg.failed) == (1, 0), unreg.output
    gone = sipp_uac(node.port, "u1", 3, 3, tmp_path, scenario="uac_unavailable", service="user1")
    assert (gone.successful, gone.failed) == (3, 0), gone.output
    assert not drained(sock)


def test_call_to_an_unknown_user_gets_404(start_node: StartNode, sink: tuple[int, socket.socket],
                                          tmp_path: Path) -> None:  # fmt: skip
    """A user of our domain that never registered: 404, and nothing is forwarded."""
    dead, sock = sink
    node = start_node(dead, "worker=2", REGISTRAR)
    res = sipp_uac(node.port, "u1", 3, 3, tmp_path, scenario="uac_notfound", service="nobody")
    assert (res.successful, res.failed) == (3, 0), res.output
    assert not drained(sock)


def test_slow_cachedb_calls_are_logged_with_the_call_id(start_node: StartNode,
                                                        sink: tuple[int, socket.socket],
                                                        tmp_path: Path) -> None:  # fmt: skip
    """With ``[registrar] cachedb_slow_ms = 0`` every cacheDB call crosses the threshold: the
    REGISTER's calls are logged as ``cachedb_slow`` with the backend, the operation, the time
    and the REGISTER's Call-ID."""
    dead, _ = sink
    node = start_node(dead, "worker=1", REGISTRAR.replace(
        "enabled = true", "enabled = true\ncachedb_slow_ms = 0"))  # fmt: skip
    reg = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register", local_port=free_port())
    assert (reg.successful, reg.failed) == (1, 0), reg.output
    slow = node.proc.wait_events("cachedb_slow", 1)
    assert slow, node.proc.text()[-2000:]
    assert all(str(e["call_id"]).endswith("@127.0.0.1") and e["backend"] == "local"
               and float(str(e["ms"])) >= 0 and e["op"] for e in slow), slow  # fmt: skip
