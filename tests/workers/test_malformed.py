"""What only the worker's full parse finds is answered (or dropped) like the ingress would."""

from __future__ import annotations

import pytest

from workers.refusals import Malformed

from .helpers import inbound, proxy, request, response


def test_malformed_request_is_answered_to_its_source() -> None:
    """A request whose CSeq is broken gets 400 from the worker, back where it came from."""
    raw = request("INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE")
    with pytest.raises(Malformed) as exc:
        proxy().handle(raw, inbound(src="10.0.0.9", port=5099))
    assert exc.value.error.status == 400
    assert exc.value.reply is not None
    _, meta, data = exc.value.reply
    assert meta[1:3] == ["10.0.0.9", 5099]
    assert data.startswith(b"SIP/2.0 400 ")
    assert b"Call-ID: call-1@10.0.0.1\r\n" in data


def test_malformed_ack_is_never_answered() -> None:
    """RFC 3261 §17: a broken ACK is dropped, not answered."""
    raw = request("ACK").replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com")
    with pytest.raises(Malformed) as exc:
        proxy().handle(raw, inbound())
    assert exc.value.reply is None


def test_malformed_response_is_dropped() -> None:
    """A broken response is dropped, never answered."""
    raw = response(200, ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-slx", "bad via"])
    with pytest.raises(Malformed) as exc:
        proxy().handle(raw, inbound())
    assert exc.value.reply is None
