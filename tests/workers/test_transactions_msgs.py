"""Messages the transaction layer builds (ACK, CANCEL, 100 Trying) and its matching keys.

Also the message builders the other transaction tests import.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from workers.transactions import build_ack, build_cancel, response_key, server_key

PROXY_VIA = "SIP/2.0/UDP 10.0.0.1:5070"


def request_bytes(
    method: str = "INVITE",
    *,
    branch: str = "z9hG4bK-a1",
    via: str = PROXY_VIA,
    cseq: int = 1,
    cseq_method: str | None = None,
    uri: str = "sip:bob@10.0.0.2",
    to_tag: str | None = None,
    from_tag: str = "f1",
    call_id: str = "call-1",
    extra: bytes = b"",
) -> bytes:
    """A request as a proxy would send it (our Via on top, one upstream Via below)."""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    branch_param = f";branch={branch}" if branch else ""
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}{branch_param}\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-up;received=192.0.2.9\r\n"
        "Max-Forwards: 69\r\n"
        f'From: "Alice" <sip:alice@example.com>;tag={from_tag}\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
    ).encode()
    return text + extra + b"Content-Length: 0\r\n\r\n"


def request(method: str = "INVITE", **kw: Any) -> Request:
    msg = parse_message(request_bytes(method, **kw))
    assert isinstance(msg, Request)
    return msg


def response(req: bytes | Request, status: int, to_tag: str = "uas1") -> Response:
    """A response to ``req`` as its next hop would send it (To-tag above 100)."""
    parsed = parse_message(req) if isinstance(req, bytes) else req
    assert isinstance(parsed, Request)
    msg = parse_message(build_response(parsed, status, "Reason", to_tag=to_tag))
    assert isinstance(msg, Response)
    return msg


ROUTED = request_bytes(
    extra=b"Route: <sip:p1.example.com;lr>\r\nRoute: <sip:p2;lr>, <sip:p3;lr>\r\n"
)


class TestAck:
    def test_fields_from_request_and_to_from_response(self) -> None:
        """§17.1.1.3: R-URI, Call-ID, From, CSeq number, top Via and Routes of the request; To of the response."""
        resp = response(ROUTED, 486, to_tag="busy")
        ack = parse_message(build_ack(ROUTED, resp))
        req = parse_message(ROUTED)
        assert isinstance(ack, Request) and isinstance(req, Request)
        assert ack.method == "ACK" and ack.cseq_method == "ACK" and ack.cseq == req.cseq
        assert ack.uri.raw == req.uri.raw and ack.call_id == req.call_id
        assert ack.from_.raw == req.from_.raw and ack.to.tag == "busy"
        assert [v.raw for v in ack.vias] == [req.vias[0].raw]
        assert ack.header_values("route") == req.header_values("route")
        assert ack.max_forwards == 69 and ack.body == b""

    def test_same_branch(self) -> None:
        """The ACK's branch is the INVITE's, so the next hop's server transaction matches it."""
        resp = response(ROUTED, 404)
        ack = parse_message(build_ack(ROUTED, resp))
        assert isinstance(ack, Request)
        assert server_key(ack) == server_key(request(extra=b""))

    def test_no_max_forwards_gets_70(self) -> None:
        """§8.1.1.6: every request carries Max-Forwards."""
        raw = ROUTED.replace(b"Max-Forwards: 69\r\n", b"")
        ack = parse_message(build_ack(raw, response(raw, 500)))
        assert isinstance(ack, Request) and ack.max_forwards == 70


def test_building_ack_and_cancel_leaves_nothing_behind() -> None:
    """Built 2 000 times, ACK and CANCEL keep no memory: compiled by mypyc 1.20 a bytes +
    bytes leaked its left operand (mypyc/mypyc#1192), ~720 bytes per ACK here."""
    resp = response(ROUTED, 486, to_tag="busy")
    for _ in range(50):  # warm whatever is built once
        build_ack(ROUTED, resp), build_cancel(ROUTED)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            build_ack(ROUTED, resp), build_cancel(ROUTED)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown / 2000:.0f} bytes per ACK + CANCEL kept"


