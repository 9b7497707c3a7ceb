"""Read Digest credentials and write Digest challenges (RFC 7616 §3.3-3.4, RFC 3261 §25.1).

Rules:
1. Every byte is the peer's choice: a value is at most ``MAX_HEADER_BYTES`` long with at most
   ``MAX_PARAMS`` parameters, each name at most once, and anything that is not the grammar
   below raises ``CredentialsError`` (the gate answers 400). Nothing else is raised.
2. ``parse_credentials`` answers None for a scheme other than Digest (``Basic``, ``AKAv1-MD5``
   via ``algorithm``, a scheme of another proxy): those credentials are not ours to judge.
3. Values are kept as text decoded from UTF-8 (RFC 7616 §4: a username may be UTF-8); the
   hex fields (``response``, ``nc``) are checked for their form here so that the gate only
   deals with well-formed values.

Grammar (RFC 3261 §25.1, RFC 7616 §3.4)::

    credentials    = "Digest" LWS dig-resp *(COMMA dig-resp)
    dig-resp       = token EQUAL ( token / quoted-string )
    quoted-string  = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: a credentials header is ~300 bytes; 4 KiB leaves room for long URIs and usernames
MAX_HEADER_BYTES = 4096
#: RFC 7616 names 11 parameters; extensions may add a few
MAX_PARAMS = 24

_TOKEN = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+")
_LWS = b" \t\r\n"
_HEX = re.compile(r"[0-9a-fA-F]+")
#: one dig-resp and what separates it from the next, in one match (a byte loop cost ~30 µs
#: a header): LWS, token, "=", a quoted-string (qdtext: no CTL but HTAB, no '"' or '\\'; or
#: a quoted-pair: a backslash and any byte but CR/LF, §25.1) or a token, LWS, then a comma
#: or the end
_PARAM = re.compile(
    rb"[ \t\r\n]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t\r\n]*=[ \t\r\n]*"
    rb'(?:"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\r\n])*)"|([A-Za-z0-9\-.!%*_+`\'~]+))'
    rb"[ \t\r\n]*(?:,|\Z)"
)
_PAIR = re.compile(rb"\\(.)", re.DOTALL)

#: parameters whose value must be present for qop=auth (RFC 7616 §3.4)
REQUIRED = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")


class CredentialsError(Exception):
    """A Digest credentials header that does not follow the grammar (answered with 400)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """The parameters of one Digest credentials header, lower-case names, unquoted values."""

    params: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


def parse_credentials(value: bytes) -> Credentials | None:
    """The Digest parameters of a credentials header value, or None for another scheme.

    Raises:
        CredentialsError: the value is a malformed Digest header (rule 1).
    """
    if len(value) > MAX_HEADER_BYTES:
        raise CredentialsError(f"credentials of {len(value)} bytes")
    text = value.strip(_LWS)
    m = _TOKEN.match(text)
    if m is None:
        raise CredentialsError("no authentication scheme")
    if m.group().lower() != b"digest":
        return None
    pos = m.end()
    if pos == len(text) or text[pos] not in _LWS:
        raise CredentialsError("no parameters after the scheme")
    params: dict[str, str] = {}
    n = len(text)
    while pos < n:
        p = _PARAM.match(text, pos)
        if p is None:
            raise CredentialsError(f"malformed parameter at byte {pos}")
        name = p.group(1).decode("ascii").lower()
        raw = p.group(2)
        if raw is None:
            raw = p.group(3)
        elif b"\\" in raw:
            raw = _PAIR.sub(rb"\1", raw)
        if name in params:
            raise CredentialsError(f"parameter {name} given twice")
        if len(params) >= MAX_PARAMS:
            raise CredentialsError("too many parameters")
        try:
            params[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CredentialsError(f"parameter {name} is not UTF-8") from None
        pos = p.end()
        if pos == n and p.group(0).endswith(b","):
            raise CredentialsError("a comma with no parameter after it")
    return Credentials(params)


def check_form(creds: Credentials, hex_len: int) -> None:
    """The fields qop=auth needs are there and well formed (rule 3).

    Raises:
        CredentialsError: a field is missing or malformed.
    """
    for name in REQUIRED:
        if not creds.params.get(name):
            raise CredentialsError(f"no {name}")
    response = creds.params["response"]
    if len(response) != hex_len or not _HEX.fullmatch(response):
        raise CredentialsError(f"response is not {hex_len} hex digits")
    nc = creds.params["nc"]
    if len(nc) != 8 or not _HEX.fullmatch(nc) or int(nc, 16) == 0:
        raise CredentialsError("nc is not 8 hex digits above 0")


def quote(value: str) -> str:
    """A quoted-string holding ``value`` (RFC 3261 §25.1: escape ``"`` and ``\\``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_value(realm: str, nonce: str, algorithm: str, stale: bool) -> bytes:
    """A WWW-Authenticate / Proxy-Authenticate value offering qop=auth (RFC 7616 §3.3)."""
    parts = [f"Digest realm={quote(realm)}", f"nonce={quote(nonce)}", f"algorithm={algorithm}",
             'qop="auth"']  # fmt: skip
    if stale:
        parts.append("stale=true")
    return ", ".join(parts).encode("utf-8")
