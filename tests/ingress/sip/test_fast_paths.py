"""The parser's and the views' fast paths give what the plain paths give (issue #16).

Each shortcut taken for CPU (a status code checked without the regex, a known CSeq method
taken from a table, a tag or branch kept once read) is held here to the rule it replaces,
over inputs hypothesis draws: a message the shortcut accepts is one the regex accepted,
with the same values, and one it refuses was refused with the same error.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.sip.errors import BadRequest
from ingress.sip.grammar import (
    STATUS_CODE_RE,
    TOKEN_B_RE,
    _parse_name_addr,
    _parse_via,
    parse_name_addr,
    parse_via,
)
from ingress.sip.message import Response
from ingress.sip.parser import KNOWN_METHODS, parse_message

MANY = settings(max_examples=600, deadline=None)

#: bytes a status code or a CSeq method may hold in a one-line test message (no SP, CR, LF)
WORD = st.binary(min_size=0, max_size=6).filter(
    lambda b: not any(c in b for c in b" \t\r\n,")
) | st.sampled_from(
    [b"100", b"180", b"200", b"486", b"699", b"700", b"099", b"1x0", b"\xd9\xa1\xd9\xa0\xd9\xa0"]
)


def response(code: bytes, cseq_method: bytes = b"INVITE") -> bytes:
    return (
        b"SIP/2.0 " + code + b" Whatever\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sl1\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\n"
        b"Call-ID: fast@127.0.0.1\r\nCSeq: 1 " + cseq_method + b"\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


class TestStatusCode:
    @MANY
    @given(WORD)
    def test_accepted_as_the_regex_accepts(self, code: bytes) -> None:
        """A status code passes the fast check exactly when STATUS_CODE_RE matches it."""
        if STATUS_CODE_RE.fullmatch(code) is not None:
            msg = parse_message(response(code))
            assert isinstance(msg, Response) and msg.status == int(code)
        else:
            with pytest.raises(BadRequest, match="malformed status line"):
                parse_message(response(code))


class TestCseqMethod:
    @MANY
    @given(WORD | st.sampled_from(sorted(m.encode() for m in KNOWN_METHODS)))
    def test_known_or_token(self, method: bytes) -> None:
        """A response's CSeq method is taken as the token regex takes it, same text."""
        parts = (b"1 " + method).split()  # as the parser splits "CSeq: 1 <method>"
        if len(parts) != 2:
            return  # no method, or one that VT or FF cut in two: a malformed CSeq
        if TOKEN_B_RE.fullmatch(parts[1]) is not None:
            msg = parse_message(response(b"200", method))
            assert msg.cseq_method == parts[1].decode("ascii")
        else:
            with pytest.raises(BadRequest, match="malformed cseq method"):
                parse_message(response(b"200", method))


PARAM = st.text(alphabet='abtgrch=;"  \t-xyzTAG0', max_size=24)


class TestKeptValues:
    @MANY
    @given(PARAM)
    def test_tag_as_params(self, ptext: str) -> None:
        """NameAddr.tag, read twice, is what its parameters say, and a fresh view agrees."""
        value = f"<sip:a@h>{ptext}".encode()
        try:
            na = parse_name_addr(value)
        except BadRequest:
            return
        fresh = _parse_name_addr(value)  # uncached, its params split before tag is read
        assert fresh.params.get("tag") == na.tag == na.tag == na.params.get("tag")

    @MANY
    @given(PARAM)
    def test_branch_as_params(self, ptext: str) -> None:
        """Via.branch, read twice, is what its parameters say."""
        try:
            via = parse_via(b"SIP/2.0/UDP 127.0.0.1:5060" + ptext.encode())
        except BadRequest:
            return
        fresh = _parse_via(b"SIP/2.0/UDP 127.0.0.1:5060" + ptext.encode())
        assert fresh.params.get("branch") == via.branch == via.branch == via.params.get("branch")
