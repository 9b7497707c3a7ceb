"""Forged routing data on a real node: responses carrying made-up ``sl-c`` connection tags
cost no descriptor and no process, and a tag naming another client's TCP connection does
not reach that client (docs/security.md, "Forged routing data and process resilience")."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from workers.proxy import BRANCH_PREFIX, CONN_PARAM

from .conftest import StartNode
from .node import LOCALHOST, Node, Proc, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

#: forged responses in the flood: several times what once exhausted a worker's descriptors
FLOOD = 3000
#: descriptors a worker may gain during the flood (log pipe growth, a ZeroMQ reconnect)
FD_SLACK = 16
ATTACKER = "127.0.0.5"


def forged_response(port: int, i: int) -> bytes:
    """A 200 whose top Via is ours (our listener, our branch prefix) with a fresh tag: half
    the old bare form, half the new form with a made-up mac; the next Via is TCP, so the
    tag is what would pick the ingress and connection."""
    tag = f"ingress.{i}-{100000 + i}~{i}" + (f"~{i:020x}" if i % 2 else "")
    return (
        f"SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP {LOCALHOST}:{port};branch={BRANCH_PREFIX}{i:016x}.00000000;"
        f"{CONN_PARAM}={tag}\r\n"
        f"Via: SIP/2.0/TCP {LOCALHOST}:9;branch=z9hG4bKv{i}\r\n"
        f"From: <sip:a@{LOCALHOST}>;tag=f{i}\r\nTo: <sip:b@{LOCALHOST}>;tag=t{i}\r\n"
        f"Call-ID: forged-{i}-{uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def latest_drops(node: Node, reason: str) -> int:
    """The sum over processes of ``reason`` in each one's latest ``load_stats`` drops."""
    latest: dict[str, int] = {}
    for ev in node.proc.events("load_stats"):
        drops = ev.get("drops")
        if isinstance(drops, dict):
            latest[str(ev["proc"])] = int(drops.get(reason, 0))
    return sum(latest.values())


def node_pids(node: Node) -> dict[str, int]:
    return {name: int(pid) for name, pid in
            re.findall(r"(\S+) started \(pid=(\d+)\)", node.proc.text())}  # fmt: skip


def test_forged_tag_flood_costs_no_descriptor_and_no_process(
        start_node: StartNode, uas: Uas, tmp_path: Path) -> None:  # fmt: skip
    """3 000 forged responses, each with a fresh tag: each worker's descriptor count stays
    within a few of where it was, every process is alive, the drops are counted in
    load_stats and logged aggregated, and then 200 sipp calls complete with none failed."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2")
    workers = [node.pid("worker.1"), node.pid("worker.2")]
    before = [fd_count(pid) for pid in workers]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(FLOOD):
            s.sendto(forged_response(node.port, i), (LOCALHOST, node.port))
            if i % 50 == 49:
                time.sleep(0.005)  # pacing (~10 000/s): the kernel's socket buffer is finite
    # UDP on a loaded box may lose some in the kernel; most must arrive and be counted
    end = time.monotonic() + 15
    while latest_drops(node, "drop_forged_tag") < FLOOD * 0.9 and time.monotonic() < end:
        time.sleep(0.1)  # polling step, bounded by the deadline
    assert latest_drops(node, "drop_forged_tag") >= FLOOD * 0.9, node.proc.text()[-3000:]
    after = [fd_count(pid) for pid in workers]
    assert all(a <= b + FD_SLACK for a, b in zip(after, before)), (before, after)
    for name, pid in node_pids(node).items():
        os.kill(pid, 0)  # raises if any process of the node is gone
        assert f"{name} stopped" not in node.proc.text()
    logged = node.proc.events("responses_dropped")
    assert 1 <= len(logged) <= 2 * 2, logged  # per worker: once, maybe again 10 s later
    assert not node.proc.events("exception_caught")
    res = sipp_uac(node.port, "u1", 200, 100, tmp_path, timeout_s=60)
    assert res.successful == 200 and res.failed == 0, res.output


def _read_message(sock: socket.socket) -> bytes:
    """One SIP message with no body from a blocking TCP socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65535)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def _vias(msg: bytes) -> list[str]:
    return [ln for ln in msg.decode().split("\r\n") if ln.lower().startswith("via:")]


