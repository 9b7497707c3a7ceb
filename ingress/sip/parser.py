"""Parse one SIP message from bytes (RFC 3261 §7, §25). No I/O, no clock, no logging.

Rules:
1. ``parse_message`` returns a ``Request`` or ``Response`` or raises ``SipError``; any other
   exception is a bug (tests/ingress/sip/test_fuzz.py holds it to that).
2. Every error raised after the header section was scanned carries a ``Salvage`` of the Via,
   From, To, Call-ID and CSeq lines, so the caller can answer without parsing again.
3. The body is framed by Content-Length. Over a datagram a missing Content-Length means "the
   rest of the datagram" and octets past it are ignored (§18.3); a stream framer passes exactly
   one message.
"""

from __future__ import annotations

from ingress.sip.errors import (
    BadRequest,
    NotImplemented_,
    Salvage,
    SipError,
    VersionNotSupported,
)
from ingress.sip.grammar import (
    CSEQ_MAX,
    CSEQ_RE,
    DIGITS_RE,
    STATUS_LINE_RE,
    TOKEN_B_RE,
    VERSION_RE,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from ingress.sip.headers import canonical_name, split_commas
from ingress.sip.message import Header, NameAddr, Request, Response, Via

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip

# Headers that may appear once only; a second copy makes the message ambiguous (RFC 4475 3.3.8).
SINGLETONS = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})
_SALVAGED = frozenset({"via", "from", "to", "call-id", "cseq"})


def parse_message(data: bytes) -> Request | Response:
    """Parse exactly one message; see the module rules for what is raised."""
    start = 0
    n = len(data)
    while data.startswith(b"\r\n", start):  # §7.5: ignore CRLFs before the start line
        start += 2
    if start >= n:
        raise BadRequest("empty message")
    sep = b"\r\n"
    hdr_end = data.find(b"\r\n\r\n", start)
    if hdr_end < 0:
        # Bare-LF messages are not SIP, but are common enough from broken UAs to accept.
        hdr_end = data.find(b"\n\n", start)
        if hdr_end < 0:
            raise BadRequest("no end of header section")
        sep = b"\n"
    body_start = hdr_end + 2 * len(sep)
    line_end = data.find(sep, start)
    start_line = data[start:line_end]
    is_request = not start_line[:4].upper().startswith(b"SIP/")
    headers, bad = _scan_headers(data, line_end + len(sep), hdr_end, sep)
    try:
        if bad:
            raise BadRequest(bad)
        if is_request:
            return _request(data, start_line, headers, line_end + len(sep), body_start)
        return _response(data, start_line, headers, line_end + len(sep), body_start)
    except SipError as exc:
        if exc.salvage is None:
            exc.salvage = _salvage(data, headers, is_request, start_line)
        raise


def _scan_headers(
    data: bytes, pos: int, end: int, sep: bytes
) -> tuple[list[Header], str | None]:
    """Split the header section into lines, unfolding continuations (§7.3.1).

    Returns the headers and, instead of raising, the first problem found, so that the lines
    after a bad one still reach the salvage.
    """
    headers: list[Header] = []
    bad: str | None = None
    step = len(sep)
    lines = data[pos:end].split(sep) if end > pos else []
    for line in lines:
        nxt = pos + len(line) + step
        if line[:1] in (b" ", b"\t"):
            if not headers:
                bad = bad or "continuation line before any header"
            else:
                name, value, hstart, _ = headers[-1]
                headers[-1] = (name, (value + b" " + line.strip()).strip(), hstart, nxt)
            pos = nxt
            continue
        if step == 1 and line.endswith(b"\r"):
            line = line[:-1]
        colon = line.find(b":")
        if colon <= 0:
            bad = bad or "header line without a name and colon"
            pos = nxt
            continue
        raw_name = line[:colon].rstrip(b" \t")
        if not TOKEN_B_RE.fullmatch(raw_name):
            bad = bad or "malformed header name"
            pos = nxt
            continue
        headers.append((canonical_name(raw_name), line[colon + 1 :].strip(b" \t"), pos, nxt))
        pos = nxt
    return headers, bad


