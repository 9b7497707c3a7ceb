"""Parse one SIP message from bytes (RFC 3261 §7, §25). No I/O, no clock, no logging.

Rules:
1. ``parse_message`` returns a ``Request`` or ``Response`` or raises ``SipError``; any other
   exception is a bug (tests/ingress/sip/test_properties.py holds it to that).
2. Every error raised after the header section was found carries a ``Salvage`` of the Via,
   From, To, Call-ID and CSeq lines, so the caller can answer without parsing again.
3. The body is framed by Content-Length. Over a datagram a missing Content-Length means "the
   rest of the datagram" and octets past it are ignored (§18.3); a stream framer passes exactly
   one message.
4. What a proxy reads or forwards is validated here, once: the start line, every Via, From,
   To, Contact, Route, Record-Route, Call-ID, CSeq, Max-Forwards and Content-Length. Other
   headers are kept as bytes and parsed by whoever needs them.
5. The cost of a message is linear in its size, and bounded: over ``MAX_HEADER_LINES``
   lines, ``MAX_HEADER_FIELDS`` fields, or ``MAX_LIST_VALUES`` values in Via or in the
   name-addr lists, is ``TooManyHeaders`` (400), salvaged from the first lines only.

6. What was read of a header line, a CSeq value or a number may be remembered (bounded
   memos, keyed by the exact bytes): a hit gives what reading them again gives, and every
   check that depends on the message (a second singleton, the list cap) still runs on it.

This is the hot path of the whole proxy (every message a worker takes is parsed here in
full), so it works with bytes methods (split, partition, find) and one compiled regex per
element, reads the header lines in one pass when they are plain (``_scan_fields``), and
leaves parameter dicts to be built on first use.
"""

from __future__ import annotations

from typing import TypeVar

from ingress.sip.errors import (
    BadRequest,
    NotImplemented_,
    Salvage,
    SipError,
    TooManyHeaders,
    VersionNotSupported,
)
from ingress.sip.grammar import (
    CALL_ID_RE,
    CSEQ_MAX,
    TOKEN_B_RE,
    VERSION_RE,
    parse_name_addr,
    parse_uri,
    parse_via,
)
from ingress.sip.headers import _FIELD_CACHE, field_name, split_commas
from ingress.sip.message import Header, Request, Response, Uri, Via

KNOWN_METHODS = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
# the method tokens seen on every message, already validated and decoded
_METHOD_NAMES: dict[bytes, str] = {m.encode(): m for m in KNOWN_METHODS}

# Headers that may appear once only; a second copy makes the message ambiguous (RFC 4475 3.3.8).
SINGLETONS = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length"})
# Validated although the parser keeps them as bytes: we forward them, and the next hop (or our
# own route processing) reads them. RFC 4475 3.1.2.13: an addr-spec holding "?" must be in <>.
NAME_ADDR_LISTS = frozenset({"contact", "route", "record-route"})
# what _fields does with a header: one dict lookup instead of a chain of set tests
_SINGLE, _VIA, _LIST = "single", "via", "list"
_KIND: dict[str, str] = {
    **dict.fromkeys(SINGLETONS, _SINGLE),
    "via": _VIA,
    **dict.fromkeys(NAME_ADDR_LISTS, _LIST),
}
_SALVAGED = frozenset({"via", "from", "to", "call-id", "cseq"})

