"""RFC 3261 §25 grammar as regular expressions, and parsers for the header elements.

Rules:
1. One compiled regex validates a whole element (a via-parm, a name-addr, a SIP URI) in one
   pass at C speed; Python code only picks the groups out. Parameters are validated by the
   regex and split into dicts lazily (``message.py``), because most are never read.
2. Each parser takes bytes or str and returns a view from ``message`` or raises ``BadRequest``.
   A view built from a validated element never raises later, when a lazy part is read.
3. Views are cached by the exact text they came from (bounded dicts, cleared when full): the
   Request-URI of a trunk, the From of a call and the Vias of a transaction repeat across
   messages, and a hit costs one dict lookup instead of a regex and an object. Views are
   therefore shared: never mutate one (nor its ``params`` dict).
4. Liberal where RFC 4475/5118 ask for it (LWS around ``/ : ; =`` in Via and header
   parameters, brackets on an IPv6 ``received``, RFC 5118 §4.10's three-colon IPv6 reference,
   no LWS between a display-name token and ``<``); strict where a wrong guess would make us
   forward garbage (spaces inside ``<>``, unquoted display names with commas, an IPv6 host
   without brackets, headers in a Request-URI).

The patterns are written as commented strings, the way ``h11/_abnf.py`` does, and compiled for
str (URIs, name-addrs) or bytes (Via, tokens).
"""

from __future__ import annotations

import re

from ingress.sip.errors import BadRequest
from ingress.sip.message import NameAddr, Params, Uri, Via, parse_params

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
TOKEN_B_RE = re.compile(TOKEN.encode())

# SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (case-insensitive, §7.1)
VERSION_RE = re.compile(rb"SIP/(\d+)\.(\d+)", re.IGNORECASE)

# Status-Code = 3DIGIT (100-699, §7.2)
STATUS_CODE_RE = re.compile(rb"[1-6]\d\d")

CSEQ_MAX = 2**32 - 1  # §8.1.1.5: the sequence number must fit 32 bits

# callid = word [ "@" word ]; word is printable ASCII without LWS (§25.1), taken liberally
CALL_ID_RE = re.compile(rb"[!-~]+")

# LWS inside one header value; folding was already collapsed to single SPs by the parser
_LWS = r"[ \t]*"

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE (§25.1); qdtext admits UTF-8
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'

# gen-value = token / host / quoted-string. Taken liberally as any printable ASCII but the
# separators and quotes (" , ; < = > and backslash): that admits an IPv6 ``received`` with or
# without brackets (RFC 5118 §4.5) and the "/" or "@" some UAs put in a branch or a tag, and
# still cannot be misread, since none of the characters that end a value can occur inside one.
_GEN_VALUE = r"(?:[\x21\x23-\x2b\x2d-\x3a\x3f-\x5b\x5d-\x7e]+|" + _QUOTED + ")"

# *( SEMI generic-param ) with LWS allowed around ";" and "=" (RFC 4475 3.1.1.1)
_PARAMS = r"(?:" + _LWS + ";" + _LWS + TOKEN + r"(?:" + _LWS + "=" + _LWS + _GEN_VALUE + r")?)*"

# host = hostname / IPv4address / IPv6reference. IPv6 references keep their brackets; the
# class is liberal about colons so RFC 5118 §4.10's "2001:db8:::192.0.2.1" passes. "_" is not
# in hostname but appears in real deployments.
_HOST = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._]+"
# port = 1*DIGIT, held to 1..65535 by the regex itself so that no later step can fail on it
_PORT = r"0*(?:6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}|[1-5]\d{4}|[1-9]\d{0,3})"

# via-parm = sent-protocol LWS sent-by *( SEMI via-params ) (§20.42), LWS allowed around "/"
VIA_RE = re.compile(
    (
        r"(?i:SIP)" + _LWS + "/" + _LWS + r"2\.0" + _LWS + "/" + _LWS
        + "(" + TOKEN + ")"                                  # 1 transport
        + r"[ \t]+"
        + "(" + _HOST + ")"                                  # 2 host
        + "(?:" + _LWS + ":" + _LWS + "(" + _PORT + "))?"             # 3 port
        + "(" + _PARAMS + ")"                                # 4 params, validated here
        + _LWS
    ).encode()
)  # fmt: skip

# -- URIs (§19.1.1, §25.1) -----------------------------------------------------------------
# user = 1*( unreserved / escaped / user-unreserved ), plus "#" which real dial strings carry
_USER = r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/#]+"
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD = r"[A-Za-z0-9\-_.!~*'()%&=+$,]*"
# paramchar = param-unreserved / unreserved / escaped
_PARAMCHAR = r"[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]"
# uri-parameters = *( ";" pname [ "=" pvalue ] )
_URI_PARAMS = r"(?:;" + _PARAMCHAR + r"+(?:=" + _PARAMCHAR + r"*)?)*"
# headers = "?" header *( "&" header ); hname/hvalue chars (hnv-unreserved / unreserved / escaped)
_URI_HEADERS = r"[A-Za-z0-9\-_.!~*'()%\[\]/?:+$&=]*"

# what follows "sip:" / "sips:"
_SIP_URI_BODY = (
    r"(?:(?P<user>" + _USER + r")(?::(?P<password>" + _PASSWORD + r"))?@)?"
    r"(?P<host>" + _HOST + r")"
    r"(?::(?P<port>" + _PORT + r"))?"
    r"(?P<params>" + _URI_PARAMS + r")"
    r"(?:\?(?P<headers>" + _URI_HEADERS + r"))?"
)
SIP_URI_BODY_RE = re.compile(_SIP_URI_BODY)
_SIP_URI_BODY_NC = re.sub(r"\(\?P<\w+>", "(?:", _SIP_URI_BODY)  # for embedding: no groups

_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
SCHEME_RE = re.compile(_SCHEME)
# absoluteURI of any other scheme, kept opaque: printable ASCII without SP, DQUOTE, < and >
_URIC = r"[!#-;=?-~]"
OPAQUE_RE = re.compile(_URIC + "+")
# the same, but without the ";", "," and "?" that an addr-spec outside <> cannot hold (§20.10)
_URIC_BARE = r"[\x21\x23-\x2b\x2d-\x3a\x3d\x40-\x7e]"

_SIP_SCHEME = r"(?i:sips?):"
_OTHER_SCHEME = r"(?!(?i:sips?):)" + _SCHEME + ":"
_URI_IN_BRACKETS = "(?:" + _SIP_SCHEME + _SIP_URI_BODY_NC + "|" + _OTHER_SCHEME + _URIC + "+)"
_SIP_URI_BARE = (
    r"(?:[A-Za-z0-9\-_.!~*'()%&=+$/#]+(?::[A-Za-z0-9\-_.!~*'()%&=+$]*)?@)?"
    r"(?:" + _HOST + r")(?::" + _PORT + r")?"
)  # a SIP URI without the ";", "?" and "," that would be read as header parameters
_URI_BARE = "(?:" + _SIP_SCHEME + _SIP_URI_BARE + "|" + _OTHER_SCHEME + _URIC_BARE + "+)"

# (name-addr / addr-spec) *( SEMI generic-param ), §20.10 (From, To, Contact, Route ...).
# display-name = *(token LWS) / quoted-string; LWS before "<" may be missing (RFC 4475
# 3.1.1.6). Nothing but the URI may stand between "<" and ">" (RFC 4475 3.1.2.14).
NAME_ADDR_RE = re.compile(
    _LWS
    + "(?:"
    + "(?:(?P<display>" + _QUOTED + "|" + TOKEN + r"(?:[ \t]+" + TOKEN + ")*)?"
    + _LWS + "<(?P<uri>" + _URI_IN_BRACKETS + ")>)"
    + "|(?P<bare>" + _URI_BARE + ")"
    + ")"
    + "(?P<params>" + _PARAMS + ")"
    + _LWS
)  # fmt: skip

#: entries per view cache; ~1 KB each at most, so a few MB per process in the worst case
CACHE_MAX = 2048
_URI_CACHE: dict[str, Uri] = {}
_VIA_CACHE: dict[bytes, Via] = {}
_NAME_ADDR_CACHE: dict[bytes, NameAddr] = {}


def parse_uri(text: str) -> Uri:
    """Parse a URI (cached; see the module rules).

    Raises:
        BadRequest: the text is not a URI, or a SIP URI that breaks §25.1.
    """
    uri = _URI_CACHE.get(text)
    if uri is None:
        uri = _parse_uri(text)
        if len(_URI_CACHE) >= CACHE_MAX:
            _URI_CACHE.clear()
        _URI_CACHE[text] = uri
    return uri


def _parse_uri(text: str) -> Uri:
    """Parse a URI; SIP and SIPS URIs into their parts (§19.1.1), others kept opaque.

    Raises:
        BadRequest: the text is not a URI, or a SIP URI that breaks §25.1.
    """
    scheme, colon, rest = text.partition(":")
    lower = scheme.lower()
    if lower == "sip" or lower == "sips":
        m = SIP_URI_BODY_RE.fullmatch(rest)
        if m is None:
            raise BadRequest(f"malformed SIP URI {text[:64]!r}")
        user, password, host, port, ptext, headers = m.groups()
        return Uri(
            text,
            lower,
            user,
            password,
            host,
            None if port is None else int(port),
            headers=headers,
            _ptext=ptext,
        )
    if not colon or not SCHEME_RE.fullmatch(scheme) or not OPAQUE_RE.fullmatch(rest):
        raise BadRequest(f"malformed URI {text[:64]!r}")
    return Uri(text, lower)


def parse_via(value: bytes) -> Via:
    """One via-parm (cached; see the module rules).

    Raises:
        BadRequest: it does not follow §20.42.
    """
    via = _VIA_CACHE.get(value)
    if via is None:
        via = _parse_via(value)
        if len(_VIA_CACHE) >= CACHE_MAX:
            _VIA_CACHE.clear()
        _VIA_CACHE[value] = via
    return via


def _parse_via(value: bytes) -> Via:
    """One via-parm (§20.42).

    Raises:
        BadRequest: it does not follow §20.42.
    """
    m = VIA_RE.fullmatch(value)
    if m is None:
        raise BadRequest("malformed Via")
    transport, host, port, ptext = m.groups()
    return Via(
        value,
        transport.decode("ascii").upper(),
        host.decode("ascii"),
        None if port is None else int(port),
        ptext.decode("utf-8", "surrogateescape"),
    )


def parse_name_addr(value: bytes) -> NameAddr:
    """name-addr or addr-spec with header parameters (cached; see the module rules).

    Raises:
        BadRequest: the value breaks §20.10 / §25.1.
    """
    na = _NAME_ADDR_CACHE.get(value)
    if na is None:
        na = _parse_name_addr(value)
        if len(_NAME_ADDR_CACHE) >= CACHE_MAX:
            _NAME_ADDR_CACHE.clear()
        _NAME_ADDR_CACHE[value] = na
    return na


def _parse_name_addr(value: bytes) -> NameAddr:
    """name-addr or addr-spec with header parameters (From, To, Contact, Route ...).

    Raises:
        BadRequest: the value breaks §20.10 / §25.1 (see the module rules for what is allowed).
    """
    text = value.decode("utf-8", "surrogateescape")
    m = NAME_ADDR_RE.fullmatch(text)
    if m is None:
        raise BadRequest("malformed name-addr")
    display, uri, bare, ptext = m.groups()
    if uri is None:
        uri = bare
    if display is not None:
        display = display.rstrip(" \t")
    return NameAddr(value, display, uri, ptext)


__all__ = [
    "CALL_ID_RE",
    "CSEQ_MAX",
    "NAME_ADDR_RE",
    "SIP_URI_BODY_RE",
    "STATUS_CODE_RE",
    "TOKEN_B_RE",
    "TOKEN_RE",
    "VERSION_RE",
    "VIA_RE",
    "Params",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
]