def _common(
    data: bytes, headers: list[Header], body_start: int
) -> tuple[str, int, str, list[Via], NameAddr, NameAddr, int | None, int]:
    """Fields every message needs: Call-ID, CSeq, Via, From, To, Max-Forwards, body end."""
    seen: dict[str, bytes] = {}
    via_values: list[bytes] = []
    for name, value, _, _ in headers:
        if name == "via":
            via_values.extend(split_commas(value))
        elif name in SINGLETONS:
            if name in seen:
                raise BadRequest(f"more than one {name} header")
            seen[name] = value
    for need in ("call-id", "cseq", "from", "to"):
        if need not in seen:
            raise BadRequest(f"missing {need} header")
    if not via_values:
        raise BadRequest("missing via header")
    call_id = seen["call-id"]
    if not call_id or b" " in call_id or b"\t" in call_id:
        raise BadRequest("malformed call-id")
    m = CSEQ_RE.fullmatch(seen["cseq"])
    if m is None or int(m.group(1)) > CSEQ_MAX:
        raise BadRequest("malformed cseq")
    vias = [parse_via(v) for v in via_values]
    max_forwards = None
    mf = seen.get("max-forwards")
    if mf is not None:
        if not DIGITS_RE.fullmatch(mf):
            raise BadRequest("malformed max-forwards")
        max_forwards = int(mf)
    body_end = len(data)
    cl = seen.get("content-length")
    if cl is not None:
        if not DIGITS_RE.fullmatch(cl):
            raise BadRequest("malformed content-length")
        body_end = body_start + int(cl)
        if body_end > len(data):
            raise BadRequest("content-length larger than the message")
    return (
        call_id.decode("latin-1"),
        int(m.group(1)),
        m.group(2).decode("ascii"),
        vias,
        parse_name_addr(seen["from"]),
        parse_name_addr(seen["to"]),
        max_forwards,
        body_end,
    )


def _request(
    data: bytes, start_line: bytes, headers: list[Header], line_end: int, body_start: int
) -> Request:
    parts = start_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method_b, uri_b, version = parts
    if not TOKEN_B_RE.fullmatch(method_b):
        raise BadRequest("malformed method")
    method = method_b.decode("ascii")
    vm = VERSION_RE.fullmatch(version)
    if vm is None:
        raise BadRequest("malformed SIP version")
    if vm.groups() != (b"2", b"0"):
        raise VersionNotSupported(f"version {version.decode('latin-1')}")
    uri = parse_uri(uri_b.decode("utf-8", "surrogateescape"))
    call_id, cseq, cseq_method, vias, from_, to, max_forwards, body_end = _common(
        data, headers, body_start
    )
    if cseq_method != method:
        if method not in KNOWN_METHODS:
            raise NotImplemented_(f"method {method} with CSeq method {cseq_method}")
        raise BadRequest("CSeq method does not match the request method")
    return Request(
        raw=data,
        headers=headers,
        line_end=line_end,
        body_start=body_start,
        body_end=body_end,
        call_id=call_id,
        cseq=cseq,
        cseq_method=cseq_method,
        vias=vias,
        from_=from_,
        to=to,
        method=method,
        uri=uri,
        max_forwards=max_forwards,
    )


def _response(
    data: bytes, start_line: bytes, headers: list[Header], line_end: int, body_start: int
) -> Response:
    m = STATUS_LINE_RE.fullmatch(start_line)
    if m is None:
        raise BadRequest("malformed status line")
    if m.group(1).upper() != b"SIP/2.0":
        raise VersionNotSupported("response version")
    call_id, cseq, cseq_method, vias, from_, to, _, body_end = _common(data, headers, body_start)
    return Response(
        raw=data,
        headers=headers,
        line_end=line_end,
        body_start=body_start,
        body_end=body_end,
        call_id=call_id,
        cseq=cseq,
        cseq_method=cseq_method,
        vias=vias,
        from_=from_,
        to=to,
        status=int(m.group(2)),
        reason=(m.group(3) or b"").decode("utf-8", "replace"),
    )


def _salvage(data: bytes, headers: list[Header], is_request: bool, start_line: bytes) -> Salvage:
    method = None
    if is_request:
        method = start_line.split(b" ", 1)[0].decode("latin-1")
    lines = [data[h[2] : h[3]].rstrip(b"\r\n") for h in headers if h[0] in _SALVAGED]
    return Salvage(is_request=is_request, method=method, lines=lines)


def salvage(data: bytes) -> Salvage:
    """What can be read of a message to answer it (used by the stream framer)."""
    try:
        msg = parse_message(data)
    except SipError as exc:
        return exc.salvage or Salvage(is_request=True)
    start_line = data[: msg.line_end].strip()
    return _salvage(data, msg.headers, isinstance(msg, Request), start_line)