#: Header fields in one message (a folded field counts once). Apache httpd refuses an HTTP
#: request over 100 fields (LimitRequestFields); a SIP request that crossed Max-Forwards' 70
#: hops (§8.1.1.6) may carry a Via and a Record-Route field per hop, 140, plus the 20-40 its
#: UA sent: 256 leaves room, and keeps a 64 KB datagram of 16 000 short fields from costing
#: 16 000 header tuples in every process that reads it.
MAX_HEADER_FIELDS = 256
#: Lines of the header section, continuation lines (§7.3.1) included: each is a step of the
#: Python scan, ~0.25 µs, and folding is rare (RFC 4475's most folded message, wsinv, has 27
#: lines, 13 of them continuations). Without it one 64 KB datagram of one-byte folds cost an
#: ingress 4 ms to refuse; with it, one C-speed count.
MAX_HEADER_LINES = 4 * MAX_HEADER_FIELDS
#: Values in Via, and in Contact, Route and Record-Route together, once comma lists are split:
#: the same 70 hops, with one Via and one Record-Route value each, and room. Each value is a
#: regex match and an object, ~3 µs: without a cap a 64 KB Route list cost a worker 10 ms.
MAX_LIST_VALUES = 256
_CRLF = b"\r\n"
#: what the one-pass scan gives: every header, every Via, the value of each singleton
_Scanned = tuple[list[Header], list[Via], dict[str, bytes]]
#: header lines the one-pass scan read before: line -> (name, value, kind, values in a
#: name-addr list). Most lines of a trunk's messages repeat from call to call (CSeq: 1 INVITE,
#: Max-Forwards, Contact, Content-Type, Content-Length ...); a hit costs one dict lookup where
#: reading the line costs a partition, a strip and two lookups. A hit gives what reading the
#: line gives; what is checked of a value later (a singleton's number, its second copy, the
#: list cap) is checked per message as before, and a name-addr list is kept only once an
#: untrusted parse validated it, so a hit needs no check of its values. Via, From, To and
#: Call-ID carry a branch, a tag or the Call-ID and are not kept: they would churn the memo.
_LINE_CACHE: dict[bytes, tuple[str, bytes, str | None, int]] = {}
_LINES_MAX = 1024
_LINE_MAX = 256
_UNKEPT = frozenset({"via", "from", "to", "call-id"})
#: CSeq values and numbers (Max-Forwards, Content-Length) read before; only values that
#: passed are kept, so a hit is what reading them again would give. Short values only (a
#: number may lead with any count of zeros): the memos stay within ~100 KB each.
_CSEQ_CACHE: dict[bytes, tuple[int, bytes]] = {}
#: start lines read before: a request line's (method token, method, Request-URI), a status
#: line's (code, reason)
_REQUEST_LINE_CACHE: dict[bytes, tuple[bytes, str, Uri]] = {}
_STATUS_LINE_CACHE: dict[bytes, tuple[int, str]] = {}
_NUMBER_CACHE: dict[bytes, int] = {}
_MEMO_MAX = 1024
_MEMO_KEY_MAX = 32
_T = TypeVar("_T")


def parse_message(data: bytes, *, trusted: bool = False) -> Request | Response:
    """Parse exactly one message.

    Args:
        data: one datagram, or one message cut from a stream by ``StreamFramer``.
        trusted: the message already passed a full parse (a worker re-reading what its
            ingress checked): skip validating Contact, Route and Record-Route values, which
            are parsed again only where they are used.

    Returns:
        The parsed ``Request`` or ``Response``.

    Raises:
        SipError: the message is malformed (400), names another SIP version (505), or uses
            an unknown method with a mismatched CSeq (501). See the module rules.
    """
    start_line, lines, line_end, seplen, body_start, bad, is_request = _split_head(data)
    fields = _scan_fields(lines, line_end, seplen, trusted)
    if fields is None:  # something to unfold, refuse or report: the two passes below
        headers, scan_bad = _scan_headers(lines, line_end, seplen)
        bad = bad or scan_bad
    else:
        headers = fields[0]
    try:
        if is_request:
            return _request(data, start_line, headers, line_end, body_start, bad, trusted, fields)
        return _response(data, start_line, headers, line_end, body_start, bad, trusted, fields)
    except SipError as exc:
        if exc.salvage is None:
            exc.salvage = _salvage(data, headers, is_request, start_line)
        raise


