"""Build what a proxy sends: local replies and edited copies of received messages.

A forwarded message is the received bytes with a few splices (insert a Via, replace
Max-Forwards, drop a Route); splicing costs ~0.4 µs where re-serialising costs ~3 µs, and it
leaves every byte we did not mean to change as the peer sent it.
"""

from __future__ import annotations

import hashlib

from ingress.sip.errors import Salvage
from ingress.sip.message import Request

CRLF = b"\r\n"

#: an edit of ``raw``: replace ``raw[start:end]`` with ``data`` (start == end inserts)
Edit = tuple[int, int, bytes]


def splice(raw: bytes, edits: list[Edit], end: int | None = None) -> bytes:
    """Apply non-overlapping edits to ``raw[:end]`` in one pass."""
    if end is None:
        end = len(raw)
    edits.sort(key=_edit_start)
    out: list[bytes] = []
    pos = 0
    for start, stop, data in edits:
        out.append(raw[pos:start])
        out.append(data)
        pos = stop
    out.append(raw[pos:end])
    return b"".join(out)


def _edit_start(e: Edit) -> tuple[int, int]:
    return (e[0], e[1])


def build_response(
    request: Request | Salvage,
    status: int,
    reason: str,
    *,
    extra_headers: tuple[bytes, ...] = (),
    to_tag: str | None = None,
) -> bytes:
    """A reply copying Via, From, To, Call-ID and CSeq from the request (§8.2.6.2).

    The To-tag is added when the request's To has none and the status is above 100; unless
    given it is derived from the copied lines, so a retransmitted request gets the same one
    (stateless replies, §16.11).
    """
    if isinstance(request, Salvage):
        lines = list(request.lines)
    else:
        raw = request.raw
        lines = [
            raw[h[2] : h[3]].rstrip(b"\r\n")
            for h in request.headers
            if h[0] in ("via", "from", "to", "call-id", "cseq")
        ]
    out = [b"SIP/2.0 %d %s" % (status, reason.encode())]
    if to_tag is None and status > 100:  # a 100 gets no tag: no hash (every INVITE's Trying)
        to_tag = hashlib.blake2b(b"\n".join(lines), digest_size=8).hexdigest()
    for line in lines:
        if status > 100 and to_tag and _is_to_without_tag(line):
            line = line + b";tag=" + to_tag.encode()
        out.append(line)
    out.extend(extra_headers)
    out.append(b"Content-Length: 0")
    return CRLF.join(out) + CRLF + CRLF


def _is_to_without_tag(line: bytes) -> bool:
    name, _, value = line.partition(b":")
    if name.strip().lower() not in (b"to", b"t"):
        return False
    # the tag is a header parameter: after the closing ">" when there is one
    tail = value[value.rfind(b">") + 1 :] if b">" in value else value
    return b";tag=" not in tail.replace(b" ", b"").lower()
