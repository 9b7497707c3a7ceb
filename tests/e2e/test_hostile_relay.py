"""The shipped config relays for nobody (docs/security.md "Relaying"): relay attempts sent to
a real node, with a real UDP socket on another loopback address (127.0.0.9) standing for the
victim; after each attack sipp calls through the node complete with 0 failures."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import LOCALHOST, Node, Proc, sipp_uac
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

VICTIM = "127.0.0.9"  # where an attacker wants its requests to go through us
TRUSTED = "127.0.0.5"  # a [[trusted]] source: a PBX allowed to pick its next hops
#: the shipped config plus one trusted source; the attacks come from 127.0.0.1, untrusted
EXTRA = {
    "stateless": f'[[trusted]]\ncidr = "{TRUSTED}"\n',
    "stateful": f'[[trusted]]\ncidr = "{TRUSTED}"\n\n[proxy]\nmode = "stateful"\n\n'
                "[dialogs]\nenabled = true\n",
}  # fmt: skip
#: how long a request waits for its final answer (5 s once passed on a loaded box with a
#: BYE sent right after the node's start unanswered) and an ACK for one it must never get
ANSWER_WITHIN_S = 15.0
NO_ANSWER_S = 5.0


@pytest.fixture
def victim() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.9: everything that reaches it is evidence of a relay."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((VICTIM, 0))
        yield s


@pytest.fixture
def peer() -> Iterator[Callable[[str], socket.socket]]:
    """``peer(ip)``: a UDP socket on ``ip`` (closed at teardown) to send SIP from."""
    socks: list[socket.socket] = []

    def make(ip: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(s)
        s.bind((ip, 0))
        return s

    yield make
    for s in socks:
        s.close()


def message(sock: socket.socket, method: str, uri: str, *, to_tag: str | None = None,
            route: str = "") -> tuple[str, bytes]:  # fmt: skip
    """(Call-ID, bytes) of a request from ``sock``'s address, rport asked."""
    ip, port = sock.getsockname()
    call_id = f"relay-{uuid.uuid4().hex}"
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
        "Max-Forwards: 70",
        f"From: <sip:mallory@{ip}>;tag=m1",
        f"To: <sip:bob@example.com>{f';tag={to_tag}' if to_tag else ''}",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        *([f"Route: {route}"] if route else []),
        f"Contact: <sip:mallory@{ip}:{port}>",
        "Content-Length: 0",
    ]
    return call_id, ("\r\n".join(lines) + "\r\n\r\n").encode()


def final_status(sock: socket.socket, node: Node, data: bytes, *, ack: bool = False) -> int | None:
    """Send ``data`` to the node and return the final status it answers, or None when no
    final comes within ANSWER_WITHIN_S (provisionals are skipped); an ACK (``ack``), which
    must get nothing, is watched NO_ANSWER_S. Sent once: a resend would be refused (and
    counted) again."""
    sock.sendto(data, (LOCALHOST, node.port))
    end = time.monotonic() + (NO_ANSWER_S if ack else ANSWER_WITHIN_S)
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            return None
        status = int(reply.split(b" ", 2)[1])
        if status >= 200:
            return status
    return None


def received_call_ids(victim: socket.socket, until: str) -> set[str]:
    """Call-IDs of everything the victim got, read until ``until``'s request arrives (the
    node handled the earlier attacks before it; bounded by a deadline)."""
    seen: set[str] = set()
    end = time.monotonic() + ANSWER_WITHIN_S
    while until not in seen and (left := end - time.monotonic()) > 0:
        victim.settimeout(left)
        try:
            data = victim.recv(65535)
        except TimeoutError:
            break
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"call-id:"):
                seen.add(line.split(b":", 1)[1].strip().decode())
    return seen


def calls_complete(node: Node, tmp_path: Path, after: str) -> None:
    res = sipp_uac(node.port, "u1", 20, 20, tmp_path)
    assert (res.successful, res.failed) == (20, 0), f"after {after}:\n{res.output}"


def worker_counters(node: Node) -> dict[str, int]:
    out: dict[str, int] = {}
    for reply in ctl(node.conf, "stats")["stats"]:  # type: ignore[attr-defined]
        if reply.get("role") == "worker":
            for k, v in reply["counters"].items():
                out[k] = out.get(k, 0) + v
    return out


@pytest.mark.parametrize("mode", ["stateless", "stateful"])
def test_relay_attempts_are_refused(start_node: StartNode, uas: Uas, victim: socket.socket,
                                    peer: Callable[[str], socket.socket], tmp_path: Path,
                                    mode: str) -> None:  # fmt: skip
    """From an untrusted source: an in-dialog BYE to 127.0.0.9 with no Route gets 404, an
    INVITE with a pre-loaded Route to it 403, an in-dialog ACK routed to it is dropped
    (counted); none of them reaches 127.0.0.9. The same pre-loaded Route and BYE from the
    [[trusted]] source do. sipp calls complete after each attack."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2", EXTRA[mode])
    vport = victim.getsockname()[1]
    target = f"sip:bob@{VICTIM}:{vport}"
    mallory = peer(LOCALHOST)
    attacks: list[str] = []

    cid, bye = message(mallory, "BYE", target, to_tag="t1")
    attacks.append(cid)
    assert final_status(mallory, node, bye) == 404, node.proc.text()[-3000:]
    calls_complete(node, tmp_path, "an in-dialog BYE to a foreign address")

    cid, invite = message(mallory, "INVITE", target, route=f"<sip:{VICTIM}:{vport};lr>")
    attacks.append(cid)
    assert final_status(mallory, node, invite) == 403, node.proc.text()[-3000:]
    calls_complete(node, tmp_path, "a pre-loaded Route")

    cid, ack = message(mallory, "ACK", target, to_tag="t1", route=f"<sip:{VICTIM}:{vport};lr>")
    attacks.append(cid)
    assert final_status(mallory, node, ack, ack=True) is None  # an ACK is never answered
    calls_complete(node, tmp_path, "an in-dialog ACK routed to a foreign address")

    pbx = peer(TRUSTED)
    trusted_invite, invite = message(pbx, "INVITE", target, route=f"<sip:{VICTIM}:{vport};lr>")
    pbx.sendto(invite, (LOCALHOST, node.port))
    assert received_call_ids(victim, trusted_invite) == {trusted_invite}  # and no attack
    trusted_bye, bye = message(pbx, "BYE", target, to_tag="t1")
    pbx.sendto(bye, (LOCALHOST, node.port))
    assert trusted_bye in received_call_ids(victim, trusted_bye)
    calls_complete(node, tmp_path, "a trusted source's relays")

    counters = worker_counters(node)
    assert counters.get("relay_refused") == 3, counters
    assert counters.get("drop_relay_ack") == 1, counters