def _read_head(data: bytes) -> tuple[bytes, list[Header], int, int, str | None, bool]:
    """The header section of a message, read but not validated: (start line, headers, offset
    past the start line, offset of the body, the first problem found, is it a request).

    Raises:
        BadRequest: no end of header section.
        TooManyHeaders: over a cap of rule 5.
    """
    start_line, lines, line_end, seplen, body_start, bad, is_request = _split_head(data)
    headers, scan_bad = _scan_headers(lines, line_end, seplen)
    return start_line, headers, line_end, body_start, bad or scan_bad, is_request


def _split_head(data: bytes) -> tuple[bytes, list[bytes], int, int, int, str | None, bool]:
    """The header section cut into lines: (start line, lines with the start line first,
    offset past the start line, length of a line break, offset of the body, the first problem
    the line breaks show, is it a request).

    Raises:
        BadRequest: no end of header section.
        TooManyHeaders: over a cap of rule 5.
    """
    start = 0
    if data[:2] == _CRLF:  # §7.5: ignore CRLFs before the start line
        while data.startswith(_CRLF, start):
            start += 2
    sep = _CRLF
    hdr_end = data.find(b"\r\n\r\n", start)
    if hdr_end < 0:
        # Bare-LF messages are not SIP, but broken UAs send them; accept them whole.
        hdr_end = data.find(b"\n\n", start)
        if hdr_end < 0:
            raise BadRequest("no end of header section", _salvage_cut(data))
        sep = b"\n"
    head = data[start:hdr_end]
    # one element more than the cap allows holds the rest unsplit: a long list is never made
    lines = head.split(sep, MAX_HEADER_LINES + 1)
    start_line = lines[0]
    seplen = len(sep)
    line_end = start + len(start_line) + seplen
    is_request = not (start_line[:4] == b"SIP/" or start_line[:4].upper() == b"SIP/")
    if len(lines) > MAX_HEADER_FIELDS + 1:
        over = _over_cap(head, len(lines) - 1)
        if over:
            # rule 5: an answer needs the Via and CSeq, which a UA sends among its first lines
            headers, _ = _scan_headers(lines[: MAX_HEADER_FIELDS + 1], line_end, seplen)
            raise TooManyHeaders(over, _salvage(data, headers, is_request, start_line))
    bad: str | None = None
    if sep is _CRLF:
        n = len(lines) - 1
        if head.count(b"\n") != n or head.count(b"\r") != n:
            bad = "bare CR or LF in the header section"
    elif b"\r" in head:
        bad = "mixed line endings"
    return start_line, lines, line_end, seplen, hdr_end + 2 * seplen, bad, is_request


def _over_cap(head: bytes, lines: int) -> str:
    """What is over the caps of rule 5 in a header section of ``lines`` lines (more than
    MAX_HEADER_LINES when it says MAX_HEADER_LINES + 1), or "" when nothing is."""
    if lines > MAX_HEADER_LINES:
        return f"more than {MAX_HEADER_LINES} header lines"
    if count_fields(head) > MAX_HEADER_FIELDS:
        return f"more than {MAX_HEADER_FIELDS} header fields"
    return ""


def count_fields(head: bytes) -> int:
    """Header fields in a header section (from the start line, or its line break, to the
    blank line): the line breaks not followed by a continuation line's SP or HTAB (§7.3.1)."""
    return head.count(b"\n") - head.count(b"\n ") - head.count(b"\n\t")


def _scan_headers(lines: list[bytes], pos: int, seplen: int) -> tuple[list[Header], str | None]:
    """Turn the header lines (``lines[1:]``) into headers.

    The loop here takes the common case only: every line is "name: value" with a name seen
    before (the cache holds validated names, so a continuation line, whose "name" starts with
    LWS, or a broken one never hits). Anything else goes to ``_scan_headers_slow``.
    """
    headers: list[Header] = []
    append = headers.append
    names = _FIELD_CACHE
    start = pos
    for line in lines[1:]:
        raw_name, colon, value = line.partition(b":")
        name = names.get(raw_name)
        if name is None or not colon:
            return _scan_headers_slow(lines, start, seplen)
        end = pos + len(line) + seplen
        append((name, value.strip(b" \t"), pos, end))
        pos = end
    return headers, None


