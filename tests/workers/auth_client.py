"""A Digest client for the auth tests, written from RFC 7616 §3.4 with hashlib directly
(not with workers.auth.digest), so the tests check the server against an independent client."""

from __future__ import annotations

import hashlib
import re

_PARAM = re.compile(r'([a-z]+)=(?:"([^"]*)"|([^,\s]+))')
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def challenge_params(line: bytes) -> dict[str, str]:
    """The parameters of one ``WWW-Authenticate: Digest ...`` line we sent."""
    _, _, value = line.decode().partition(":")
    value = value.strip()
    assert value.startswith("Digest ")
    return {m[0]: m[1] or m[2] for m in _PARAM.findall(value[7:])}


def h(algorithm: str, text: str) -> str:
    return HASHES[algorithm](text.encode()).hexdigest()


def credentials(ch: dict[str, str], *, user: str, password: str, method: str, uri: str,
                nc: int = 1, cnonce: str = "0a4f113b", realm: str | None = None) -> str:  # fmt: skip
    """The ``Digest ...`` credentials answering challenge ``ch`` (qop=auth)."""
    algorithm = ch.get("algorithm", "MD5")
    realm = realm if realm is not None else ch["realm"]
    ha1 = h(algorithm, f"{user}:{realm}:{password}")
    ha2 = h(algorithm, f"{method}:{uri}")
    ncs = f"{nc:08x}"
    resp = h(algorithm, f"{ha1}:{ch['nonce']}:{ncs}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{ch["nonce"]}", uri="{uri}", '
        f'response="{resp}", algorithm={algorithm}, cnonce="{cnonce}", qop=auth, nc={ncs}'
    )