def _answer(request: bytes, status: str, vias: list[str]) -> bytes:
    """A response to ``request`` with the given Via lines."""
    keep = [ln for ln in request.decode().split("\r\n")[1:]
            if ln.split(":")[0].lower() in ("from", "to", "call-id", "cseq")]  # fmt: skip
    return ("\r\n".join([f"SIP/2.0 {status}", *vias, *keep, "Content-Length: 0"])
            + "\r\n\r\n").encode()


def test_tag_of_another_clients_connection_does_not_reach_it(start_node: StartNode) -> None:
    """The UAS (on 127.0.0.5) sees client A's genuine tag in the INVITE it is sent, and
    answers with a forged 200 naming A's connection but its own address: the ingress does not
    write into A's connection (the response goes to the address, back to the UAS); a tag with
    a made-up mac is dropped; the genuine 180 reaches A on its connection, and is the first
    and only thing A receives."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((ATTACKER, 0))
        server.listen(4)
        server.settimeout(10)
        uport = server.getsockname()[1]
        node = start_node(f"sip:{ATTACKER}:{uport};transport=tcp", "worker=1")
        with socket.create_connection((LOCALHOST, node.port), timeout=10) as a:
            aport = a.getsockname()[1]
            call_id = uuid.uuid4().hex
            a.sendall((
                f"INVITE sip:bob@{LOCALHOST}:{node.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {LOCALHOST}:{aport};branch=z9hG4bK{call_id};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@{LOCALHOST}>;tag=a1\r\n"
                f"To: <sip:bob@{LOCALHOST}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:alice@{LOCALHOST}:{aport};transport=tcp>\r\n"
                f"Content-Length: 0\r\n\r\n"
            ).encode())  # fmt: skip
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                invite = _read_message(conn)
                ours, client = _vias(invite)[:2]
                assert f";{CONN_PARAM}=" in ours
                own = f"Via: SIP/2.0/TCP {ATTACKER}:{uport};branch=z9hG4bKown;rport={uport}"
                # A's genuine tag, but the next Via is the attacker's own address
                conn.sendall(_answer(invite, "200 OK", [ours, own]))
                bounced = _read_message(conn)
                assert bounced.startswith(b"SIP/2.0 200"), bounced
                # a made-up mac on A's connection id, the next Via A's own: dropped
                tag = re.search(rf"{CONN_PARAM}=([^;\s]+)", ours)
                assert tag is not None
                forged = ours.replace(tag.group(1), tag.group(1)[:-4] + "0000")
                conn.sendall(_answer(invite, "486 Busy Here", [forged, client]))
                conn.sendall(_answer(invite, "180 Ringing", [ours, client]))
                got = _read_message(a)
    assert got.startswith(b"SIP/2.0 180 Ringing"), got
    assert len(re.findall(rb"^SIP/2\.0 \d{3} ", got, re.MULTILINE)) == 1, got
    stats = [e for e in node.proc.events("load_stats") if "tcp_conn_mismatch" in e]
    end = time.monotonic() + 5
    while not any(int(str(e["tcp_conn_mismatch"])) for e in stats) and time.monotonic() < end:
        time.sleep(0.1)  # polling step, bounded by the deadline
        stats = [e for e in node.proc.events("load_stats") if "tcp_conn_mismatch" in e]
    assert any(int(str(e["tcp_conn_mismatch"])) == 1 for e in stats), stats[-1:]
    end = time.monotonic() + 5
    while latest_drops(node, "drop_forged_tag") < 1 and time.monotonic() < end:
        time.sleep(0.1)  # polling step, bounded by the deadline
    assert latest_drops(node, "drop_forged_tag") == 1