class TestCancel:
    def test_fields_identical_to_request(self) -> None:
        """§9.1: R-URI, Call-ID, To, From, CSeq number identical; one Via, the top one; Routes kept."""
        cancel = parse_message(build_cancel(ROUTED))
        req = parse_message(ROUTED)
        assert isinstance(cancel, Request) and isinstance(req, Request)
        assert cancel.method == "CANCEL" and cancel.cseq_method == "CANCEL"
        assert cancel.cseq == req.cseq and cancel.uri.raw == req.uri.raw
        assert cancel.to.raw == req.to.raw and cancel.from_.raw == req.from_.raw
        assert [v.raw for v in cancel.vias] == [req.vias[0].raw]
        assert cancel.header_values("route") == req.header_values("route")

    def test_finds_its_invite(self) -> None:
        """The next hop finds the INVITE the CANCEL cancels (§9.2)."""
        cancel = parse_message(build_cancel(ROUTED))
        assert isinstance(cancel, Request)
        assert server_key(cancel, "INVITE") == server_key(request())
        assert server_key(cancel) != server_key(request())


class TestKeys:
    def test_response_key_is_branch_and_cseq_method(self) -> None:
        """§17.1.3: branch of the top Via and CSeq method."""
        raw = request_bytes()
        assert response_key(response(raw, 180)) == ("z9hG4bK-a1", "INVITE")
        cancel = build_cancel(raw)
        assert response_key(response(cancel, 200)) == ("z9hG4bK-a1", "CANCEL")

    def test_ack_looks_up_as_invite(self) -> None:
        """§17.2.3: an ACK matches the INVITE server transaction."""
        ack = request("ACK", to_tag="x")
        assert server_key(ack) == server_key(request())

    @pytest.mark.parametrize(
        ("a", "b", "same"),
        [
            ({}, {"via": "SIP/2.0/UDP 10.0.0.1:5071"}, False),
            ({}, {"via": "SIP/2.0/UDP 10.0.0.1"}, False),
            ({}, {"via": "SIP/2.0/UDP 10.0.0.1:5070"}, True),
            ({}, {"via": "SIP/2.0/TCP 10.0.0.1:5070"}, True),  # sent-by, not transport
            ({}, {"branch": "z9hG4bK-A1"}, False),
            ({}, {"cseq": 2}, True),  # with a cookie, only branch, sent-by and method count
        ],
        ids=["port", "no-port", "same", "transport", "branch-case", "cseq"],
    )
    def test_rfc3261_key(self, a: dict[str, Any], b: dict[str, Any], same: bool) -> None:
        """Branch + sent-by + method (§17.2.3)."""
        assert (server_key(request(**a)) == server_key(request(**b))) is same

    def test_host_case_insensitive(self) -> None:
        """Host names compare case-insensitively."""
        a = request(via="SIP/2.0/UDP Proxy.Example.COM:5070")
        b = request(via="SIP/2.0/UDP proxy.example.com:5070")
        assert server_key(a) == server_key(b)

    def test_rfc2543_fallback(self) -> None:
        """No cookie: Request-URI, From tag, Call-ID, CSeq number and top Via identify it."""
        inv = request(branch="")
        assert server_key(request(branch="")) == server_key(inv)
        assert server_key(request("ACK", branch="", to_tag="t9")) == server_key(inv)
        assert server_key(request("CANCEL", branch=""), "INVITE") == server_key(inv)
        for change in ({"cseq": 2}, {"from_tag": "f2"}, {"call_id": "c2"}, {"uri": "sip:x@y"}):
            assert server_key(request(branch="", **change)) != server_key(inv)
        assert server_key(request(branch="1234")) != server_key(request(branch="1235"))