def _scan_fields(lines: list[bytes], pos: int, seplen: int, trusted: bool) -> _Scanned | None:
    """``_scan_headers`` and ``_fields`` in one pass, for a message they would both pass.

    The worker's common case: every line "name: value" with a name seen before, every Via and
    name-addr well formed, each singleton once. Anything else returns None without raising,
    and the caller runs the two passes, which raise what they raise in the order they raise
    it (a start line error first, then the line breaks', then the first field's in order):
    this pass decides nothing that they would not. One loop instead of a loop over the lines
    and another over their tuples is worth little on its own (within the noise of
    bench/codec.py); it is what lets a line the memo (``_LINE_CACHE``) knows cost one lookup, the
    checks of its kind included (issue #16).
    """
    headers: list[Header] = []
    append = headers.append
    names = _FIELD_CACHE
    kinds = _KIND
    seen: dict[str, bytes] = {}
    vias: list[Via] = []
    listed = 0  # values of Contact, Route and Record-Route
    memo = _LINE_CACHE
    try:
        for line in lines[1:]:
            end = pos + len(line) + seplen
            hit = memo.get(line)
            if hit is not None:  # a line seen before, read and checked alike then
                name, value, kind, count = hit
                append((name, value, pos, end))
                pos = end
                if kind is _SINGLE:
                    if name in seen:
                        return None
                    seen[name] = value
                elif kind is not None:  # a name-addr list, validated when it was kept
                    listed += count
                    if listed > MAX_LIST_VALUES:
                        return None
                continue
            raw_name, colon, value = line.partition(b":")
            known = names.get(raw_name)
            if known is None or not colon:
                return None
            name = known
            value = value.strip(b" \t")
            append((name, value, pos, end))
            pos = end
            kind = kinds.get(name)
            if kind is None:
                _remember(line, name, value, None, 0)
                continue
            if kind is _SINGLE:
                _remember(line, name, value, kind, 0)
                if name in seen:
                    return None
                seen[name] = value
            elif kind is _VIA:
                if b"," not in value:
                    vias.append(parse_via(value))
                    continue
                values = split_commas(value)
                if len(vias) + len(values) > MAX_LIST_VALUES:
                    return None
                vias.extend([parse_via(v) for v in values])
            else:
                values = split_commas(value) if b"," in value else [value]
                listed += len(values)
                if listed > MAX_LIST_VALUES:
                    return None
                if not trusted:
                    for v in values:
                        if v != b"*" or name != "contact":  # Contact: * (§10.2.2)
                            parse_name_addr(v)
                    _remember(line, name, value, kind, len(values))
    except SipError:
        return None
    if (
        not vias
        or len(vias) > MAX_LIST_VALUES
        or "from" not in seen
        or "to" not in seen
        or "cseq" not in seen
        or "call-id" not in seen
        or CALL_ID_RE.fullmatch(seen["call-id"]) is None
    ):
        return None
    return headers, vias, seen


def _remember(line: bytes, name: str, value: bytes, kind: str | None, count: int) -> None:
    """Keep what the one-pass scan read of ``line``, unless the line carries what differs from
    call to call (``_UNKEPT``) or is long: a line is one memo entry at most ``_LINE_MAX``
    octets long, so the memo holds ``_LINES_MAX`` of them within a few hundred KB."""
    if name in _UNKEPT or len(line) > _LINE_MAX:
        return
    if len(_LINE_CACHE) >= _LINES_MAX:
        _LINE_CACHE.clear()  # start over: what repeats comes back at once
    _LINE_CACHE[line] = (name, value, kind, count)


