"""Every stage restarted alone under load, with no call lost (docs/operations.md): ingresses
replaced one by another under UDP load, the state plane restarted with registrations and
calls up, the timers process restarted with lifetimes armed. The stage being restarted runs
outside honcho (honcho stops the whole node when one of its processes exits), started by
hand as an operator's runner would, the rest of the node under honcho."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .node import (
    REPO,
    VENV_BIN,
    Node,
    Proc,
    UacRun,
    assert_clean_stop,
    env_for,
    free_port,
    options,  # fmt: skip
    sipp_uac,
    write_config,
)
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
StageNode = Callable[..., Node]
Hand = Callable[[Node, str], Proc]


def wait_for(predicate: Callable[[], bool], what: str, deadline_s: float = 15.0,
             state: Callable[[], object] = lambda: "") -> None:  # fmt: skip
    """Poll ``predicate`` to the deadline; the failure says what ``state()`` says then."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}: {state()}")
        time.sleep(0.05)  # polling step, bounded by the deadline


@pytest.fixture
def stage_node(tmp_path: Path) -> Iterator[StageNode]:
    """``stage_node(dest_port, by_hand, scale, extra)``: a node under honcho without the
    ``by_hand`` stage, once its workers are ready; stopped cleanly at teardown."""
    nodes: list[Node] = []

    def start(dest_port: int, by_hand: str, scale: str = "worker=2", extra: str = "") -> Node:
        port, run_dir, conf = free_port(), tmp_path / "run", tmp_path / "sipline.toml"
        write_config(conf, run_dir, port, dest_port, extra=extra)
        argv = [os.path.join(VENV_BIN, "honcho"), "-f", str(REPO / "Procfile"), "start",
                "-c", f"{scale},{by_hand}=0"]  # fmt: skip
        node = Node(port, conf, run_dir, Proc.start(argv, env_for(conf), REPO))
        nodes.append(node)
        workers = int(scale.partition("worker=")[2].partition(",")[0] or 1)
        wait_for(lambda: len(node.proc.events("worker_ready")) >= workers, "the workers")
        return node

    yield start
    for node in nodes:
        if node.killed:  # stopped by the test already
            continue
        rc, output = node.stop()
        assert_clean_stop(rc, output)


@pytest.fixture
def hand() -> Iterator[Hand]:
    """``hand(node, role)`` starts one process of ``role`` by hand on ``node``'s config;
    whatever is still running at teardown must stop cleanly on SIGTERM."""
    procs: list[Proc] = []

    def start(node: Node, role: str) -> Proc:
        p = Proc.start([os.path.join(VENV_BIN, "sipline"), role], env_for(node.conf), REPO)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.popen.poll() is None:
            assert p.stop(signal.SIGTERM, timeout_s=10) == 0, p.text()[-2000:]


def ready_ingress(node: Node, hand: Hand, workers: int = 2) -> Proc:
    """A hand-started ingress once it has bound its listeners, every worker known to it."""
    p = hand(node, "ingress")
    wait_for(lambda: bool(p.events("ingress_listening")), "the ingress to listen")
    ready = p.events("ingress_ready")[0]
    assert ready["workers"] == workers and ready["missing"] == [], ready
    return p


def stop_node(node: Node) -> None:
    rc, output = node.stop()
    assert_clean_stop(rc, output)
    node.killed = True  # nothing left for the fixture to stop


def busy(p: Proc) -> bool:
    return any(float(str(e.get("msgs_in_per_s", 0))) > 0 for e in p.events("load_stats"))


