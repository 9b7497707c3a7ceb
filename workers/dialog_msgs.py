"""What the dialog table reads from messages and what it builds: BYEs and CDRs, sans-IO.

Rules:
1. A BYE the proxy sends for an expired dialog is the request that side's peer would send
   (RFC 3261 §12.2.1.1, §15.1.1): Request-URI = the remote target (the side's Contact), Route
   = the part of the dialog's route set between us and that side, From/To = the peer's and
   the side's (tags swapped per direction), the dialog's Call-ID, CSeq one above the highest
   the peer sent, one Via (ours, with the branch the proxy chose), Max-Forwards 70, a Reason
   (RFC 3326) naming the expiry, Content-Length 0.
2. Route sets from Record-Route (§12.1.1, §12.1.2): the callee's route set is Record-Route in
   order, the caller's is it reversed. The entries between us and the caller are those the
   INVITE brought with it (in order: the callee's view, nearest to us first); the entries
   between us and the callee are those of the answer above ours, reversed (the caller's view).
   Our own entries (one, or two when the transport changes) are dropped.
3. A strict router first in the route set (no ``lr``, §12.2.1.1) takes the Request-URI and
   the remote target goes last in Route.
4. Times in a CDR are ISO-8601 UTC with milliseconds; durations come from the wall clock
   readings the proxy passed in, never negative.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ingress.sip.errors import SipError
from ingress.sip.grammar import parse_name_addr
from ingress.sip.headers import split_commas
from ingress.sip.message import Message, Uri

if TYPE_CHECKING:
    from workers.dialogs import Dialog

CRLF = b"\r\n"
#: RFC 3326 Reason of a BYE for an expired dialog: 408, the request (the session) timed out
REASON = b'Reason: SIP;cause=408;text="dialog lifetime expired"'


def target(msg: Message) -> bytes | None:
    """The remote target a message names: its first Contact's URI, or None."""
    values = msg.header_values("contact")
    if not values or values[0] == b"*":
        return None
    try:
        return parse_name_addr(values[0]).uri.raw.encode("utf-8", "surrogateescape")
    except SipError:
        return None


def session_expires(msg: Message) -> float:
    """The Session-Expires delta-seconds of ``msg`` (RFC 4028 §4), or 0 when absent or bad."""
    value = msg.header("session-expires")
    if value is None:
        return 0.0
    head = value.split(b";", 1)[0].strip()
    return float(head) if head.isdigit() and 0 < int(head) < 1 << 31 else 0.0


def record_route_sides(msg: Message, caller_route: bytes, is_us: Callable[[Uri], bool]) -> bytes:
    """The Route value of a request to the callee, from the Record-Route of its 1xx/2xx
    (rule 2): the entries above those the INVITE brought, ours dropped, reversed."""
    rr = msg.header_values("record-route")
    n_up = len(split_commas(caller_route)) if caller_route else 0
    down = rr[: len(rr) - n_up] if n_up else rr
    while down and _is_us(down[-1], is_us):
        down = down[:-1]
    return b", ".join(reversed(down))


def _is_us(value: bytes, is_us: Callable[[Uri], bool]) -> bool:
    try:
        return is_us(parse_name_addr(value).uri)
    except SipError:
        return False


def build_bye(dlg: Dialog, side: str, via: bytes, branch: str) -> bytes:
    """The BYE that ends ``dlg`` at ``side`` (``"caller"`` or ``"callee"``), rule 1."""
    if side == "callee":  # as the caller would send it
        remote, routes = dlg.callee_target, dlg.callee_route
        from_, to, cseq = dlg.from_hdr, dlg.to_hdr, dlg.caller_cseq + 1
    else:  # as the callee would send it
        remote, routes = dlg.caller_target, dlg.caller_route
        from_, to, cseq = dlg.to_hdr, dlg.from_hdr, dlg.callee_cseq + 1
    ruri = remote
    route = split_commas(routes) if routes else []
    if route and not _loose(route[0]):  # rule 3
        ruri = parse_name_addr(route[0]).uri.raw.encode("utf-8", "surrogateescape")
        route = route[1:] + [b"<" + remote + b">"]
    lines = [b"BYE " + ruri + b" SIP/2.0", b"Via: " + via + b";branch=" + branch.encode(),
             b"Max-Forwards: 70"]  # fmt: skip
    if route:
        lines.append(b"Route: " + b", ".join(route))
    lines += [
        b"From: " + from_,
        b"To: " + to,
        b"Call-ID: " + dlg.call_id.encode("utf-8", "surrogateescape"),
        b"CSeq: %d BYE" % cseq,
        REASON,
        b"Content-Length: 0",
    ]
    return CRLF.join(lines) + CRLF + CRLF


def _loose(value: bytes) -> bool:
    try:
        return parse_name_addr(value).uri.has_param("lr")
    except SipError:
        return True  # not ours to fix: send it as a loose route


def make_cdr(dlg: Dialog, end: float, cause: str, ended_by: str) -> dict[str, Any]:
    """The CDR of a finished call (rule 4); ``end`` is the wall time it ended."""
    start, answer = dlg.start, dlg.answer
    setup_until = answer or end
    return {
        "call_id": dlg.call_id,
        "from_tag": dlg.from_tag,  # with the Call-ID, the dialog's key (workers/cdr.py rule 8)
        "from": _uri(dlg.from_hdr),
        "to": _uri(dlg.to_hdr),
        "source": dlg.source,
        "destination": dlg.destination,
        "start": iso(start),
        "answer": iso(answer) if answer else None,
        "end": iso(end),
        "setup_ms": max(0, round((setup_until - start) * 1000)),
        "talk_ms": max(0, round((end - answer) * 1000)) if answer else 0,
        "cause": cause,
        "ended_by": ended_by,
    }


def iso(wall: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds: ``2026-01-02T03:04:05.678Z``.

    The text ``iso_datetime`` gives, for a third of its cost: a CDR holds three of these, and
    the calls that end in one second share its date and time, formatted once
    (tests/workers/test_cdr_line.py holds the two to the same text)."""
    # datetime.fromtimestamp's own split: the fraction rounded half-even to microseconds
    frac, whole = math.modf(wall)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    sec = int(whole)
    cached = _ISO_SECOND
    if cached[0] != sec:
        if not 0 <= sec < _ISO_FAST_UNTIL:  # a four-digit year after 1970: strftime's %Y
            return iso_datetime(wall)
        cached[0], cached[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{cached[1]}.{us // 1000:03d}Z"


#: the second ``iso`` formatted last, and its text
_ISO_SECOND: list[Any] = [None, ""]
#: 10000-01-01T00:00:00Z: from there the year has five digits
_ISO_FAST_UNTIL = 253_402_300_800


def iso_datetime(wall: float) -> str:
    """``iso`` by way of ``datetime``: the reference the fast path is tested against."""
    t = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uri(value: bytes) -> str:
    try:
        return parse_name_addr(value).uri.raw
    except SipError:
        return value.decode("utf-8", "replace")
