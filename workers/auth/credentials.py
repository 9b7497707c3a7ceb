"""The cacheDB key space of a realm's HA1 values (``[[auth_realm]] cachedb_url``).

Rule: the HA1 of (realm, algorithm, user) is the value of
``<prefix><realm>:<algorithm>:<username>`` as ASCII hex. A username that cannot be part of a
key (whitespace, control characters, too long) has no HA1. The file store is
``conf/credfile.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conf.credfile import HEX_LEN
from workers.cachedb.errors import CacheKeyError
from workers.cachedb.interface import check_key

_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class CacheKeys:
    """The cacheDB key space of one realm (rule 3)."""

    prefix: str
    realm: str

    def key(self, algorithm: str, username: str) -> str | None:
        key = f"{self.prefix}{self.realm}:{algorithm}:{username}"
        try:
            check_key(key)
        except CacheKeyError:
            return None
        return key


def ha1_from_value(value: bytes | None, algorithm: str) -> str | None:
    """The HA1 a cacheDB value holds, or None when it is missing or not an HA1."""
    if value is None:
        return None
    try:
        text = value.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if len(text) != HEX_LEN[algorithm] or not _HEX.fullmatch(text):
        return None
    return text.lower()
