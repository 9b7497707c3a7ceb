"""The Digest computation (RFC 7616 §3.4.1-3.4.3, qop=auth; RFC 3261 §22.4).

Rules:
1. Only ``MD5`` and ``SHA-256`` (RFC 8760 adds SHA-256 to SIP); the ``-sess`` variants and
   ``qop=auth-int`` are not offered, so credentials that use them get a fresh challenge.
2. HA1 = H(username ":" realm ":" password) is what is stored; passwords never are.
3. Compare responses with ``hmac.compare_digest``, so timing does not tell how many leading
   characters of a guess were right.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from conf.credfile import HEX_LEN

__all__ = ["ALGORITHMS", "HEX_LEN", "canonical_algorithm", "ha1", "response", "same"]

Hash = Callable[[bytes], "hashlib._Hash"]

#: algorithm name as RFC 7616 §6.1 registers it -> hash constructor
ALGORITHMS: dict[str, Hash] = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def canonical_algorithm(name: str | None) -> str | None:
    """The registered spelling of ``name`` (case-insensitive, MD5 when absent, RFC 7616
    §3.3), or None when we do not support it."""
    if name is None:
        return "MD5"
    for known in ALGORITHMS:
        if known.lower() == name.lower():
            return known
    return None


def _h(algorithm: str, data: str) -> str:
    return ALGORITHMS[algorithm](data.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) in lower-case hex (RFC 7616 §3.4.2)."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def response(algorithm: str, ha1_hex: str, *, nonce: str, nc: str, cnonce: str, qop: str,
             method: str, uri: str) -> str:  # fmt: skip
    """The ``response`` a client holding ``ha1_hex`` sends for qop=auth (RFC 7616 §3.4.1)."""
    ha2 = _h(algorithm, f"{method}:{uri}")
    return _h(algorithm, f"{ha1_hex.lower()}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def same(expected_hex: str, given_hex: str) -> bool:
    """Constant-time equality of two hex strings, ignoring case (rule 3)."""
    return hmac.compare_digest(expected_hex.lower().encode(), given_hex.lower().encode())
