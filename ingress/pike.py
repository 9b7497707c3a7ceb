"""Pike: per-source request density, sans-IO (OpenSIPS ``pike`` module semantics).

Rules:
1. A source sending more than ``density`` requests within one sampling window of
   ``unit_s`` seconds is blocked for ``latency_s`` seconds; while blocked, ``check`` says drop.
   A window opens at the first request of a source that has no open window (fixed windows
   anchored at a request, like OpenSIPS's per-node time slot): every such window is also a
   sliding window, so a source never sending more than ``density`` in any ``unit_s`` is never
   blocked, and a steady flood above it is blocked inside its first window. A burst that
   straddles two windows may pass up to 2 x ``density`` before the second one catches it.
2. What counts is the caller's business: the ingress counts every request (ACK, CANCEL and BYE
   included, as OpenSIPS does: a flood of ACKs costs as much as one of INVITEs, and a
   legitimate peer that needs more is whitelisted) and never a response.
3. Memory is bounded. ``_seen`` holds only sources whose window is open, ordered by window
   start (an entry moves to the end when its window reopens), so stale entries are at the
   front: ``expire`` and every insertion drop them from there in O(1) each. When
   ``max_sources`` sources have an open window, a new source evicts the one whose window
   opened first, forgetting its partial count. ``_blocked`` holds at most ``max_sources``
   blocks; past that the oldest block is lifted early (an ``unblocked`` event with reason
   ``evicted``). Blocks all last ``latency_s``, so insertion order is expiry order.
4. The hot path (``check`` for a source with an open window) is one dict lookup (two while
   some source is blocked), one increment and one comparison; nothing is allocated
   (~0.15 us, timeit). The whitelist is consulted only when a source goes over the density
   (once per window), so it costs nothing below it.
5. No I/O, no clock, no logging: time is an argument, and blocks and unblocks are queued in
   ``events`` for the caller to log (once each) and share with its siblings.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

#: OpenSIPS pike defaults: 30 requests per 2 s window, blocked for 120 s
DEFAULT_UNIT_S = 2.0
DEFAULT_DENSITY = 30
DEFAULT_LATENCY_S = 120.0
#: ~200 B per open window (dict slot, key string, a slotted _Window): 100 000 sources is
#: ~20 MB at worst
DEFAULT_MAX_SOURCES = 100_000


@dataclass(frozen=True, slots=True)
class PikeEvent:
    """A block or an unblock, for the caller to log and (when ``origin`` is local) share."""

    kind: Literal["blocked", "unblocked"]
    src: str
    #: requests seen in the window that tripped the block (blocked); dropped while blocked
    #: (unblocked)
    count: int
    #: monotonic time the block ends (blocked) or ended (unblocked)
    until: float
    #: "local": this process measured it; "peer": a sibling told us
    origin: Literal["local", "peer"] = "local"
    #: why an unblock happened: "expired" or "evicted" (the block table was full)
    reason: str = ""


class _Window:
    """One source's open sampling window."""

    __slots__ = ("count", "start", "white")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 1
        #: None until asked (rule 4), then whether the source is whitelisted
        self.white: bool | None = None


class _Block:
    __slots__ = ("dropped", "local", "until")

    def __init__(self, until: float, local: bool) -> None:
        self.until = until
        self.dropped = 0
        self.local = local


