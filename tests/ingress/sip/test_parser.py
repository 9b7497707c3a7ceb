"""parse_message rules beyond the torture corpus: line endings, offsets, salvage, limits."""

from __future__ import annotations

import pytest

from ingress.sip.errors import BadRequest, SipError, VersionNotSupported
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message

BASE = (
    b"OPTIONS sip:a@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:b@example.com>;tag=1\r\n"
    b"To: <sip:a@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def status(data: bytes) -> int | None:
    try:
        parse_message(data)
    except SipError as exc:
        return exc.status
    return None


def test_leading_crlf_ignored() -> None:
    """CRLFs before the start line are skipped (§7.5)."""
    msg = parse_message(b"\r\n\r\n" + BASE)
    assert isinstance(msg, Request) and msg.raw[msg.line_end - 2 : msg.line_end] == b"\r\n"


def test_bare_lf_message_accepted() -> None:
    """A message written wholly with LF parses (broken UAs send them)."""
    msg = parse_message(BASE.replace(b"\r\n", b"\n"))
    assert isinstance(msg, Request) and msg.call_id == "c1" and msg.body == b""


@pytest.mark.parametrize(
    "data",
    [
        BASE.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\n"),
        BASE.replace(b"Call-ID: c1\r\n", b"Call-ID: c\r1\r\n"),
        BASE.replace(b"SIP/2.0\r\n", b"SIP/2.0\n", 1),
    ],
    ids=["bare-lf", "bare-cr", "start-line-lf"],
)
def test_mixed_line_endings_rejected(data: bytes) -> None:
    """A bare CR or LF inside a CRLF message is a 400, never a half-read header."""
    assert status(data) == 400


def test_folded_header_offsets_cover_continuations() -> None:
    """raw[start:end] of a folded header spans all its lines; the value is unfolded."""
    data = BASE.replace(
        b"To: <sip:a@example.com>\r\n", b"To:\r\n  <sip:a@example.com>\r\n\t;tag=9\r\n"
    )
    msg = parse_message(data)
    (_, value, start, end) = next(h for h in msg.headers if h[0] == "to")
    assert value == b"<sip:a@example.com> ;tag=9" and msg.to.tag == "9"
    assert data[start:end] == b"To:\r\n  <sip:a@example.com>\r\n\t;tag=9\r\n"


@pytest.mark.parametrize(
    ("version", "want"),
    [(b"SIP/2.1", 505), (b"SIP/3.0", 505), (b"sip/2.0", None), (b"SIP/2", 400), (b"HTTP/1.1", 400)],
)
def test_versions(version: bytes, want: int | None) -> None:
    """Only SIP/2.0 is spoken; other well-formed versions get 505 (§8.2.2 ... §21.5.7)."""
    assert status(BASE.replace(b"SIP/2.0\r\n", version + b"\r\n", 1)) == want


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS"),
        (b"CSeq: 1 OPTIONS", b"CSeq: 1"),
        (b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS"),
        (b"Call-ID: c1", b"Call-ID: c 1"),
        (b"Call-ID: c1", b"Call-ID:"),
        (b"Content-Length: 0", b"Content-Length: 1"),
        (b"Content-Length: 0", b"Content-Length: 0x0"),
        (b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1 OPTIONS\r\nMax-Forwards: -1\r\n"),
        (b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1 OPTIONS\r\nMax-Forwards: 1\r\nMax-Forwards: 2\r\n"),
        (b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1 OPTIONS\r\nContact: <sip:a@b>;;\r\n"),
        (b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1 OPTIONS\r\nRoute: <sip:p;lr>,,<sip:q;lr>\r\n"),
        (b"CSeq: 1 OPTIONS\r\n", b"CSeq: 1 OPTIONS\r\nBad Name: x\r\n"),
        (b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n", b""),
        (b"OPTIONS sip:a@example.com", b"OPTIONS sip:a@example.com?X=1"),
        (b"OPTIONS sip:a@example.com", b"OPTIONS sip:\xc3\xa9@example.com"),
    ],
    ids=["cseq-33-bits", "cseq-no-method", "cseq-not-number", "call-id-space", "call-id-empty",
         "content-length-past-end", "content-length-hex", "max-forwards-negative",
         "max-forwards-twice", "contact-empty-param", "route-empty-element", "header-name-space",
         "no-via", "r-uri-headers", "r-uri-non-ascii"],
)  # fmt: skip
def test_rejected(old: bytes, new: bytes) -> None:
    """Each defect is a 400, answerable whenever a Via and a CSeq were salvaged."""
    with pytest.raises(BadRequest) as info:
        parse_message(BASE.replace(old, new, 1))
    s = info.value.salvage
    assert s is not None and s.method == "OPTIONS"
    assert info.value.answerable is (new != b"")  # with no Via there is nowhere to answer


def test_contact_star_accepted() -> None:
    """Contact: * is the REGISTER wildcard (§10.2.2), not a malformed name-addr."""
    data = BASE.replace(b"OPTIONS", b"REGISTER").replace(b"Call-ID", b"Contact: *\r\nCall-ID")
    assert isinstance(parse_message(data), Request)


def test_ack_error_not_answerable() -> None:
    """A malformed ACK is never answered (§17.2.1)."""
    data = BASE.replace(b"OPTIONS", b"ACK").replace(b"Call-ID: c1", b"Call-ID: c 1")
    with pytest.raises(BadRequest) as info:
        parse_message(data)
    assert not info.value.answerable


def test_response_error_not_answerable() -> None:
    """A malformed response is dropped, never answered."""
    data = BASE.replace(b"OPTIONS sip:a@example.com SIP/2.0", b"SIP/2.0 200 OK", 1)
    assert isinstance(parse_message(data), Response)
    with pytest.raises(SipError) as info:
        parse_message(data.replace(b"Call-ID: c1", b"Call-ID: c 1"))
    assert not info.value.answerable


def test_version_error_salvaged() -> None:
    """A 505 carries the salvage for its answer, like any 400."""
    with pytest.raises(VersionNotSupported) as info:
        parse_message(BASE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert info.value.answerable


def test_salvage_takes_first_singleton() -> None:
    """With two Call-IDs the salvage copies every Via but only the first Call-ID."""
    data = BASE.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\r\nCall-ID: c2\r\n")
    with pytest.raises(BadRequest) as info:
        parse_message(data)
    lines = info.value.salvage.lines  # type: ignore[union-attr]
    assert b"Call-ID: c1" in lines and b"Call-ID: c2" not in lines


def test_views_cached_and_shared() -> None:
    """Equal Via/From/To/URI text gives the same view object (read-only, shared)."""
    a, b = parse_message(BASE), parse_message(BASE + b"")
    assert a is not b
    assert a.vias[0] is b.vias[0] and a.from_ is b.from_ and a.to is b.to
    assert isinstance(a, Request) and isinstance(b, Request) and a.uri is b.uri