def _scan_headers_slow(
    lines: list[bytes], pos: int, seplen: int
) -> tuple[list[Header], str | None]:
    """Like ``_scan_headers``, unfolding continuations (§7.3.1) and validating new names.

    Returns the headers and, instead of raising, the first problem found, so that the lines
    after a bad one still reach the salvage.

    The continuation lines of a header are gathered and joined once, when the next header
    starts: growing the value line by line copied it once per line, which made a datagram of
    one-byte continuation lines cost quadratic time (17 ms for 64 KB).
    """
    headers: list[Header] = []
    append = headers.append
    bad: str | None = None
    names = _FIELD_CACHE
    folds: list[bytes] = []  # continuation lines of headers[-1], not yet joined to it
    fold_end = 0
    it = iter(lines)
    next(it)  # the start line
    for line in it:
        end = pos + len(line) + seplen
        first = line[:1]
        if first == b" " or first == b"\t":
            if headers:
                folds.append(line.strip(b" \t"))
                fold_end = end
            else:
                bad = bad or "continuation line before any header"
            pos = end
            continue
        raw_name, colon, value = line.partition(b":")
        name: str | None = names.get(raw_name) if colon else None
        if name is None:
            name = field_name(raw_name) if colon else None
            if name is None:
                bad = bad or "malformed header line"
                pos = end
                continue
        if folds:
            _unfold(headers, folds, fold_end)
            folds = []
        append((name, value.strip(b" \t"), pos, end))
        pos = end
    if folds:
        _unfold(headers, folds, fold_end)
    return headers, bad


def _unfold(headers: list[Header], folds: list[bytes], end: int) -> None:
    """Join continuation lines to the last header: LWS = [*WSP CRLF] 1*WSP, so each fold
    becomes one SP, and a blank piece (an empty value, a line of spaces) adds nothing."""
    name, value, start, _ = headers[-1]
    pieces = [value, *folds] if value else folds
    headers[-1] = (name, b" ".join([p for p in pieces if p]), start, end)


def _fields(headers: list[Header], trusted: bool) -> tuple[list[Via], dict[str, bytes]]:
    """Every Via, parsed, and the value of each singleton header."""
    seen: dict[str, bytes] = {}
    vias: list[Via] = []
    kinds = _KIND
    listed = 0  # values of Contact, Route and Record-Route
    for name, value, _, _ in headers:
        kind = kinds.get(name)
        if kind is None:
            continue
        if kind is _SINGLE:
            if name in seen:
                raise BadRequest(f"more than one {name} header")
            seen[name] = value
        elif kind is _VIA:
            if b"," not in value:
                vias.append(parse_via(value))
                continue
            values = split_commas(value)
            if len(vias) + len(values) > MAX_LIST_VALUES:  # checked before the parse it bounds
                raise TooManyHeaders(f"more than {MAX_LIST_VALUES} Via values")
            vias.extend(parse_via(v) for v in values)
        else:
            values = split_commas(value) if b"," in value else [value]
            listed += len(values)
            if listed > MAX_LIST_VALUES:
                raise TooManyHeaders(
                    f"more than {MAX_LIST_VALUES} Contact/Route/Record-Route values"
                )
            if not trusted:
                for v in values:
                    if v != b"*" or name != "contact":  # Contact: * (§10.2.2)
                        parse_name_addr(v)
    if len(vias) > MAX_LIST_VALUES:  # single-value Via fields, each bounded by the field cap
        raise TooManyHeaders(f"more than {MAX_LIST_VALUES} Via values")
    if not vias:
        raise BadRequest("missing via header")
    if "from" not in seen or "to" not in seen or "call-id" not in seen or "cseq" not in seen:
        missing = sorted({"from", "to", "call-id", "cseq"} - seen.keys())
        raise BadRequest(f"missing {', '.join(missing)} header")
    if CALL_ID_RE.fullmatch(seen["call-id"]) is None:
        raise BadRequest("malformed call-id")
    return vias, seen


def _number(value: bytes, what: str) -> int:
    """1*DIGIT within 32 bits (§8.1.1.5 for CSeq; the same cap keeps the others sane)."""
    n = _NUMBER_CACHE.get(value)
    if n is not None:  # Max-Forwards 70, Content-Length 0: a few values are most of them
        return n
    n = _read_number(value, what)
    if len(value) <= _MEMO_KEY_MAX:
        if len(_NUMBER_CACHE) >= _MEMO_MAX:
            _NUMBER_CACHE.clear()
        _NUMBER_CACHE[value] = n
    return n