class Pike:
    """Per-source request density with blocks; see the module rules."""

    __slots__ = ("_blocked", "_nets", "_seen", "_white", "density", "events", "latency_s",
                 "max_sources", "unit_s")  # fmt: skip

    def __init__(self, *, unit_s: float = DEFAULT_UNIT_S, density: int = DEFAULT_DENSITY,
                 latency_s: float = DEFAULT_LATENCY_S, whitelist: tuple[str, ...] = (),
                 max_sources: int = DEFAULT_MAX_SOURCES) -> None:  # fmt: skip
        """Args:
            whitelist: addresses or CIDRs never blocked (``ValueError`` if one does not parse).
        """
        self.unit_s = unit_s
        self.density = density
        self.latency_s = latency_s
        self.max_sources = max_sources
        nets = [ipaddress.ip_network(w, strict=False) for w in whitelist]
        #: single addresses are a set lookup; only real networks need a containment test
        self._white = frozenset(str(n.network_address) for n in nets if n.num_addresses == 1)
        self._nets = tuple(n for n in nets if n.num_addresses > 1)
        self._seen: OrderedDict[str, _Window] = OrderedDict()
        self._blocked: dict[str, _Block] = {}
        self.events: list[PikeEvent] = []

    # -- hot path ------------------------------------------------------------------------------

    def check(self, src: str, now: float) -> bool:
        """Count one request from ``src`` at ``now``; False means drop it (``src`` is blocked).

        A block that starts here is queued in ``events``.
        """
        if self._blocked:
            b = self._blocked.get(src)
            if b is not None:
                if now < b.until:
                    b.dropped += 1
                    return False
                self._unblock(src, "expired")
        e = self._seen.get(src)
        if e is not None and now - e.start < self.unit_s:
            e.count += 1
            if e.count <= self.density:
                return True
            return self._over(src, e, now)
        return self._open(src, e, now)

    def _open(self, src: str, e: _Window | None, now: float) -> bool:
        """Open a new window for ``src`` (first request, or its last window has ended)."""
        seen = self._seen
        if e is not None:
            e.start, e.count = now, 1
            seen.move_to_end(src)  # keeps _seen ordered by window start (rule 3)
        else:
            self._drop_stale(now)
            if len(seen) >= self.max_sources:
                seen.popitem(last=False)  # the window opened longest ago (rule 3)
            seen[src] = _Window(now)
        return True  # density is at least 1 (conf.settings.Pike)

    def _over(self, src: str, e: _Window, now: float) -> bool:
        white = e.white
        if white is None:
            white = e.white = self.whitelisted(src)
        if white:
            return True
        self.block(src, now + self.latency_s, e.count, now)
        return False

    # -- blocks --------------------------------------------------------------------------------

    def block(self, src: str, until: float, count: int, now: float,
              origin: Literal["local", "peer"] = "local") -> bool:  # fmt: skip
        """Block ``src`` until ``until`` (a local trip, or a sibling's block applied here).

        Returns False, changing nothing, when ``src`` is whitelisted or already blocked at
        least as long.
        """
        if until <= now or (origin == "peer" and self.whitelisted(src)):
            return False
        blocked = self._blocked
        b = blocked.get(src)
        if b is not None:
            if b.until >= until:
                return False
            b.until = until
            blocked[src] = blocked.pop(src)  # to the end: the table stays in expiry order
            return True
        if len(blocked) >= self.max_sources:
            self._unblock(next(iter(blocked)), "evicted")
        blocked[src] = _Block(until, origin == "local")
        self._seen.pop(src, None)  # its count is spent: after the block it starts afresh
        self.events.append(PikeEvent("blocked", src, count, until, origin))
        return True

    def _unblock(self, src: str, reason: str) -> None:
        b = self._blocked.pop(src)
        self.events.append(PikeEvent("unblocked", src, b.dropped, b.until,
                                     "local" if b.local else "peer", reason))  # fmt: skip

    def expire(self, now: float) -> None:
        """Lift blocks that have ended (queued as ``unblocked`` events) and forget sources
        whose window has ended. Call it every heartbeat: a silent blocked source must still
        be unblocked (and logged) on time."""
        blocked = self._blocked
        # in expiry order (rule 3); a peer's block announced a few ms late may sit behind a
        # local one ending a few ms later, and is lifted with it (or by its next request)
        while blocked:
            src, b = next(iter(blocked.items()))
            if b.until > now:
                break
            self._unblock(src, "expired")
        self._drop_stale(now)

    def _drop_stale(self, now: float) -> None:
        seen, unit = self._seen, self.unit_s
        while seen:
            e = next(iter(seen.values()))
            if now - e.start < unit:
                return
            seen.popitem(last=False)

    # -- queries -------------------------------------------------------------------------------

    def whitelisted(self, src: str) -> bool:
        """``src`` is on the whitelist (an unparsable address never is)."""
        if src in self._white:
            return True
        if not self._nets:
            return False
        try:
            ip = ipaddress.ip_address(src)
        except ValueError:
            return False
        return any(ip in n for n in self._nets)

    def is_blocked(self, src: str, now: float) -> bool:
        b = self._blocked.get(src)
        return b is not None and now < b.until

    def blocked(self, now: float) -> list[dict[str, object]]:
        """Blocked sources for ``sipline ctl pike``: src, seconds left, dropped, origin."""
        return [{"src": src, "remaining_s": round(b.until - now, 1), "dropped": b.dropped,
                 "origin": "local" if b.local else "peer"}
                for src, b in self._blocked.items() if b.until > now]  # fmt: skip

    def local_blocks(self, now: float) -> list[tuple[str, float]]:
        """(src, until) of the live blocks this process measured, to re-announce to a sibling
        that just joined."""
        return [(s, b.until) for s, b in self._blocked.items() if b.local and b.until > now]

    def __len__(self) -> int:
        """Sources with an open window (what ``max_sources`` bounds)."""
        return len(self._seen)

    def take_events(self) -> list[PikeEvent]:
        events, self.events = self.events, []
        return events
