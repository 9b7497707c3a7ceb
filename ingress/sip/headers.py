"""Header names and multi-value splitting (RFC 3261 §7.3).

Rules:
1. Names are case-insensitive; compact forms (§7.3.3 and later RFCs) mean their long form.
   ``canonical_name`` gives the lower-case long form, used everywhere as the key.
2. A header listed in ``MULTI_VALUE`` may carry several comma-separated values; commas inside
   quoted strings or angle brackets do not separate (§7.3.1). Other headers (Authorization,
   Date, ...) may contain commas that are not separators and are never split.
"""

from __future__ import annotations

import re

# RFC 3261 §7.3.3, RFC 3265 (o, u), RFC 3515 (r), RFC 3892 (b), RFC 4028 (x), RFC 3841 (a, j, d)
COMPACT: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

MULTI_VALUE = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "content-encoding",
        "allow-events",
        "path",
        "service-route",
    }
)

# Names seen on the wire are few; caching the decode+lower+compact lookup saves ~0.3 µs a header.
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 4096


def canonical_name(raw: bytes) -> str:
    """Lower-case long form of a header name as it appeared on the wire."""
    name = _NAME_CACHE.get(raw)
    if name is None:
        lower = raw.decode("latin-1").lower()
        name = COMPACT.get(lower, lower)
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[raw] = name
    return name


# field-name = token (§25.1); LWS may stand between the name and the colon (HCOLON)
_FIELD_NAME_RE = re.compile(rb"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*")
# validated raw names (trailing LWS included) -> canonical name; bounded like _NAME_CACHE
_FIELD_CACHE: dict[bytes, str] = {}


def field_name(raw: bytes) -> str | None:
    """Canonical name for the bytes before a header line's colon, or None if not a token.

    The cache holds only names that passed, so a hit costs one dict lookup.
    """
    name = _FIELD_CACHE.get(raw)
    if name is not None:
        return name
    m = _FIELD_NAME_RE.fullmatch(raw)
    if m is None:
        return None
    name = canonical_name(m.group(1))
    if len(_FIELD_CACHE) < _NAME_CACHE_MAX:
        _FIELD_CACHE[raw] = name
    return name


def split_commas(value: bytes) -> list[bytes]:
    """Split a multi-value header on commas outside quotes and angle brackets.

    Empty elements are kept (as ``b""``) so callers can reject ``a,,b`` where that matters.
    """
    if b"," not in value:
        return [value.strip()]
    if b'"' not in value and b"<" not in value:
        return [part.strip() for part in value.split(b",")]
    parts: list[bytes] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == 0x5C:  # backslash: quoted-pair, skip the next octet
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x3C:
            angle = True
        elif c == 0x3E:
            angle = False
        elif c == 0x2C and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts
