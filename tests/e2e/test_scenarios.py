"""The sipp scenarios other e2e tests stand on, driven message by message from a socket (no
node): what a test takes for the proxy's behaviour must not be the UAS's."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .node import LOCALHOST, Proc

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

#: how long a test waits for an answer that must come (only a failing test waits it out)
ANSWER_S = 15.0


class Caller:
    """One call's requests, built by hand, over a UDP socket or a TCP connection, and the
    answers read to a deadline."""

    def __init__(self, sock: socket.socket, uas_port: int) -> None:
        self.sock = sock
        self.uas = (LOCALHOST, uas_port)
        self.tcp = sock.type == socket.SOCK_STREAM
        self.call_id = uuid.uuid4().hex
        self.to_tag = ""
        self._stream = b""  # TCP: bytes read past the last whole message
        #: every answer read, as (status, CSeq method)
        self.seen: list[tuple[int, str]] = []

    def request(self, method: str, cseq: int, branch: str) -> bytes:
        port = self.sock.getsockname()[1]
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        proto = "TCP" if self.tcp else "UDP"
        return (
            f"{method} sip:service@{LOCALHOST}:{self.uas[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto} {LOCALHOST}:{port};branch=z9hG4bK{branch}\r\n"
            f"From: <sip:caller@{LOCALHOST}>;tag=c1\r\n"
            f"To: <sip:service@{LOCALHOST}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:caller@{LOCALHOST}:{port}>\r\n"
            "Max-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()

    def send(self, data: bytes) -> None:
        if self.tcp:
            self.sock.sendall(data)
        else:
            self.sock.sendto(data, self.uas)

    def _next(self, timeout_s: float) -> bytes | None:
        """The next message from the UAS (TCP: framed by its Content-Length), or None."""
        self.sock.settimeout(max(timeout_s, 0.001))
        try:
            if not self.tcp:
                return self.sock.recv(65535)
            while (msg := self._framed()) is None:
                chunk = self.sock.recv(65535)
                if not chunk:
                    return None
                self._stream += chunk
            return msg
        except TimeoutError:
            return None

    def _framed(self) -> bytes | None:
        head, sep, rest = self._stream.partition(b"\r\n\r\n")
        if not sep:
            return None
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        size = int(m.group(1)) if m else 0
        if len(rest) < size:
            return None
        self._stream = rest[size:]
        return head + sep + rest[:size]

    def answer(self, status: int, method: str, timeout_s: float = ANSWER_S) -> bytes | None:
        """The first ``status`` answer to ``method`` within the deadline (others skipped)."""
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            data = self._next(left)
            if data is None:
                return None
            head = data.split(b"\r\n\r\n", 1)[0]
            first = head.split(b"\r\n", 1)[0].split()
            cseq = re.search(rb"(?im)^cseq\s*:\s*\d+\s+(\S+)", head)
            if first[0] != b"SIP/2.0" or cseq is None:
                continue
            got = (int(first[1]), cseq.group(1).decode())
            self.seen.append(got)
            if got == (status, method):
                if not self.to_tag:
                    to = next(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"to:"))
                    self.to_tag = to.split(b";tag=", 1)[1].decode()
                return data
        return None


def bound(port: int, transport: str) -> bool:
    """Whether something holds ``port`` on 127.0.0.1 (binding it fails)."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


@pytest.fixture
def connect() -> Iterator[Callable[[int, str], socket.socket]]:
    """``connect(uas_port, "udp"|"tcp")``: a socket to a UAS once it holds its port."""
    socks: list[socket.socket] = []

    def make(port: int, transport: str) -> socket.socket:
        end = time.monotonic() + ANSWER_S
        while not bound(port, transport):  # sipp binds a moment after it starts
            assert time.monotonic() < end, f"the UAS never bound {transport} {port}"
            time.sleep(0.05)  # polling step, bounded by the deadline
        if transport == "tcp":
            sock = socket.create_connection((LOCALHOST, port), timeout=ANSWER_S)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((LOCALHOST, 0))
        socks.append(sock)
        return sock

    yield make
    for s in socks:
        s.close()


def start_call(call: Caller) -> bytes:
    """The INVITE, answered as the built-in uas answers it: a 180, then the 200."""
    invite = call.request("INVITE", 1, "inv1")
    call.send(invite)
    assert call.answer(200, "INVITE") is not None, "the UAS never answered the INVITE"
    assert [s for s in call.seen if s[0] != 100] == [(180, "INVITE"), (200, "INVITE")], call.seen
    return invite