def cdrs(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dialogs(cdr_file: Path, extra: str = "") -> str:
    return f"""
[proxy]
mode = "stateful"

[dialogs]
enabled = true
cdr_file = "{cdr_file}"
{extra}
"""


CALLS = 1500


def test_ingress_replaced_under_udp_load_loses_no_call(stage_node: StageNode, uas: Uas,
                                                       hand: Hand, tmp_path: Path) -> None:  # fmt: skip
    """1 500 calls at 150/s over UDP while the ingress is replaced twice (a new one started,
    ready, then the old one SIGTERMed): every call completes, each old ingress exits 0 after
    handing on what its socket had queued, each new one carries calls, and the CDR file holds
    every call once."""
    dport, _ = uas("u1")
    cdr_file = tmp_path / "cdr.jsonl"
    node = stage_node(dport, "ingress", "worker=2", dialogs(cdr_file))
    old = ready_ingress(node, hand)
    wait_for(lambda: (options(node.port) or b"").startswith(b"SIP/2.0 200"), "an answer")
    run = UacRun.start(node.port, "un", CALLS, 150, tmp_path, timeout_s=90,
                       extra=("-max_socket", "4000"))
    try:
        for _ in range(2):
            wait_for(lambda o=old: busy(o), "calls through the ingress")  # type: ignore[misc]
            new = ready_ingress(node, hand)
            assert old.stop(signal.SIGTERM, timeout_s=10) == 0, old.text()[-2000:]
            leaving = old.events("ingress_leaving")
            assert len(leaving) == 1 and leaving[0]["workers"] == 2, leaving
            old = new
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    assert busy(old)
    stop_node(node)  # the CDR writers flush on a clean stop
    rows = cdrs(cdr_file)
    assert len(rows) == CALLS and len({r["call_id"] for r in rows}) == CALLS


def udp_bound(port: int) -> bool:
    """Whether something listens on UDP 127.0.0.1:``port`` (binding it fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def owned(node: Node) -> int:
    """The dialogs the node's state plane mirrors (``sipline ctl stats``), -1 if it is not
    answering."""
    try:
        rows = ctl(node.conf, "stats", "--timeout", "5")["stats"]  # a loaded box's answers
    except AssertionError:
        return -1
    for r in rows:  # type: ignore[attr-defined]
        if r.get("role") == "stateplane" and r.get("stateplane"):
            return int(r["stateplane"]["owned"])
    return -1


HELD = 20
#: the held calls of the state plane's restart: past every deadline from their start to the
#: resync check (15 s + 10 s + 15 s + 15 s); 10 s holds ended first on a loaded box (CI: the
#: workers resynced an empty table into the new mirror, every call done)
RESTART_HOLD_MS = 60_000


def test_state_plane_restarted_alone_keeps_registrations_and_calls(
    stage_node: StageNode, uas: Uas, hand: Hand, tmp_path: Path
) -> None:
    """A phone registers and 20 calls are up when the state plane is SIGTERMed and started
    again: it loads the registration from its disk (a call to the phone's AOR reaches the
    phone after the restart), the workers resync their dialogs into its mirror (20 again,
    none restored twice from its disk), and the held calls end normally with one CDR each."""
    dport, _ = uas("u1")
    cdr_file = tmp_path / "cdr.jsonl"
    extra = dialogs(cdr_file) + f"""
[registrar]
enabled = true
near_cache_ttl_s = 0

[stateplane]
replicate = true
persist_dir = "{tmp_path / 'state'}"
"""
    node = stage_node(dport, "stateplane", "worker=2", extra)
    sp = hand(node, "stateplane")
    wait_for(lambda: bool(sp.events("stateplane_ready")), "the state plane")
    wait_for(lambda: (options(node.port) or b"").startswith(b"SIP/2.0 200"), "an answer")
    phone = free_port()
    reg = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register", local_port=phone)
    assert (reg.successful, reg.failed) == (1, 0), reg.output
    uas("u1", "uas_rr", (), phone)
    wait_for(lambda: udp_bound(phone), "the phone's sipp to listen")
    held = UacRun.start(node.port, "u1", HELD, 20, tmp_path, timeout_s=120,
                        scenario="uac_rr_hold", service="user1",
                        extra=("-d", str(RESTART_HOLD_MS)))  # fmt: skip
    try:
        wait_for(lambda: owned(node) == HELD, "the calls in the state plane's mirror",
                 state=lambda: (owned(node), calls_up(node), held.popen.poll(),
                                node.proc.text()[-3000:]))  # fmt: skip
        assert sp.stop(signal.SIGTERM, timeout_s=10) == 0, sp.text()[-2000:]
        sp = hand(node, "stateplane")
        loaded = sp.wait_events("kv_loaded", 1, timeout_s=15)
        assert loaded and int(str(loaded[0]["keys"])) >= 1, sp.text()[-2000:]
        wait_for(lambda: owned(node) == HELD, "the workers' resync into the new mirror",
                 state=lambda: (owned(node), calls_up(node), held.popen.poll(),
                                sp.text()[-3000:]))  # fmt: skip
        # the restore waits up to 10 s for the workers (stateplane/handover.py rule 4)
        restored = sp.wait_events("dialogs_restored", 1, timeout_s=30)
        assert restored and restored[0]["dialogs"] == 0, restored
        assert restored[0]["kept_by_workers"] == HELD, restored
        call = sipp_uac(node.port, "u1", 5, 5, tmp_path, scenario="uac_rr", service="user1")
        assert (call.successful, call.failed) == (5, 0), call.output
        res = held.wait()
    finally:
        held.kill()
    assert (res.successful, res.failed) == (HELD, 0), res.output
    wait_for(lambda: owned(node) == 0, "the ended calls to leave the mirror")
    stop_node(node)
    rows = cdrs(cdr_file)
    assert len(rows) == HELD + 5 and len({r["call_id"] for r in rows}) == HELD + 5, rows


def test_timers_restarted_alone_fire_every_lifetime_once(
    stage_node: StageNode, uas: Uas, hand: Hand, tmp_path: Path
) -> None:
    """20 calls whose callers never hang up, an 8 s lifetime, and the timers process
    SIGTERMed and started again while they are up: the workers re-arm the new one, which
    fires every lifetime, and every call ends by it with BYE both ways and one CDR, cause
    expired."""
    dport, _ = uas("u1", "uas_rr")
    cdr_file = tmp_path / "cdr.jsonl"
    node = stage_node(dport, "timers", "worker=2", dialogs(cdr_file, "default_lifetime_s = 8"))
    timers = hand(node, "timers")
    wait_for(lambda: bool(timers.events("timers_ready")), "the timers process")
    wait_for(lambda: (options(node.port) or b"").startswith(b"SIP/2.0 200"), "an answer")
    run = UacRun.start(node.port, "u1", HELD, 20, tmp_path, scenario="uac_wait_bye",
                       timeout_s=60)  # fmt: skip
    try:
        wait_for(lambda: calls_up(node) == HELD, "the calls to be up")
        assert timers.stop(signal.SIGTERM, timeout_s=10) == 0, timers.text()[-2000:]
        timers = hand(node, "timers")
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (HELD, 0), res.output
    (after,) = [r for r in ctl(node.conf, "stats")["stats"]  # type: ignore[attr-defined]
                if r["role"] == "timers"]  # fmt: skip
    # the new process fired them all: the restart came long before any lifetime ran out
    assert int(after["counters"].get("fired", 0)) >= HELD, after
    stop_node(node)
    rows = cdrs(cdr_file)
    assert len(rows) == HELD and len({r["call_id"] for r in rows}) == HELD, rows
    assert {r["cause"] for r in rows} == {"expired"}, rows


def calls_up(node: Node) -> int:
    """Live dialogs across the node's workers (``sipline ctl dialogs``)."""
    view = ctl(node.conf, "dialogs")["dialogs"]
    return int(view["node"]["active"])  # type: ignore[index]


def options_on(sock: socket.socket, port: int) -> bytes:
    """One OPTIONS to the proxy on an open TCP connection; the answer's first bytes."""
    lport = sock.getsockname()[1]
    sock.sendall((
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
        f"Max-Forwards: 0\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode())  # fmt: skip
    return sock.recv(65535)


def exit_code(p: Proc, timeout_s: float) -> int | None:
    """``p``'s exit status once it exits by itself within ``timeout_s``, else None."""
    try:
        return p.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def test_a_replaced_ingress_serves_its_tcp_connections_until_they_close(
    stage_node: StageNode, uas: Uas, hand: Hand
) -> None:
    """SIGTERM to an ingress holding a TCP connection, its replacement ready: it keeps
    answering on that connection while new connections reach the replacement, and exits 0
    as soon as the client closes; a connection kept open past ``[tcp] drain_s`` (8 s here:
    room for the first case's steps on a loaded box) is closed by the ingress, which then
    exits 0 (the client reconnects, RFC 5626)."""
    dport, _ = uas("u1")
    node = stage_node(dport, "ingress", "worker=2", "[tcp]\ndrain_s = 8")
    old = ready_ingress(node, hand)
    for closes in ("client", "deadline"):
        conn = socket.create_connection(("127.0.0.1", node.port), timeout=5)
        assert options_on(conn, node.port).startswith(b"SIP/2.0 200")
        new = ready_ingress(node, hand)
        old.popen.send_signal(signal.SIGTERM)
        wait_for(lambda o=old: bool(o.events("ingress_leaving")), "the old one to leave")  # type: ignore[misc]
        if closes == "client":
            assert options_on(conn, node.port).startswith(b"SIP/2.0 200")  # still served
            assert old.popen.poll() is None, old.text()[-2000:]
            assert (options(node.port, "tcp") or b"").startswith(b"SIP/2.0 200")  # the new one
            conn.close()
        else:
            t0 = time.monotonic()
            conn.settimeout(20)
            assert conn.recv(1) == b""  # closed by the ingress at its deadline
            assert time.monotonic() - t0 < 16
            conn.close()
        assert exit_code(old, 10) == 0, old.text()[-2000:]  # on its own: no second signal
        assert old.events("ingress_leaving")[0]["tcp_conns"] == 1
        drained = old.events("ingress_drained")
        assert drained[0]["tcp_left"] == (0 if closes == "client" else 1), drained
        old = new
