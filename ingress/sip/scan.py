"""What an ingress checks of every message before a worker parses it in full.

Rules:
1. ``scan_message`` reads the start line and the Call-ID and nothing else: enough to answer
   a broken start line (400, 505), to pick the worker that owns the call, and to tell a
   request from a response. It costs a fifth of ``parse_message``, which the worker runs
   anyway; the worker answers what only the full parse finds (docs/design.md §1: the ingress
   extracts and checks, the worker parses further what it needs).
2. It raises the same ``SipError`` (with the same salvage) that ``parse_message`` would for
   the start line, so an answer does not depend on which process found the fault.
3. It also counts the header lines and fields (C-speed ``bytes.count``, no line is split): a
   message over ``MAX_HEADER_LINES`` or ``MAX_HEADER_FIELDS`` never reaches a worker, and is
   refused in the same order as ``parse_message`` refuses it (before the start line is read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ingress.sip.errors import BadRequest, SipError, TooManyHeaders
from ingress.sip.grammar import CALL_ID_RE, STATUS_CODE_RE, TOKEN_B_RE
from ingress.sip.parser import MAX_HEADER_FIELDS, _over_cap, _version, salvage

# Call-ID = ( "Call-ID" / "i" ) HCOLON callid (RFC 3261 §20.8); callid is word ["@" word].
# The LWS around it may be folded (§7.3.1), as the parser accepts.
_SWS = rb"(?:[ \t]|\r?\n[ \t])*"
# It starts at the "\n" before the name rather than at "^": a literal first character lets
# ``re`` skip to line breaks, where "(?m)^" tried every offset (1 ms for a 64 KB datagram).
_CALL_ID = re.compile(
    rb"(?i)\n(?:call-id|i)[ \t]*:" + _SWS + rb"([!-~]+)" + _SWS + rb"\r?(?:\n|\Z)"
)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, 0.6 µs a
# message where this one costs 0.14 (every message the ingress takes is scanned). Treat it as
# read-only all the same. The __init__ is written out (the dataclass keeps it): compiled it is
# native code, where the one ``dataclasses`` generates is interpreted (#16).
@dataclass(slots=True)
class Summary:
    is_request: bool
    #: the request method as sent (None for a response)
    method: bytes | None
    call_id: bytes

    def __init__(self, is_request: bool, method: bytes | None, call_id: bytes) -> None:
        self.is_request, self.method, self.call_id = is_request, method, call_id


def scan_message(data: bytes) -> Summary:
    """Check the start line and find the Call-ID of one message.

    Raises:
        SipError: a malformed start line (400), another SIP version (505), no end of header
            section or no Call-ID (400); ``salvage`` holds what an answer needs.
    """
    try:
        return _scan(data)
    except SipError as exc:
        exc.salvage = salvage(data)
        raise


def _scan(data: bytes) -> Summary:
    start = 0
    while data.startswith(b"\r\n", start):  # §7.5: ignore CRLFs before the start line
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end >= 0:
        # lines end where the parse ends them: a bare LF inside a CRLF message's start line
        # leaves the line malformed (400) there, whatever version it names
        nl = data.find(b"\r\n", start) + 1
    else:
        end = data.find(b"\n\n", start)
        if end < 0:
            raise BadRequest("no end of header section")
        nl = data.find(b"\n", start)
    # one count is enough for a normal message; the exact one only when it could be over
    lines = data.count(b"\n", nl, end)
    if lines > MAX_HEADER_FIELDS and (over := _over_cap(data[nl:end], lines)):
        raise TooManyHeaders(over)
    line = data[start:nl].rstrip(b"\r")
    if line[:4].upper() == b"SIP/":
        version, _, rest = line.partition(b" ")
        if STATUS_CODE_RE.fullmatch(rest[:3]) is None or rest[3:4] not in (b"", b" "):
            raise BadRequest("malformed status line")
        if version != b"SIP/2.0":
            _version(version)
        method = None
    else:
        parts = line.split(b" ")
        if len(parts) != 3 or TOKEN_B_RE.fullmatch(parts[0]) is None:
            raise BadRequest("malformed request line")
        if parts[2] != b"SIP/2.0":
            _version(parts[2])
        method = parts[0]
    # fast path: the spelling nearly every UA sends; anything else goes to the regex
    i = data.find(b"\nCall-ID: ", nl - 1, end)
    if i >= 0:
        j = data.find(b"\n", i + 10)
        call_id = data[i + 10 : j].strip()
        if CALL_ID_RE.fullmatch(call_id) is not None:
            return Summary(method is not None, method, call_id)
    m = _CALL_ID.search(data, nl, end + 2)
    if m is None:
        raise BadRequest("missing or malformed call-id header")
    return Summary(method is not None, method, m.group(1))
