"""Requests a transaction builds itself: the ACK for a non-2xx final and the CANCEL (§17.1.1.3, §9.1).

Rules:
1. Both are built from the request *as it was sent* (the bytes the client transaction holds),
   so the Request-URI, Call-ID, From, CSeq number, top Via (hence the branch) and Route set are
   the ones the next hop saw. Lines are copied byte for byte (compact names, folding and all).
2. ACK: To comes from the response (it carries the tag of the UAS that answered); CANCEL: To
   comes from the request (§9.1: "identical ... including tags").
3. Max-Forwards is the request's own line (what we sent), or 70 when it had none (§8.1.1.6).
4. Both carry exactly one Via, the request's top one, and ``Content-Length: 0``: neither
   has a use for a body (a hop-by-hop ACK acknowledges a failure; a CANCEL has no body, §9.1).
"""

from __future__ import annotations

from ingress.sip.errors import BadRequest
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message

CRLF = b"\r\n"
_COPIED = frozenset({"from", "call-id", "route", "max-forwards"})


def build_ack(request: bytes, response: Response) -> bytes:
    """The hop-by-hop ACK for a 300-699 final ``response`` to the INVITE ``request`` (§17.1.1.3).

    Raises:
        SipError: ``request`` does not parse (it is bytes we sent, so this is a bug upstream).
    """
    req = _parse_request(request)
    to = _line(response.raw, response.headers, "to")
    return _build(req, "ACK", to)


def build_cancel(request: bytes) -> bytes:
    """A CANCEL for ``request`` (§9.1).

    Raises:
        SipError: ``request`` does not parse.
    """
    req = _parse_request(request)
    return _build(req, "CANCEL", _line(req.raw, req.headers, "to"))


def _parse_request(data: bytes) -> Request:
    msg = parse_message(data)
    if not isinstance(msg, Request):
        raise BadRequest("not a request")
    return msg


def _line(raw: bytes, headers: list[tuple[str, bytes, int, int]], name: str) -> bytes:
    for h in headers:
        if h[0] == name:
            return raw[h[2] : h[3]].rstrip(b"\r\n")
    raise BadRequest(f"no {name}")  # the parser guarantees From/To/Call-ID/CSeq


def _build(req: Request, method: str, to_line: bytes) -> bytes:
    uri = req.uri.raw.encode("utf-8", "surrogateescape")
    # no bytes + bytes here: compiled by mypyc 1.20 it leaks its left operand (mypyc#1192)
    out = [b"%s %s SIP/2.0" % (method.encode(), uri), b"Via: %s" % req.vias[0].raw]
    routes: list[bytes] = []
    from_ = call_id = b""
    max_fwd = b"Max-Forwards: 70"
    raw = req.raw
    for name, _, start, end in req.headers:
        if name not in _COPIED:
            continue
        line = raw[start:end].rstrip(b"\r\n")
        if name == "route":
            routes.append(line)
        elif name == "from":
            from_ = from_ or line
        elif name == "call-id":
            call_id = call_id or line
        else:
            max_fwd = line
    out.extend(routes)
    out.extend((max_fwd, from_, to_line, call_id, b"CSeq: %d %s" % (req.cseq, method.encode())))
    out.extend((b"Content-Length: 0", b"", b""))  # the blank line ends the headers
    return CRLF.join(out)