def _read_number(value: bytes, what: str) -> int:
    if value.isdigit():
        if len(value) <= 10:
            n = int(value)
            if n <= CSEQ_MAX:
                return n
        elif len(value.lstrip(b"0")) <= 10:
            return _read_number(value.lstrip(b"0") or b"0", what)
    raise BadRequest(f"malformed {what}")


def _cseq(value: bytes) -> tuple[int, bytes]:
    known = _CSEQ_CACHE.get(value)
    if known is not None:  # "1 INVITE", "2 BYE": a UA's CSeq values repeat from call to call
        return known
    parts = value.split()
    if len(parts) != 2:
        raise BadRequest("malformed cseq")
    known = _read_number(parts[0], "cseq"), parts[1]
    if len(value) <= _MEMO_KEY_MAX:
        if len(_CSEQ_CACHE) >= _MEMO_MAX:
            _CSEQ_CACHE.clear()
        _CSEQ_CACHE[value] = known
    return known


def _body_end(data: bytes, cl: bytes | None, body_start: int) -> int:
    if cl is None:
        return len(data)
    body_end = body_start + _number(cl, "content-length")
    if body_end > len(data):
        raise BadRequest("content-length larger than the message")
    return body_end


def _version(version: bytes) -> None:
    # called only when the version is not the literal "SIP/2.0"
    vm = VERSION_RE.fullmatch(version)
    if vm is None:
        raise BadRequest("malformed SIP version")
    if vm.groups() != (b"2", b"0"):
        raise VersionNotSupported(f"version {version.decode('latin-1')}")


def _request(
    data: bytes,
    start_line: bytes,
    headers: list[Header],
    line_end: int,
    body_start: int,
    bad: str | None,
    trusted: bool,
    fields: _Scanned | None = None,
) -> Request:
    request_line = _REQUEST_LINE_CACHE.get(start_line)
    if request_line is None:
        request_line = _request_line(start_line)
        _keep(_REQUEST_LINE_CACHE, start_line, request_line)
    method_b, method, uri = request_line
    if bad is not None:
        raise BadRequest(bad)
    vias, seen = _fields(headers, trusted) if fields is None else (fields[1], fields[2])
    cseq, cseq_method_b = _cseq(seen["cseq"])
    if cseq_method_b != method_b:
        if method not in KNOWN_METHODS:
            raise NotImplemented_(f"method {method} with a different CSeq method")
        raise BadRequest("CSeq method does not match the request method")
    mf = seen.get("max-forwards")
    return Request(
        data,
        headers,
        line_end,
        body_start,
        _body_end(data, seen.get("content-length"), body_start),
        seen["call-id"].decode("ascii"),
        cseq,
        method,
        vias,
        parse_name_addr(seen["from"]),
        parse_name_addr(seen["to"]),
        method,
        uri,
        None if mf is None else _number(mf, "max-forwards"),
    )


def _request_line(start_line: bytes) -> tuple[bytes, str, Uri]:
    """Method token, method and Request-URI of a request line (§7.1).

    Raises:
        SipError: a malformed line, method or URI (400), another version (505).
    """
    parts = start_line.split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method_b, uri_b, version = parts
    known = _METHOD_NAMES.get(method_b)
    if known is not None:
        method = known
    elif TOKEN_B_RE.fullmatch(method_b) is not None:
        method = method_b.decode("ascii")
    else:
        raise BadRequest("malformed method")
    if version != b"SIP/2.0":
        _version(version)
    if not uri_b.isascii():
        raise BadRequest("non-ASCII Request-URI")
    uri = parse_uri(uri_b.decode("ascii"))
    if uri.headers is not None:  # §19.1.1 Table 1: headers are not allowed in a Request-URI
        raise BadRequest("headers in the Request-URI")
    return method_b, method, uri