@pytest.mark.parametrize("scenario", ["uas", "uas_rr", "uas_slow"])
def test_uas_answers_invite_copies_after_its_200_over_udp(uas: Uas, connect: Callable[[int, str],
                                                          socket.socket], scenario: str) -> None:  # fmt: skip
    """Copies of the INVITE that reach scenarios/uas.xml (every e2e test's UAS) after its 200,
    as stateless hops relay a caller's retransmissions, are taken in: the 200 comes again (its
    retransmissions until the ACK) and the call still ends with its BYE answered, where sipp's
    built-in uas aborts it (below). The same for the scenarios built on the built-in one
    (uas_rr's line is also in uas_rr_checked and uas_rr_pai)."""
    port, _ = uas("u1", scenario)
    call = Caller(connect(port, "udp"), port)
    invite = start_call(call)
    for _ in range(2):  # the first one matches the optional receive, the second is a duplicate
        call.send(invite)  # the same bytes, as a stateless relay forwards a retransmission
        assert call.answer(200, "INVITE") is not None, "no 200 after the copy"
    call.send(call.request("ACK", 1, "ack1"))
    call.send(call.request("BYE", 2, "bye1"))
    assert call.answer(200, "BYE") is not None, "the UAS dropped the call on the INVITE copy"
    assert (180, "INVITE") not in call.seen[2:], call.seen  # nothing answers a copy with a 180


def test_uas_takes_invite_copies_after_its_200_over_tcp(uas: Uas, connect: Callable[[int, str],
                                                        socket.socket]) -> None:  # fmt: skip
    """The same over TCP, where a UDP caller's retransmission reaches a TCP UAS through a
    stateless hop (no retransmissions there: the copies are taken in, the call goes on)."""
    port, _ = uas("t1")
    call = Caller(connect(port, "tcp"), port)
    invite = start_call(call)
    call.send(invite)
    call.send(invite)
    call.send(call.request("ACK", 1, "ack1"))
    call.send(call.request("BYE", 2, "bye1"))
    assert call.answer(200, "BYE") is not None, "the UAS dropped the call on the INVITE copy"


def test_uas_takes_an_invite_copy_after_the_ack(uas: Uas, connect: Callable[[int, str],
                                                socket.socket]) -> None:  # fmt: skip
    """A copy that comes after the ACK (overtaken by it on the way) is taken in too, and the
    call's BYE is answered."""
    port, _ = uas("u1")
    call = Caller(connect(port, "udp"), port)
    invite = start_call(call)
    call.send(call.request("ACK", 1, "ack1"))
    call.send(invite)
    call.send(call.request("BYE", 2, "bye1"))
    assert call.answer(200, "BYE") is not None, "the UAS dropped the call on the INVITE copy"


def test_builtin_uas_aborts_the_call_on_an_invite_copy_after_its_200(
    uas: Uas, connect: Callable[[int, str], socket.socket], tmp_path: Path
) -> None:
    """Why scenarios/uas.xml exists: sipp 3.6.1's built-in uas spots a retransmitted INVITE
    only until its second answer (the 180 takes the request's hash, the 200 clears it), so a
    copy after the 200 is an unexpected message that aborts the call, and its BYE is never
    answered. If this starts failing, sipp learnt to answer the copy."""
    port, _ = uas("u1", "builtin_uas", extra=("-trace_err",))
    call = Caller(connect(port, "udp"), port)
    invite = start_call(call)
    call.send(invite)
    end = time.monotonic() + ANSWER_S
    errors = ""
    while "Aborting call on unexpected message" not in errors:
        assert time.monotonic() < end, f"the built-in uas did not abort the call: {errors!r}"
        time.sleep(0.05)  # polling step, bounded by the deadline
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("uas_*_errors.log"))
    assert "while expecting 'ACK'" in errors and "received 'INVITE sip:" in errors, errors
    call.send(call.request("ACK", 1, "ack1"))
    call.send(call.request("BYE", 2, "bye1"))
    # the call is gone by the time the BYE comes (the log line above is written on abort)
    assert call.answer(200, "BYE", timeout_s=2.0) is None
