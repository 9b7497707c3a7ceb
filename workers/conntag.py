"""The ``sl-c`` Via parameter: the ingress and connection a request came in on, authenticated.

A response to a TCP request must go back on the connection the request came on (RFC 3261
§18.2.2), and a stateless worker keeps nothing to find it by: our Via carries it, as
``sl-c=<ingress>~<conn>~<mac>``. The response brings our Via back, and everything in a
response is written by a peer: a bare ``<ingress>~<conn>`` let anyone make a worker open a
socket per made-up ingress id (until it ran out of descriptors) or write into another
client's connection.

Rules:
1. The mac is HMAC-SHA256 over ``<ingress>~<conn>`` under the node key (``conf/nodekey.py``),
   cut to ``MAC_BYTES`` bytes: 80 bits, the least RFC 2104 §5 advises, and a forger gets one
   guess per packet. Only the node's own workers can name a connection; a tag moved to another
   connection or ingress, cut short, or made by another node fails.
2. ``verify`` answers ``(ingress, conn)`` or None and never raises, whatever the text.
3. Every request on one connection carries the same tag, so minted tags are kept (at most
   ``CACHE_SIZE``; the cache is emptied when full) and a forward costs a dict lookup.
4. A valid tag is not enough to write into a connection: the worker sends only through an
   ingress it knows (``workers/bus.py``), and the ingress uses the connection only if its
   peer is the response's destination (``ingress/tcp.py`` rule 4).
"""

from __future__ import annotations

import hashlib
import hmac

MAC_BYTES = 10
CACHE_SIZE = 4096
SEP = "~"


class ConnTags:
    """Mints and checks ``sl-c`` values under one node key (rules 1-3)."""

    __slots__ = ("_cache", "_key")

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._cache: dict[tuple[str, int], str] = {}

    def _mac(self, ingress: str, conn: int) -> str:
        text = f"{ingress}{SEP}{conn}".encode("utf-8", "surrogateescape")
        return hmac.digest(self._key, text, hashlib.sha256)[:MAC_BYTES].hex()

    def mint(self, ingress: str, conn: int) -> str:
        """The tag naming connection ``conn`` of ``ingress`` (rule 3)."""
        key = (ingress, conn)
        tag = self._cache.get(key)
        if tag is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            tag = self._cache[key] = f"{ingress}{SEP}{conn}{SEP}{self._mac(ingress, conn)}"
        return tag

    def verify(self, tag: str) -> tuple[str, int] | None:
        """``(ingress, conn)`` when ``tag`` is one of ours, else None (rule 2)."""
        named, sep, mac = tag.rpartition(SEP)
        ingress, sep2, conn_text = named.rpartition(SEP)
        if not (sep and sep2 and ingress and mac.isascii() and len(mac) == 2 * MAC_BYTES
                and conn_text.isascii() and conn_text.isdigit() and len(conn_text) <= 20):  # fmt: skip
            return None
        conn = int(conn_text)
        if str(conn) != conn_text:  # "007": another spelling of a connection we tagged
            return None
        if not hmac.compare_digest(mac, self._mac(ingress, conn)):
            return None
        return ingress, conn
