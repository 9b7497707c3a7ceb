"""RFC 3261 §25 grammar as regular expressions, and parsers for the header elements.

Each parser takes bytes or str and returns a view from ``message`` or raises ``BadRequest``.
They are liberal where RFC 4475 asks for it (LWS around ``/`` and ``:`` in Via, brackets on an
IPv6 ``received``, RFC 5118 §4.10's three-colon IPv6 reference) and strict where a wrong guess
would forward garbage.
"""

from __future__ import annotations

import re

from ingress.sip.errors import BadRequest
from ingress.sip.message import NameAddr, Params, Uri, Via

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
TOKEN_B_RE = re.compile(TOKEN.encode())

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive, §7.1)
VERSION_RE = re.compile(rb"SIP/(\d+)\.(\d+)", re.I)

# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase; a missing reason is tolerated.
STATUS_LINE_RE = re.compile(rb"(SIP/\d+\.\d+) ([1-6]\d\d)(?: (.*))?", re.I | re.S)

# CSeq = 1*DIGIT LWS Method; the number must fit 32 bits (§8.1.1.5)
CSEQ_RE = re.compile(rb"(\d{1,10})[ \t]+(" + TOKEN.encode() + rb")")
CSEQ_MAX = 2**32 - 1

DIGITS_RE = re.compile(rb"\d{1,10}")

# via-parm = sent-protocol LWS sent-by *( SEMI via-params ), with LWS allowed around "/"
VIA_RE = re.compile(
    rb"""
    SIP [ \t]* / [ \t]* 2\.0 [ \t]* / [ \t]* (""" + TOKEN.encode() + rb""")   # transport
    [ \t]+
    ( \[ [0-9A-Fa-f:.]+ \] | [A-Za-z0-9\-.]+ )                                 # host
    (?: [ \t]* : [ \t]* (\d{1,5}) )?                                           # port
    [ \t]* ( ; .* )? $                                                         # params
    """,
    re.X | re.S | re.I,
)

# hostport inside a SIP URI (§19.1.1); IPv6 references keep their brackets
HOSTPORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?$")

SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")


def parse_params(text: str, *, allow_empty: bool = False) -> Params:
    """``;name[=value]`` pairs; names are lower-cased, values kept (quotes included)."""
    params: Params = {}
    if not text:
        return params
    for piece in _split_semicolons(text):
        piece = piece.strip()
        if not piece:
            if allow_empty:
                continue
            raise BadRequest("empty parameter")
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not TOKEN_RE.fullmatch(name):
            raise BadRequest(f"bad parameter name {name!r}")
        params[name] = value.strip() if eq else None
    return params


def _split_semicolons(text: str) -> list[str]:
    parts = text.split(";")
    if parts[0].strip() == "":
        parts = parts[1:]
    elif parts[0]:
        raise BadRequest("parameters must start with ';'")
    if '"' not in text:
        return parts
    # rejoin pieces split inside a quoted string
    out: list[str] = []
    for p in parts:
        if out and out[-1].count('"') % 2:
            out[-1] += ";" + p
        else:
            out.append(p)
    return out


def parse_via(value: bytes) -> Via:
    """One via-parm. Raises BadRequest when it does not follow §20.42."""
    m = VIA_RE.match(value)
    if m is None:
        raise BadRequest("malformed Via")
    transport, host, port, params = m.groups()
    parsed = parse_params(params.decode("latin-1")) if params else {}
    return Via(
        raw=value,
        transport=transport.decode("ascii").upper(),
        host=host.decode("ascii"),
        port=_port(port),
        params=parsed,
    )


def _port(text: bytes | str | None) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise BadRequest("port out of range")
    return port


def parse_uri(text: str) -> Uri:
    """Parse a URI; SIP and SIPS URIs into their parts, others kept opaque."""
    scheme, colon, rest = text.partition(":")
    if not colon or not SCHEME_RE.fullmatch(scheme) or not rest:
        raise BadRequest(f"malformed URI {text[:64]!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return Uri(raw=text, scheme=scheme)
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, _, pw = userinfo.partition(":")
        password = pw or None
        if not user or any(c in user for c in " \t<>\""):
            raise BadRequest("malformed URI user")
    headers = None
    q = rest.find("?")
    if q >= 0:
        rest, headers = rest[:q], rest[q + 1 :]
    semi = rest.find(";")
    params: Params | None = None
    if semi >= 0:
        rest, ptext = rest[:semi], rest[semi:]
        params = parse_params(ptext)
    m = HOSTPORT_RE.match(rest)
    if m is None:
        raise BadRequest(f"malformed URI host {rest[:64]!r}")
    return Uri(
        raw=text,
        scheme=scheme,
        user=user,
        password=password,
        host=m.group(1),
        port=_port(m.group(2)),
        params=params,
        headers=headers,
    )


def parse_name_addr(value: bytes) -> NameAddr:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route ...)."""
    text = value.decode("utf-8", "surrogateescape").strip()
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = text[: end + 1]
        rest = text[end + 1 :].lstrip()
        if not rest.startswith("<"):
            raise BadRequest("display name without <uri>")
        text = rest
    lt = text.find("<")
    if lt >= 0:
        if lt > 0:
            display = text[:lt].strip()
            if not all(TOKEN_RE.fullmatch(w) for w in display.split()):
                raise BadRequest("malformed display name")
        gt = text.find(">", lt)
        if gt < 0:
            raise BadRequest("unterminated <")
        uri_text = text[lt + 1 : gt]
        ptext = text[gt + 1 :].strip()
    else:
        # addr-spec: ";" parameters after it are header parameters (§20.10)
        semi = text.find(";")
        uri_text, ptext = (text, "") if semi < 0 else (text[:semi].rstrip(), text[semi:])
        if any(c in uri_text for c in " \t,?"):
            raise BadRequest("addr-spec with reserved characters must be in <>")
    return NameAddr(
        raw=value, display=display, uri=parse_uri(uri_text.strip()), params=parse_params(ptext)
    )


def _closing_quote(text: str) -> int:
    i = 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        i += 1
    raise BadRequest("unbalanced quotes")
