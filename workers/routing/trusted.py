"""The ``[[trusted]]`` address table (OpenSIPS/Kamailio ``permissions``): which sources may
name their own next hop, and the tags routes match them by.

Rules:
1. A source is (address, transport, port) as the ingress saw it; an entry matches when the
   address is in its CIDR and its transport and port, when set, are equal.
2. ``tags`` answers None for an untrusted source, else the tags of every entry it matches
   ("" for an entry without one), so ``trusted = true`` and ``trusted = "tag"`` are one set
   lookup.
3. Answers are memoised per source in a bounded table that starts over when full: sources
   are the peer's choice, so the memo must not grow with them.
"""

from __future__ import annotations

import ipaddress

from conf.settings import Trusted

#: sources memoised at most (rule 3): the trunks and peers of a node, with room for churn
MEMO_MAX = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedSources:
    __slots__ = ("_entries", "_memo")

    def __init__(self, entries: list[Trusted]) -> None:
        self._entries: list[tuple[Network, str, int, str]] = [
            (ipaddress.ip_network(e.cidr, strict=False), e.transport, e.port, e.tag)
            for e in entries
        ]
        self._memo: dict[tuple[str, str, int], frozenset[str] | None] = {}

    def tags(self, ip: str, transport: str, port: int) -> frozenset[str] | None:
        """The tags of the entries ``(ip, transport, port)`` matches, or None (rule 2)."""
        if not self._entries:
            return None
        key = (ip, transport, port)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._match(ip, transport, port)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _match(self, ip: str, transport: str, port: int) -> frozenset[str] | None:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        tags = {tag for net, tr, p, tag in self._entries
                if addr in net and tr in ("", transport) and p in (0, port)}  # fmt: skip
        return frozenset(tags) if tags else None
