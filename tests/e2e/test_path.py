"""A phone registered through an edge proxy (RFC 3327 Path, docs/registrar.md) is called
through it: a real node, a UDP socket on 127.0.0.4 acting as the edge proxy (it relays the
phone's REGISTER adding its Path, then takes the INVITE), and sipp as the caller.

The phone's Contact is 10.0.0.5:5060, unreachable from here; the only way the INVITE can
reach the edge socket is the Path."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response

from .conftest import StartNode
from .node import LOCALHOST, UacRun, free_port
from .test_stateful import REGISTRAR, drained

pytestmark = pytest.mark.e2e

EDGE_IP = "127.0.0.4"


@pytest.fixture
def sink() -> Iterator[tuple[int, socket.socket]]:
    """The default route: a UDP port that takes requests and never answers."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, port))
        s.setblocking(False)
        yield port, s


@pytest.fixture
def edge() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((EDGE_IP, 0))
        yield s


def recv(sock: socket.socket, timeout_s: float) -> Request | Response:
    end = time.monotonic() + timeout_s
    while (left := end - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
        msg = parse_message(sock.recv(65535))
        if isinstance(msg, (Request, Response)):
            return msg
    pytest.fail("nothing arrived at the edge proxy")


def register(edge: socket.socket, node_port: int, cseq: int, supported: str,
             path: str = "", status: int = 200) -> Response:  # fmt: skip
    """The phone's REGISTER as the edge relays it: the edge's Via on top, its Path added."""
    ip, port = edge.getsockname()
    path = path or f"<sip:{ip}:{port};lr>"
    aor = f"sip:user1@{LOCALHOST}:{node_port}"
    data = (
        f"REGISTER sip:{LOCALHOST}:{node_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK-edge-{cseq}\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-ua-{cseq};received=192.0.2.9\r\n"
        f"Max-Forwards: 69\r\nFrom: <{aor}>;tag=ua\r\nTo: <{aor}>\r\n"
        f"Call-ID: reg-path-1\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:user1@10.0.0.5:5060>\r\nExpires: 600\r\n{supported}"
        f"Path: {path}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    edge.sendto(data, (LOCALHOST, node_port))
    resp = recv(edge, 5.0)
    assert isinstance(resp, Response) and resp.status == status, resp.raw
    return resp


def test_call_reaches_the_phone_through_its_path(start_node: StartNode, edge: socket.socket,
                                                 sink: tuple[int, socket.socket],
                                                 tmp_path: Path) -> None:  # fmt: skip
    """A REGISTER whose Path has a headers part gets 400. The 200 of a REGISTER echoes its Path only when it said ``Supported: path``; sipp's
    INVITE to the AOR then arrives at the edge proxy (not the default route, not the
    Contact) with the Path URI as its Route and the Contact as its Request-URI; the edge's
    480 reaches sipp and our ACK of it follows the same Route."""
    dead, sock = sink
    node = start_node(dead, "worker=2", REGISTRAR)
    ip, port = edge.getsockname()
    path = f"<sip:{ip}:{port};lr>".encode()
    # a Path that would smuggle headers into the Route of later calls: 400, nothing stored
    register(edge, node.port, 1, "", f"<sip:{ip}:{port};lr?Route=%3Csip:{ip}%3E>", 400)
    assert register(edge, node.port, 2, "").header_values("path") == []
    assert register(edge, node.port, 3, "Supported: path\r\n").header_values("path") == [path]
    caller = UacRun.start(node.port, "u1", 1, 1, tmp_path, 30.0, "uac_unavailable", None,
                          "user1")  # fmt: skip
    invite = recv(edge, 10.0)
    assert isinstance(invite, Request) and invite.method == "INVITE", invite.raw
    assert invite.uri.raw == "sip:user1@10.0.0.5:5060"
    assert invite.header_values("route") == [path]
    edge.sendto(build_response(invite, 480, "Temporarily Unavailable", to_tag="edge"),
                (LOCALHOST, node.port))  # fmt: skip
    while True:  # retransmissions of the INVITE may come before our ACK
        ack = recv(edge, 10.0)
        if isinstance(ack, Request) and ack.method == "ACK":
            break
    assert ack.header_values("route") == [path]
    res = caller.wait()
    assert (res.successful, res.failed) == (1, 0), res.output
    assert not drained(sock)
