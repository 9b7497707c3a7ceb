"""Every refusal of parse_message, with its status, counter key and detail, and what it
salvages: the detail is logged with each refusal and the key counted, so a wrong text or a
refusal for the wrong reason is a bug an operator sees. Found unasserted by ./dev mutate sip
(docs/testing.md)."""

from __future__ import annotations

import pytest

from ingress.sip.errors import SipError
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message, salvage
from ingress.sip.scan import scan_message

BASE = (
    b"OPTIONS sip:a@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:b@example.com>;tag=1\r\n"
    b"To: <sip:a@example.com>\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)
#: the salvage of BASE: every Via and the first From, To, Call-ID, CSeq, without their CRLF
BASE_LINES = [
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
    b"From: <sip:b@example.com>;tag=1",
    b"To: <sip:a@example.com>",
    b"Call-ID: c1",
    b"CSeq: 1 OPTIONS",
]
RESP = BASE.replace(b"OPTIONS sip:a@example.com SIP/2.0", b"SIP/2.0 200 OK", 1)
CSEQ = b"CSeq: 1 OPTIONS\r\n"


def refusal(data: bytes) -> SipError:
    with pytest.raises(SipError) as exc:
        parse_message(data)
    return exc.value


# (replace this, with that) in BASE -> status, key, detail
REQUEST_REFUSALS = [
    (b"OPTIONS sip:a@example.com SIP/2.0", b"OPTIONS  sip:a@example.com SIP/2.0",
     400, "bad_request", "malformed request line"),
    (b"OPTIONS sip:", b"OPT<IONS sip:", 400, "bad_request", "malformed method"),
    (b"OPTIONS sip:a@example.com", b"OPTIONS sip:\xc3\xa9@example.com",
     400, "bad_request", "non-ASCII Request-URI"),
    (b"OPTIONS sip:a@example.com", b"OPTIONS sip:a@example.com?X=1",
     400, "bad_request", "headers in the Request-URI"),
    (b"SIP/2.0\r\nVia", b"SIP/2.5\r\nVia", 505, "version_not_supported", "version SIP/2.5"),
    (b"SIP/2.0\r\nVia", b"SIP/20\r\nVia", 400, "bad_request", "malformed SIP version"),
    (b"Call-ID: c1\r\n", b"Call-ID: c1\r\nCall-ID: c2\r\n",
     400, "bad_request", "more than one call-id header"),
    (CSEQ, CSEQ + b"Max-Forwards: 1\r\nMax-Forwards: 1\r\n",
     400, "bad_request", "more than one max-forwards header"),
    (CSEQ, CSEQ + b"Content-Length: 0\r\n", 400, "bad_request",
     "more than one content-length header"),
    (b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n", b"",
     400, "bad_request", "missing via header"),
    (b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\n", b"", 400, "bad_request",
     "missing call-id, cseq header"),
    (b"From: <sip:b@example.com>;tag=1\r\n", b"", 400, "bad_request", "missing from header"),
    (b"To: <sip:a@example.com>\r\n", b"", 400, "bad_request", "missing to header"),
    (b"Call-ID: c1", b"Call-ID: c 1", 400, "bad_request", "malformed call-id"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 1", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 1 OPTIONS x", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 4294967296 OPTIONS", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 9999999999 OPTIONS", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 099999999999 OPTIONS", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 09999999999 OPTIONS", 400, "bad_request", "malformed cseq"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE", 400, "bad_request",
     "CSeq method does not match the request method"),
    (b"Content-Length: 0", b"Content-Length: x", 400, "bad_request",
     "malformed content-length"),
    (b"Content-Length: 0", b"Content-Length: 1", 400, "bad_request",
     "content-length larger than the message"),
    (CSEQ, CSEQ + b"Max-Forwards: seventy\r\n", 400, "bad_request", "malformed max-forwards"),
    (b"Call-ID: c1\r\n", b"Call-ID: c\r1\r\n", 400, "bad_request",
     "bare CR or LF in the header section"),
    (b"Call-ID: c1\r\n", b"Call-ID: c1\n", 400, "bad_request",
     "bare CR or LF in the header section"),
    (CSEQ, CSEQ + b"Subject\r\n", 400, "bad_request", "malformed header line"),
    # a known name with no colon is malformed too, not a header with an empty value
    (CSEQ, CSEQ + b"To\r\n", 400, "bad_request", "malformed header line"),
    # ... also when no line has a colon, so the fast path reads them all
    (BASE[BASE.index(b"\r\n") + 2 :], b"To\r\n\r\n", 400, "bad_request",
     "malformed header line"),
    (b"SIP/2.0\r\n", b"SIP/2.0\r\n continued\r\n", 400, "bad_request",
     "continuation line before any header"),
    (b"Via: SIP/2.0/UDP 192.0.2.1;", b"Via: SIP/2.0 192.0.2.1;", 400, "bad_request",
     "malformed Via"),
    (CSEQ, CSEQ + b"Contact: <sip:a@b>;;\r\n", 400, "bad_request", "malformed name-addr"),
    (CSEQ, CSEQ + b"Route: <sip:p;lr>,,<sip:q;lr>\r\n", 400, "bad_request",
     "malformed name-addr"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "status", "key", "detail"), REQUEST_REFUSALS,
                         ids=[r[4] + f"-{i}" for i, r in enumerate(REQUEST_REFUSALS)])  # fmt: skip
def test_request_refusal(old: bytes, new: bytes, status: int, key: str, detail: str) -> None:
    data = BASE.replace(old, new, 1)
    assert data != BASE
    parse_message(BASE)  # the header names are known: the fast path reads the lines first
    exc = refusal(data)
    assert (exc.status, exc.key, exc.detail, str(exc)) == (status, key, detail, detail)
    s = exc.salvage
    assert s is not None and s.is_request and s.method == (
        "OPT<IONS" if b"OPT<" in new else "OPTIONS")  # the start line's first word, as sent
    if b"\r1" not in data and b"c1\n" not in data:
        assert s.lines == transaction_lines(data)


def transaction_lines(data: bytes) -> list[bytes]:
    """Every Via line and the first From, To, Call-ID and CSeq line, as sent (§8.2.6.2)."""
    out, seen = [], set()
    for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, colon, _ = line.partition(b":")
        if not colon:
            continue  # a malformed line is no header
        if name == b"Via" or (name in (b"From", b"To", b"Call-ID", b"CSeq") and name not in seen):
            seen.add(name)
            out.append(line)
    return out


def test_unknown_method_with_another_cseq_method_is_501() -> None:
    """An extension method we do not know, whose CSeq names another: 501, not 400 (§8.2.1)."""
    exc = refusal(BASE.replace(b"OPTIONS sip:", b"FOO sip:", 1))
    assert (exc.status, exc.key, exc.detail) == (
        501, "not_implemented", "method FOO with a different CSeq method")
    assert exc.salvage is not None and exc.salvage.method == "FOO" and exc.answerable


def test_unknown_method_with_its_own_cseq_is_parsed() -> None:
    msg = parse_message(BASE.replace(b"OPTIONS", b"FOO"))
    assert isinstance(msg, Request) and (msg.method, msg.cseq_method) == ("FOO", "FOO")


def test_numbers_at_their_limits() -> None:
    """32-bit CSeq inclusive, leading zeros past ten digits, Max-Forwards read or absent."""
    msg = parse_message(BASE.replace(b"CSeq: 1 ", b"CSeq: 4294967295 "))
    assert isinstance(msg, Request) and msg.cseq == 4294967295 and msg.max_forwards is None
    msg = parse_message(BASE.replace(b"CSeq: 1 ", b"CSeq: 000000000042 "))
    assert msg.cseq == 42
    msg = parse_message(BASE.replace(b"CSeq: 1 ", b"CSeq: 00000000000 "))
    assert msg.cseq == 0
    msg = parse_message(BASE.replace(b"CSeq: 1 ", b"CSeq: 04294967295 "))
    assert msg.cseq == 4294967295  # ten digits once the zeros are gone
    msg = parse_message(BASE.replace(CSEQ, CSEQ + b"Max-Forwards: 70\r\n"))
    assert isinstance(msg, Request) and msg.max_forwards == 70


def test_content_length_frames_the_body() -> None:
    """The body ends at Content-Length, even at the datagram's end; without it, at the end."""
    data = BASE.replace(b"Content-Length: 0", b"Content-Length: 4") + b"abcd"
    assert parse_message(data).body == b"abcd"
    assert parse_message(data + b"junk").body == b"abcd"  # §18.3: octets past it ignored
    no_cl = BASE.replace(b"Content-Length: 0\r\n", b"") + b"abcd"
    assert parse_message(no_cl).body == b"abcd"


def test_mixed_line_endings_in_a_bare_lf_message() -> None:
    exc = refusal(BASE.replace(b"\r\n", b"\n").replace(b"Call-ID: c1\n", b"Call-ID: c1\r\n"))
    assert (exc.status, exc.detail) == (400, "mixed line endings")
    # the head ends at the first blank line: a CR after it (in the body) is no mix
    msg = parse_message(BASE.replace(b"\r\n", b"\n").replace(b"Content-Length: 0\n", b"") + b"\r")
    assert msg.body == b"\r"


# (replace this, with that) in RESP -> detail
RESPONSE_REFUSALS = [
    (b"SIP/2.0 200 OK", b"SIP/2.0 099 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 700 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 2000 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 20 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 :00 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 /00 OK", "malformed status line"),
    (b"SIP/2.0 200 OK", b"SIP/2.0 \xd9\xa200 OK", "malformed status line"),
    (b"Call-ID: c1\r\n", b"Call-ID: c\n1\r\n", "bare CR or LF in the header section"),
    (b"CSeq: 1 OPTIONS", b"CSeq: 1 OPT<IONS", "malformed cseq method"),
    (b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS", "malformed cseq"),
    (b"Content-Length: 0", b"Content-Length: 9", "content-length larger than the message"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "detail"), RESPONSE_REFUSALS,
                         ids=[f"{i}" for i in range(len(RESPONSE_REFUSALS))])  # fmt: skip
def test_response_refusal(old: bytes, new: bytes, detail: str) -> None:
    exc = refusal(RESP.replace(old, new, 1))
    assert (exc.status, exc.key, exc.detail) == (400, "bad_request", detail)
    assert exc.salvage is not None and not exc.salvage.is_request
    assert exc.salvage.method is None and not exc.answerable


@pytest.mark.parametrize("code", [100, 199, 600, 699])
def test_status_codes_at_the_class_limits(code: int) -> None:
    msg = parse_message(RESP.replace(b" 200 ", b" %d " % code))
    assert isinstance(msg, Response) and msg.status == code


def test_response_fields_and_reason_decoding() -> None:
    """An unknown CSeq method is kept; a reason phrase that is not UTF-8 is read, replaced."""
    msg = parse_message(RESP.replace(b"1 OPTIONS", b"3 FOO").replace(b" OK", b" O\xffK"))
    assert isinstance(msg, Response)
    assert (msg.cseq, msg.cseq_method, msg.reason) == (3, "FOO", "O\ufffdK")
    msg = parse_message(RESP.replace(b" 200 OK", b" 200 Very  OK"))
    assert msg.reason == "Very  OK"
    msg = parse_message(RESP.replace(b"SIP/2.0 200", b"sip/2.0 200", 1))
    assert isinstance(msg, Response) and msg.status == 200


def test_no_end_of_header_section() -> None:
    """A head with no blank line: 400, salvaged from its complete lines."""
    exc = refusal(BASE[:-2])
    assert (exc.status, exc.detail) == (400, "no end of header section")
    assert exc.salvage is not None and exc.salvage.lines == BASE_LINES
    assert exc.salvage.method == "OPTIONS" and exc.answerable
    # cut inside the CSeq line: that line is not salvaged, and nothing can be answered
    exc = refusal(BASE[: BASE.index(b"CSeq") + 6])
    assert exc.salvage is not None and exc.salvage.lines == BASE_LINES[:4]
    assert not exc.answerable
    # a start line alone, even after CRLFs: a request with nothing salvaged
    exc = refusal(b"\r\n\r\nOPTIONS sip:a@example.com SIP/2.0")
    assert exc.salvage is not None and exc.salvage.is_request and exc.salvage.lines == []
    # a response, spelt in any case, after CRLFs or (with no complete line) white space
    exc = refusal(b"\r\nsip/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\n")
    assert exc.salvage is not None and not exc.salvage.is_request
    assert exc.salvage.lines == [b"Via: SIP/2.0/UDP h"] and exc.salvage.method is None
    exc = refusal(b" \tsip/2.0 200 OK")
    assert exc.salvage is not None and not exc.salvage.is_request


def test_salvage_function_agrees_with_the_refusal() -> None:
    """salvage() reads what parse_message's error carries, from the head alone."""
    for data in (BASE[:-2], BASE.replace(b"Call-ID: c1", b"Call-ID: c 1"),
                 BASE.replace(b"\r\n", b"\n").replace(b"Call-ID: c1\n", b"Call-ID: c1\r\n")):
        s = salvage(data)
        assert s == refusal(data).salvage
        assert s.is_request and s.method == "OPTIONS" and len(s.lines) == 5
    assert salvage(b"no head at all") == refusal(b"no head at all").salvage
    s = salvage(b"SIP/2.0 200 OK")
    assert not s.is_request and s.lines == []


@pytest.mark.parametrize(("start", "status", "detail"), [
    (b"SIP/2.0 2000 OK", 400, "malformed status line"),
    (b"SIP/2.0 20 OK", 400, "malformed status line"),
    (b"SIP/2.0 200OK", 400, "malformed status line"),
    (b"SIP/3.0 200 OK", 505, "version SIP/3.0"),
    (b"SIP/2.0X 200 OK", 400, "malformed SIP version"),
    (b"OPTIONS sip:a@example.com SIP/2.0X", 400, "malformed SIP version"),
    (b"OPTIONS sip:a@example.com SIP/2.1", 505, "version SIP/2.1"),
])  # fmt: skip
def test_scan_refuses_a_start_line_as_the_parse_does(start: bytes, status: int,
                                                     detail: str) -> None:  # fmt: skip
    """The ingress's scan and the worker's parse give one answer to one start line."""
    data = start + BASE[BASE.index(b"\r\n") :]
    for fn in (scan_message, parse_message):
        with pytest.raises(SipError) as exc:
            fn(data)
        assert (exc.value.status, exc.value.detail) == (status, detail), fn.__name__


@pytest.mark.parametrize("start", [b"SIP/2.0 200", b"SIP/2.0 200 ", b"sip/2.0 180 x y"])
def test_scan_and_parse_accept_a_status_line(start: bytes) -> None:
    data = start + RESP[RESP.index(b"\r\n") :]
    s = scan_message(data)
    assert (s.is_request, s.method, s.call_id) == (False, None, b"c1")
    assert isinstance(parse_message(data), Response)


def test_bare_lf_head_ends_at_the_first_blank_line() -> None:
    """In a bare-LF message a Call-ID in the body is not the header's, for scan and parse."""
    data = (BASE.replace(b"Call-ID: c1\r\n", b"").replace(b"Content-Length: 0\r\n", b"")
            .replace(b"\r\n", b"\n") + b"v=0\nCall-ID: body\n\nmore")  # fmt: skip
    for fn in (scan_message, parse_message):
        with pytest.raises(SipError) as exc:
            fn(data)
        assert exc.value.status == 400 and "call-id" in exc.value.detail, fn.__name__


def test_a_blank_line_first_is_an_empty_start_line() -> None:
    """A bare-LF message that starts with its blank line has an empty start line, malformed,
    for scan and parse alike (not "no end of header section")."""
    data = b"\n\n" + BASE.replace(b"\r\n", b"\n")
    for fn in (scan_message, parse_message):
        with pytest.raises(SipError) as exc:
            fn(data)
        assert (exc.value.status, exc.value.detail) == (400, "malformed request line")


def test_scan_reports_the_first_of_two_call_ids() -> None:
    """Two Call-IDs (which the parse then refuses): the scan routes by the first, on the fast
    path as on the regex one, so one message always goes to one worker."""
    two = BASE.replace(b"Call-ID: c1\r\n", b"Call-ID: c1\r\nCall-ID: c2\r\n")
    assert scan_message(two).call_id == b"c1"
    assert scan_message(two.replace(b"Call-ID: ", b"call-id: ")).call_id == b"c1"


@pytest.mark.parametrize("data", [
    b"A\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1",
    b" OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 OPTIONS\r\nX: y",
    b"\r\nXACT sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 XACT\r\n",
    b"\r\n\r\nSIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 XACT\r\nCall-ID: X",
])  # fmt: skip
def test_a_cut_head_salvages_as_its_complete_lines_would(data: bytes) -> None:
    """A head with no end salvages what the same complete lines, ended, salvage."""
    complete = data[: data.rfind(b"\r\n")] + b"\r\n\r\n"
    exc = refusal(data)
    assert exc.detail == "no end of header section"
    assert exc.salvage == salvage(complete) == refusal(complete).salvage


def test_salvaged_method_is_the_start_line_up_to_its_first_space() -> None:
    """As the parser splits the request line: on SP only, so a line starting with SP has an
    empty method (and is malformed), and a TAB does not end the method."""
    exc = refusal(b" " + BASE)
    assert exc.detail == "malformed request line" and exc.salvage is not None
    assert exc.salvage.method == ""
    exc = refusal(BASE.replace(b"OPTIONS sip:", b"OPTIONS\tsip:", 1))
    assert exc.salvage is not None and exc.salvage.method == "OPTIONS\tsip:a@example.com"


@pytest.mark.parametrize(("value", "display"), [
    (b"Bob \t <sip:b@example.com>", "Bob"),
    (b"Rex X <sip:x@example.com>;tag=1", "Rex X"),
    (b'"Ann " <sip:a@example.com>', '"Ann "'),
    (b"<sip:n@example.com>", None),
])  # fmt: skip
def test_display_name_loses_only_its_trailing_white_space(value: bytes,
                                                          display: str | None) -> None:  # fmt: skip
    from ingress.sip.grammar import parse_name_addr

    assert parse_name_addr(value).display == display


def test_only_sp_and_htab_are_trimmed_from_a_value() -> None:
    """LWS is SP and HTAB (§25.1): other octets at a value's edges are the value's, on the
    fast path (a known name) as on the slow one (a new name)."""
    data = BASE.replace(CSEQ, CSEQ + b"X-Trim-Test: \t\x0ba\x0c \t\r\n")
    for _ in ("a new name: the slow path", "a known name: the fast path"):
        assert parse_message(data).header("x-trim-test") == b"\x0ba\x0c"


def test_uri_parse_and_refusal_texts() -> None:
    """sips is a SIP URI (parts read), any case; a refusal quotes the URI's first 64
    characters, no more (the detail is logged)."""
    from ingress.sip.grammar import parse_uri

    u = parse_uri("SIPS:alice@example.com:5061")
    assert (u.scheme, u.user, u.host, u.port) == ("sips", "alice", "example.com", 5061)
    with pytest.raises(SipError) as exc:
        parse_uri("sip:" + "@" * 80)
    assert exc.value.detail == "malformed SIP URI '" + "sip:" + "@" * 60 + "'"
    with pytest.raises(SipError) as exc:
        parse_uri("1tel:" + "0" * 80)
    assert exc.value.detail == "malformed URI '" + "1tel:" + "0" * 59 + "'"
