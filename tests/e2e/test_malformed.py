"""Malformed input over the wire gets its error answer and costs no process."""

from __future__ import annotations

import socket
import uuid

import pytest

from .conftest import StartNode
from .node import LOCALHOST, free_port, options

pytestmark = pytest.mark.e2e


def test_malformed_udp_request_gets_400(start_node: StartNode) -> None:
    """A request missing From/To/Call-ID gets 400 over UDP; every process is still alive."""
    node = start_node(free_port(), "worker=1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        s.settimeout(2)
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + uuid.uuid4().hex
        s.sendto(
            f"INVITE sip:bob@{LOCALHOST} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {LOCALHOST}:{lport};branch={branch}\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode(),
            (LOCALHOST, node.port),
        )
        answer = s.recv(65535)
        s.sendto(b"\x00\xff garbage that is no SIP at all\r\n\r\n", (LOCALHOST, node.port))
    assert answer.startswith(b"SIP/2.0 400 "), answer
    assert branch.encode() in answer
    ok = options(node.port, timeout_s=2)
    assert ok is not None and ok.startswith(b"SIP/2.0 200"), ok
    assert node.proc.popen.poll() is None
    assert not [ln for ln in node.proc.lines if " stopped (rc=" in ln]
