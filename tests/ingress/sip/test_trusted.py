"""A trusted parse (a worker re-reading what its ingress checked) skips list validation only."""

from __future__ import annotations

import pytest

from ingress.sip.errors import BadRequest
from ingress.sip.parser import parse_message

MSG = (
    b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-t\r\n"
    b"From: <sip:alice@192.0.2.1>;tag=a\r\n"
    b"To: <sip:bob@192.0.2.2>\r\n"
    b"Call-ID: trusted@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: {contact}\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_contact_validated_unless_trusted() -> None:
    """A malformed Contact fails a full parse and passes a trusted one."""
    bad = MSG.replace(b"{contact}", b"<sip:alice@192.0.2.1")
    with pytest.raises(BadRequest):
        parse_message(bad)
    assert parse_message(bad, trusted=True).call_id == "trusted@192.0.2.1"


def test_trusted_still_checks_the_transaction_fields() -> None:
    """Via, CSeq and the singletons are checked even when trusted."""
    broken = MSG.replace(b"{contact}", b"<sip:a@b>").replace(b"CSeq: 1 INVITE", b"CSeq: x")
    with pytest.raises(BadRequest):
        parse_message(broken, trusted=True)