def _status_line(start_line: bytes) -> tuple[int, str]:
    """Status code and reason phrase of a status line (§7.2).

    Raises:
        SipError: a malformed line (400), another version (505).
    """
    version, _, rest = start_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    # STATUS_CODE_RE without the regex call (bytes.isdigit is ASCII only, as \d in bytes)
    if len(code) != 3 or not code.isdigit() or not 49 <= code[0] <= 54:  # 1-6
        raise BadRequest("malformed status line")
    if version != b"SIP/2.0":
        _version(version)
    return int(code), reason.decode("utf-8", "replace")


def _keep(memo: dict[bytes, _T], line: bytes, read: _T) -> None:
    """Remember a start line that passed (rule 6): a trunk's INVITEs share theirs, the ACKs and
    BYEs of a UAS theirs, and most responses are one of a few status lines."""
    if len(line) <= _LINE_MAX:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        memo[line] = read


def _response(
    data: bytes,
    start_line: bytes,
    headers: list[Header],
    line_end: int,
    body_start: int,
    bad: str | None,
    trusted: bool,
    fields: _Scanned | None = None,
) -> Response:
    status_line = _STATUS_LINE_CACHE.get(start_line)
    if status_line is None:
        status_line = _status_line(start_line)
        _keep(_STATUS_LINE_CACHE, start_line, status_line)
    status, reason = status_line
    if bad is not None:
        raise BadRequest(bad)
    vias, seen = _fields(headers, trusted) if fields is None else (fields[1], fields[2])
    cseq, cseq_method_b = _cseq(seen["cseq"])
    cseq_method = _METHOD_NAMES.get(cseq_method_b)  # a known method is a token already
    if cseq_method is None:
        if TOKEN_B_RE.fullmatch(cseq_method_b) is None:
            raise BadRequest("malformed cseq method")
        cseq_method = cseq_method_b.decode("ascii")
    return Response(
        data,
        headers,
        line_end,
        body_start,
        _body_end(data, seen.get("content-length"), body_start),
        seen["call-id"].decode("ascii"),
        cseq,
        cseq_method,
        vias,
        parse_name_addr(seen["from"]),
        parse_name_addr(seen["to"]),
        status,
        reason,
    )


def _salvage(data: bytes, headers: list[Header], is_request: bool, start_line: bytes) -> Salvage:
    """Every Via line and the first From, To, Call-ID and CSeq line, for an answer (§8.2.6.2)."""
    method = None
    if is_request:
        method = start_line.split(b" ", 1)[0].decode("latin-1")
    lines: list[bytes] = []
    taken: set[str] = set()
    for name, _, start, end in headers:
        if name in _SALVAGED and (name == "via" or name not in taken):
            taken.add(name)
            lines.append(data[start:end].rstrip(b"\r\n"))
    return Salvage(is_request=is_request, method=method, lines=lines)


def salvage(data: bytes) -> Salvage:
    """What can be read of a message to answer it (used by the scan and the stream framer):
    the salvage ``parse_message`` would attach to its error, from the header section alone.
    Reading no more than that keeps a refused message cheap: no URI, Via or name-addr is
    matched to refuse it.

    A header section cut short (over the size cap) is read up to its last complete line.
    """
    try:
        start_line, headers, _, _, _, is_request = _read_head(data)
    except SipError as exc:
        return exc.salvage or Salvage(is_request=data.lstrip()[:4].upper() != b"SIP/")
    return _salvage(data, headers, is_request, start_line)


def _salvage_cut(data: bytes) -> Salvage:
    """Salvage of a message with no end of header section: its complete lines, if any."""
    is_request = data.lstrip()[:4].upper() != b"SIP/"
    # without leading CRLFs, the cut head always has its terminator: no second cut can follow
    data = data.lstrip(b"\r\n")
    cut = data.rfind(b"\r\n")
    if cut <= 0:
        return Salvage(is_request=is_request)
    return salvage(data[:cut] + b"\r\n\r\n")
