"""Edges of the scan and the stream framer that ./dev mutate sip (docs/testing.md) showed no
test asserted: exact limits, error texts (logged with every refusal), what a refusal
salvages, the method a scan reports."""

from __future__ import annotations

import pytest

from ingress.sip.errors import BadRequest, MessageTooLarge, RequestTooLarge, SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.sip.message import Response
from ingress.sip.parser import parse_message, salvage
from ingress.sip.scan import scan_message

HEAD = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKabc\r\n"
        b"Call-ID: c1@10.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n")  # fmt: skip


def refusal(data: bytes) -> SipError:
    with pytest.raises(SipError) as exc:
        scan_message(data)
    return exc.value


class TestScan:
    def test_method_and_call_id_both_paths(self) -> None:
        """The canonical spelling (fast path) and any other (the regex) report the same."""
        s = scan_message(HEAD + b"\r\n")
        assert (s.is_request, s.method, s.call_id) == (True, b"INVITE", b"c1@10.0.0.1")
        s = scan_message(HEAD.replace(b"Call-ID: ", b"i:  ") + b"\r\n")
        assert (s.is_request, s.method, s.call_id) == (True, b"INVITE", b"c1@10.0.0.1")
        s = scan_message(b"SIP/2.0 200 OK\r\nCall-ID: r1\r\n\r\n")
        assert (s.is_request, s.method, s.call_id) == (False, None, b"r1")

    def test_leading_crlfs_are_skipped(self) -> None:
        s = scan_message(b"\r\n\r\n" + HEAD + b"\r\n")
        assert (s.method, s.call_id) == (b"INVITE", b"c1@10.0.0.1")

    def test_a_malformed_call_id_in_canonical_spelling_is_refused(self) -> None:
        exc = refusal(HEAD.replace(b"c1@10.0.0.1", b"c1 @10") + b"\r\n")
        assert (exc.status, str(exc)) == (400, "missing or malformed call-id header")

    def test_texts(self) -> None:
        assert str(refusal(HEAD)) == "no end of header section"
        assert str(refusal(b"INVITE sip:a@b SIP/2.0\r\n\r\n")) == (
            "missing or malformed call-id header")
        many = HEAD + b"X: 1\r\n" * 300 + b"\r\n"
        assert str(refusal(many)) == "more than 256 header fields"

    def test_body_lines_do_not_count_as_header_lines(self) -> None:
        data = HEAD + b"Content-Length: 1100\r\n\r\n" + b"\n" * 1100
        assert scan_message(data).call_id == b"c1@10.0.0.1"

    def test_trailing_space_on_the_request_line_is_malformed(self) -> None:
        exc = refusal(HEAD.replace(b" SIP/2.0\r\n", b" SIP/2.0 \r\n", 1) + b"\r\n")
        assert (exc.status, str(exc)) == (400, "malformed request line")


def frame(data: bytes, **kw: int) -> bytes | object:
    f = StreamFramer(**kw)
    f.receive_data(data)
    return f.next_message()


