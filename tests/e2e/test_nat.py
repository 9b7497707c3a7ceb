"""User agents behind NAT through a real node (docs/nat.md): a phone registers a private
Contact (10.0.0.5:5060) from its real address (127.0.0.x:port) and is reached there; its
Contacts are rewritten to where it really is; keep-alives reach it at the interval, on its own
TCP connection for a TCP phone, and a phone that never answers them is dropped.

The phones here are Python sockets on 127.0.0.2 and 127.0.0.3 (other loopback addresses than
the node's), so "the source" and "the Contact" differ the way NAT makes them differ."""

from __future__ import annotations

import itertools
import queue
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response

from .conftest import StartNode
from .node import LOCALHOST, free_port, sipp_uac
from .test_stateful import REGISTRAR, Uas, drained

pytestmark = pytest.mark.e2e

PHONE_IP, CALLER_IP = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def sink() -> Iterator[tuple[int, socket.socket]]:
    """The default route: a UDP port that takes requests and never answers."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, port))
        s.setblocking(False)
        yield port, s


class Phone:
    """A UA on a UDP (or TCP) socket of its own address, writing a private Contact."""

    def __init__(self, ip: str, transport: str = "udp") -> None:
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((ip, 0))
        self.ip, self.port = self.sock.getsockname()
        self.node: tuple[str, int] | None = None
        self._buf = b""
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, node_port: int, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, (LOCALHOST, node_port))
            return
        if self.node is None:
            self.sock.connect((LOCALHOST, node_port))
            self.node = (LOCALHOST, node_port)
        self.sock.sendall(data)

    def recv(self, timeout_s: float) -> bytes | None:
        """One datagram, or on TCP one message or keep-alive; None at the deadline."""
        end = time.monotonic() + timeout_s
        while True:
            if self.transport != "udp":
                got = self._frame()
                if got is not None:
                    return got
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            data = self.sock.recv(65535)
            if self.transport == "udp":
                return data
            if not data:
                return None
            self._buf += data

    def _frame(self) -> bytes | None:
        if self._buf.startswith(b"\r\n\r\n"):
            self._buf = self._buf[4:]
            return b"\r\n\r\n"
        head, sep, _ = self._buf.partition(b"\r\n\r\n")
        if not sep:
            return None
        msg = parse_message(self._buf[: len(head) + 4])
        n = int((msg.header_values("content-length") or [b"0"])[0])
        end = len(head) + 4 + n
        if len(self._buf) < end:
            return None
        out, self._buf = self._buf[:end], self._buf[end:]
        return out

    def request(self, method: str, uri: str, node_port: int, *, contact: str, via_host: str,
                to: str | None = None, extra: str = "") -> None:  # fmt: skip
        self.seq += 1
        t = self.transport.upper()
        data = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{t} {via_host};branch=z9hG4bK-{self.port}-{self.seq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <{to or uri}>;tag=p{self.port}\r\nTo: <{to or uri}>\r\n"
            f"Call-ID: {method.lower()}-{self.ip}-{self.port}\r\nCSeq: {self.seq} {method}\r\n"
            f"Contact: {contact}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()
        self.send(node_port, data)

    def register(self, node_port: int, user: str, expires: int = 3600) -> None:
        """REGISTER ``user`` with the private Contact 10.0.0.5:5060; wait for the 200."""
        aor = f"sip:{user}@{LOCALHOST}:{node_port}"
        tp = f";transport={self.transport}" if self.transport != "udp" else ""
        self.request("REGISTER", f"sip:{LOCALHOST}:{node_port}", node_port, to=aor,
                     contact=f"<sip:{user}@10.0.0.5:5060{tp}>", via_host="10.0.0.5:5060",
                     extra=f"Expires: {expires}\r\n")  # fmt: skip
        resp = self.final(5.0)
        assert resp.status == 200, resp.raw

    def final(self, timeout_s: float) -> Response:
        """The next final response (provisional ones skipped)."""
        end = time.monotonic() + timeout_s
        while (data := self.recv(end - time.monotonic())) is not None:
            msg = parse_message(data) if data.strip() else None
            if isinstance(msg, Response) and msg.status >= 200:
                return msg
        pytest.fail("no final response")

    def next_request(self, timeout_s: float) -> Request:
        end = time.monotonic() + timeout_s
        while (data := self.recv(end - time.monotonic())) is not None:
            msg = parse_message(data) if data.strip() else None
            if isinstance(msg, Request) and msg.method != "ACK":  # our ACK of a non-2xx: skip
                return msg
        pytest.fail("no request arrived")


@pytest.fixture
def phones() -> Iterator[list[Phone]]:
    made: list[Phone] = []
    yield made
    for p in made:
        p.close()


def test_private_contact_is_reached_at_its_source(start_node: StartNode, uas: Uas,
                                                  sink: tuple[int, socket.socket],
                                                  tmp_path: Path) -> None:  # fmt: skip
    """sipp registers user1 with Contact 10.0.0.5:5060 from its own port; 5 calls to the AOR
    reach the sipp UAS listening on that port, none the default route."""
    dead, sock = sink
    node = start_node(dead, "worker=2", REGISTRAR)
    phone = free_port()
    reg = sipp_uac(node.port, "u1", 1, 1, tmp_path, scenario="register_nat", local_port=phone)
    assert (reg.successful, reg.failed) == (1, 0), reg.output
    uas_port, _ = uas("u1", "uas_rr", (), phone)
    assert uas_port == phone
    res = sipp_uac(node.port, "u1", 5, 5, tmp_path, scenario="uac_rr", service="user1")
    assert (res.successful, res.failed) == (5, 0), res.output
    assert not drained(sock)


def test_contacts_fixed_both_ways(start_node: StartNode, sink: tuple[int, socket.socket],
                                  phones: list[Phone]) -> None:  # fmt: skip
    """With fix_contact: a caller behind NAT (Contact and Via 192.168.1.7) calls a phone behind
    NAT (registered as 10.0.0.5): the INVITE reaching the phone and the 200 reaching the caller
    carry Contacts rewritten to where each really is, marked with the original."""
    dead, _ = sink
    node = start_node(dead, "worker=2", REGISTRAR + "\n[nat]\nfix_contact = true\n")
    phone, caller = Phone(PHONE_IP), Phone(CALLER_IP)
    phones += [phone, caller]
    phone.register(node.port, "user1")
    caller.request("INVITE", f"sip:user1@{LOCALHOST}:{node.port}", node.port,
                   contact="<sip:caller@192.168.1.7:5060>", via_host="192.168.1.7:5060")  # fmt: skip
    invite = phone.next_request(5.0)
    assert invite.method == "INVITE"
    assert invite.header_values("contact") == [
        f"<sip:caller@{CALLER_IP}:{caller.port};sl-nat=192.168.1.7:5060>".encode()
    ]
    ok = build_response(invite, 200, "OK", extra_headers=(b"Contact: <sip:user1@10.0.0.5:5060>",))
    phone.sock.sendto(ok, (LOCALHOST, node.port))
    resp = caller.final(5.0)
    assert resp.status == 200
    assert resp.header_values("contact") == [
        f"<sip:user1@{PHONE_IP}:{phone.port};sl-nat=10.0.0.5:5060>".encode()
    ]


NAT_PING = """
[nat]
ping_interval_s = 1
ping_drop_after = 2
"""


class Answering(threading.Thread):
    """Answers every OPTIONS on ``phone`` with 200 at once, noting when each came; any other
    request goes to ``requests`` (so the phone answers its keep-alives all the test long)."""

    def __init__(self, phone: Phone, node_port: int) -> None:
        super().__init__(daemon=True)
        self.phone, self.node_port = phone, node_port
        self.options: list[float] = []
        self.requests: queue.Queue[Request] = queue.Queue()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            data = self.phone.recv(0.1)
            msg = parse_message(data) if data else None
            if isinstance(msg, Request) and msg.method == "OPTIONS":
                assert msg.uri.raw == "sip:user1@10.0.0.5:5060"
                self.options.append(time.monotonic())
                self.phone.sock.sendto(build_response(msg, 200, "OK"), (LOCALHOST, self.node_port))
            elif isinstance(msg, Request):
                self.requests.put(msg)


@pytest.fixture
def answering() -> Iterator[list[Answering]]:
    made: list[Answering] = []
    yield made
    for a in made:
        a.stop.set()
        a.join(5)


def test_options_keepalives_and_silent_contact_dropped(start_node: StartNode,
                                                       sink: tuple[int, socket.socket],
                                                       phones: list[Phone],
                                                       answering: list[Answering]) -> None:  # fmt: skip
    """OPTIONS reach a registered phone behind NAT at its source about once a second; a
    phone that answers them stays reachable, one that never answers is removed after two
    unanswered ones, and a call to it then gets 480."""
    dead, _ = sink
    node = start_node(dead, "worker=2", REGISTRAR + NAT_PING)
    alive, silent, caller = Phone(PHONE_IP), Phone(PHONE_IP), Phone(CALLER_IP)
    phones += [alive, silent, caller]
    alive.register(node.port, "user1")
    answers = Answering(alive, node.port)
    answering.append(answers)
    answers.start()
    silent.register(node.port, "user2")
    silent_options = 0
    end = time.monotonic() + 10.0
    while time.monotonic() < end and (len(answers.options) < 4
                                      or not node.proc.events("nat_contact_dropped")):  # fmt: skip
        data = silent.recv(0.2)
        if data is not None:
            req = parse_message(data)
            assert isinstance(req, Request) and req.method == "OPTIONS"
            silent_options += 1
    seen = list(answers.options)
    assert len(seen) >= 4, seen
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert all(0.5 < g < 2.0 for g in gaps), gaps  # one a second, from the schedule
    dropped = node.proc.wait_events("nat_contact_dropped", 1, 5.0)
    assert [e["aor"] for e in dropped] == [f"sip:user2@{LOCALHOST}:{node.port}"], dropped
    assert silent_options == 2
    caller.request("INVITE", f"sip:user2@{LOCALHOST}:{node.port}", node.port,
                   contact=f"<sip:caller@{CALLER_IP}:{caller.port}>",
                   via_host=f"{CALLER_IP}:{caller.port}")  # fmt: skip
    assert caller.final(5.0).status == 480
    caller.request("INVITE", f"sip:user1@{LOCALHOST}:{node.port}", node.port,
                   contact=f"<sip:caller@{CALLER_IP}:{caller.port}>",
                   via_host=f"{CALLER_IP}:{caller.port}")  # fmt: skip
    assert answers.requests.get(timeout=5.0).method == "INVITE"
    end = time.monotonic() + 5.0  # the workers' load_stats count it (every 0.5 s)
    while (totals := nat_totals(node.proc.events("load_stats")))["nat_ping_drops"] < 1:
        assert time.monotonic() < end, totals
        time.sleep(0.1)  # polling step, bounded by the deadline
    assert totals["nat_ping_drops"] == 1 and totals["nat_ping_answers"] >= 3, totals


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_crlf_keepalives(start_node: StartNode, sink: tuple[int, socket.socket],
                         phones: list[Phone], transport: str) -> None:  # fmt: skip
    """ping_method = "crlf": CRLF CRLF reaches the phone every second, as a datagram to its
    UDP source, or on the very TCP connection it registered on."""
    dead, _ = sink
    conf = REGISTRAR + '\n[nat]\nping_interval_s = 1\nping_method = "crlf"\n'
    node = start_node(dead, "worker=2", conf)
    phone = Phone(PHONE_IP, transport)
    phones.append(phone)
    if transport == "tcp":
        phone.sock.settimeout(5.0)
    phone.register(node.port, "user1")
    got: list[float] = []
    end = time.monotonic() + 8.0
    while len(got) < 3 and time.monotonic() < end:
        data = phone.recv(end - time.monotonic())
        if data is None:
            break
        assert data == b"\r\n\r\n", data
        got.append(time.monotonic())
    assert len(got) == 3, got
    gaps = [b - a for a, b in itertools.pairwise(got)]
    assert all(0.5 < g < 2.0 for g in gaps), gaps


def test_tcp_contact_reached_on_its_connection(start_node: StartNode,
                                               sink: tuple[int, socket.socket],
                                               phones: list[Phone]) -> None:  # fmt: skip
    """A TCP phone behind NAT is reached on the connection it registered on, whichever of
    two ingresses the call comes through: 6 callers on UDP (spread by SO_REUSEPORT) each
    reach it, and no other connection is ever opened to it (it has no listening port)."""
    dead, _ = sink
    node = start_node(dead, "ingress=2,worker=2", REGISTRAR)
    phone = Phone(PHONE_IP, "tcp")
    phone.sock.settimeout(5.0)
    phones.append(phone)
    phone.register(node.port, "user1")
    for i in range(6):
        caller = Phone(CALLER_IP)
        phones.append(caller)
        caller.request("INVITE", f"sip:user1@{LOCALHOST}:{node.port}", node.port,
                       contact=f"<sip:c{i}@{CALLER_IP}:{caller.port}>",
                       via_host=f"{CALLER_IP}:{caller.port}")  # fmt: skip
        invite = phone.next_request(5.0)
        assert invite.method == "INVITE" and invite.call_id == f"invite-{CALLER_IP}-{caller.port}"
        phone.send(node.port, build_response(invite, 486, "Busy Here"))
        assert caller.final(5.0).status == 486


def nat_totals(events: list[dict[str, object]]) -> dict[str, int]:
    """The ``nat`` counters of each worker's latest load_stats, summed over the workers."""
    last: dict[object, dict[str, int]] = {}
    for e in events:
        if isinstance(e.get("nat"), dict):
            last[e.get("proc")] = e["nat"]  # type: ignore[assignment]
    out: dict[str, int] = {"nat_ping_drops": 0, "nat_ping_answers": 0}
    for counts in last.values():
        for k in out:
            out[k] += int(counts.get(k, 0))
    return out