class TestFramer:
    def test_content_length_limits(self) -> None:
        """Ten digits are read (then judged against max_body_bytes, 413); eleven are not a
        length at all (400). A body of exactly max_body_bytes is allowed."""
        with pytest.raises(RequestTooLarge, match="^body too large$") as big:
            frame(HEAD + b"Content-Length: 1000000000\r\n\r\n")
        assert big.value.salvage is not None and big.value.salvage.lines
        with pytest.raises(BadRequest, match="^malformed Content-Length$") as bad:
            frame(HEAD + b"Content-Length: 10000000000\r\n\r\n")
        assert bad.value.salvage is not None
        msg = HEAD + b"Content-Length: 4\r\n\r\nbody"
        assert frame(msg, max_body_bytes=4) == msg
        with pytest.raises(RequestTooLarge):
            frame(msg, max_body_bytes=3)
        with pytest.raises(BadRequest, match="^Content-Length is mandatory on a stream$"):
            frame(HEAD + b"\r\n")

    def test_header_limit_is_inclusive(self) -> None:
        """A header section may be exactly max_header_bytes long; the salvage of one that is
        too long holds its last line."""
        msg = HEAD + b"Content-Length: 0\r\n\r\n"
        end = len(msg) - 4
        assert frame(msg, max_header_bytes=end) == msg
        with pytest.raises(MessageTooLarge, match="^header section too large$") as exc:
            frame(msg, max_header_bytes=end - 1)
        assert exc.value.salvage is not None
        assert any(line.startswith(b"CSeq:") for line in exc.value.salvage.lines)

    def test_over_long_head_salvages_its_last_line(self) -> None:
        """The salvage of a terminated header section over the cap is the whole section: its
        last line (the CSeq here) is what makes the 513 answerable."""
        msg = HEAD.replace(b"CSeq: 1 INVITE\r\n", b"") + b"CSeq: 1 INVITE\r\n\r\n"
        with pytest.raises(MessageTooLarge) as exc:
            frame(msg, max_header_bytes=len(msg) - 5)
        assert exc.value.salvage is not None and exc.value.answerable
        assert exc.value.salvage.lines[-1] == b"CSeq: 1 INVITE"

    def test_unterminated_head_limit_is_inclusive(self) -> None:
        f = StreamFramer(max_header_bytes=len(HEAD))
        f.receive_data(HEAD)
        assert f.next_message() is NEED_DATA
        f.receive_data(b"X")
        with pytest.raises(MessageTooLarge, match="^header section too large$") as exc:
            f.next_message()
        assert exc.value.salvage is not None and exc.value.salvage.lines

    def test_keepalives_and_reads(self) -> None:
        """A CRLF CRLF ping is answered, a partial one waited for, a lone CRLF before a
        message skipped; a framed message, a ping or an empty buffer resets the read count
        (the slow-sender defence)."""
        f = StreamFramer()
        f.receive_data(b"")
        assert f.reads == 1 and f.next_message() is NEED_DATA and f.reads == 0
        f.receive_data(b"\r\n")
        assert f.next_message() is NEED_DATA and f.reads == 1
        f.receive_data(b"\r\n")
        assert f.next_message() is KEEPALIVE and f.reads == 0
        msg = HEAD + b"Content-Length: 0\r\n\r\n"
        f.receive_data(b"\r\n" + msg[:10])
        f.receive_data(msg[10:])
        assert f.reads == 2 and f.next_message() == msg and f.reads == 0
        f.receive_data(b"\r\n\r")
        assert f.next_message() is NEED_DATA
        f.receive_data(b"\n" + msg)
        assert f.next_message() is KEEPALIVE and f.next_message() == msg


def test_leading_crlfs_do_not_count_as_header_lines() -> None:
    data = b"\r\n" * 1100 + HEAD + b"\r\n"
    assert scan_message(data).call_id == b"c1@10.0.0.1"


def test_a_call_id_in_the_body_is_not_the_header() -> None:
    head = HEAD.replace(b"Call-ID: c1@10.0.0.1\r\n", b"")
    exc = refusal(head + b"Content-Length: 14\r\n\r\nCall-ID: x\r\n\r\n")
    assert str(exc) == "missing or malformed call-id header"


RESP = (b"SIP/2.0 180 Ringing Now\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c9\r\nCSeq: 7 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n")  # fmt: skip


@pytest.mark.parametrize(("old", "new", "status", "text"), [
    (b"180 Ringing", b"1x0 Ringing", 400, "malformed status line"),
    (b"SIP/2.0 180", b"SIP/2.x 180", 400, "malformed SIP version"),
    (b"SIP/2.0 180", b"SIP/3.0 180", 505, "version SIP/3.0"),
    (b"Via: SIP/2.0/UDP h;", b"Via: SIP/2.0 h;", 400, "malformed Via"),
    (b"CSeq: 7 INVITE", b"CSeq: 7 IN@VITE", 400, "malformed cseq method"),
])  # fmt: skip
def test_response_refusals_name_their_cause(old: bytes, new: bytes, status: int,
                                            text: str) -> None:  # fmt: skip
    with pytest.raises(SipError) as exc:
        parse_message(RESP.replace(old, new))
    assert (exc.value.status, str(exc.value)) == (status, text)


def test_response_fields() -> None:
    r = parse_message(RESP)
    assert isinstance(r, Response)
    assert (r.status, r.reason, r.call_id, r.cseq, r.cseq_method) == (
        180, "Ringing Now", "c9", 7, "INVITE")
    assert [v.transport for v in r.vias] == ["UDP"] and r.vias[0].host == "h"


class TestSalvage:
    """What a refusal keeps to answer with (rule 2 of errors.py: the same in both processes)."""

    def test_request_salvage_keeps_the_transaction_lines(self) -> None:
        data = (b"\r\nINVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                b"Via: SIP/2.0/UDP g;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\n"
                b"From: <sip:x@y>;tag=2\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
                b"Subject: no\r\n\r\n")  # fmt: skip
        s = salvage(data)
        assert s.is_request and s.method == "INVITE"
        assert list(s.lines) == [b"Via: SIP/2.0/UDP h;branch=z9hG4bK1",
                           b"Via: SIP/2.0/UDP g;branch=z9hG4bK2", b"From: <sip:a@b>;tag=1",
                                 b"To: <sip:a@b>", b"Call-ID: c", b"CSeq: 1 INVITE"]  # fmt: skip

    def test_response_salvage(self) -> None:
        s = salvage(RESP)
        assert not s.is_request and s.method is None
