"""Which workers are alive, and which one owns a Call-ID (or a timer key). Sans-IO: time is
an argument. Ingresses use it for Call-IDs; the timer service for fire owners and its clients
for timer shards, so all three agree on one hash.

Rules:
1. A worker is live from its first heartbeat until it says ``down`` or misses ``liveness``
   heartbeats in a row.
2. A Call-ID belongs to the live worker with the highest rendezvous score
   ``fmix32(crc32(call_id) ^ seed(worker))`` (MurmurHash3's finaliser: crc32 alone is affine
   in its seed, which would split three workers 50/25/25). Every ingress computes the same owner from the same live
   set with no coordination, and a worker joining or leaving moves only the calls it takes or
   gives up (Thaler & Ravishankar's highest-random-weight hashing). Python's ``hash`` is salted
   per process, so it cannot be used here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(slots=True)
class WorkerInfo:
    ident: str
    endpoint: str
    seed: int
    last_seen: float


class WorkerSet:
    __slots__ = ("_ring", "_timeout", "_workers")

    def __init__(self, heartbeat_s: float, liveness: int) -> None:
        self._workers: dict[str, WorkerInfo] = {}
        self._ring: tuple[tuple[int, str], ...] = ()
        self._timeout = heartbeat_s * liveness

    @classmethod
    def fixed(cls, endpoints: dict[str, str]) -> WorkerSet:
        """These workers (``{ident: endpoint}``, as ``sockets.live_endpoints`` finds them), for
        owner lookups without heartbeats: nothing in it ever expires."""
        ws = cls(1.0, 1)
        for ident, ep in endpoints.items():
            ws.heartbeat(ident, ep, True, 0.0)
        return ws

    def __len__(self) -> int:
        return len(self._workers)

    def __contains__(self, ident: str) -> bool:
        return ident in self._workers

    @property
    def idents(self) -> list[str]:
        return sorted(self._workers)

    def heartbeat(self, ident: str, endpoint: str, up: bool, now: float) -> str | None:
        """Record a heartbeat; returns ``"joined"`` or ``"left"`` when the set changed."""
        w = self._workers.get(ident)
        if not up:
            if w is None:
                return None
            del self._workers[ident]
            self._rebuild()
            return "left"
        if w is not None:
            w.last_seen = now
            return None
        seed = zlib.crc32(ident.encode())
        self._workers[ident] = WorkerInfo(ident, endpoint, seed, now)
        self._rebuild()
        return "joined"

    def expire(self, now: float) -> list[WorkerInfo]:
        """Drop workers whose heartbeats stopped; returns them."""
        dead = [w for w in self._workers.values() if now - w.last_seen > self._timeout]
        for w in dead:
            del self._workers[w.ident]
        if dead:
            self._rebuild()
        return dead

    def owner(self, call_id: bytes) -> str | None:
        """The live worker that owns ``call_id``, or None when there is none."""
        ring = self._ring
        if len(ring) == 1:
            return ring[0][1]
        best = None
        best_score = -1
        base = zlib.crc32(call_id)
        for seed, ident in ring:
            x = base ^ seed
            x = ((x ^ (x >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
            x = ((x ^ (x >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
            x ^= x >> 16
            if x > best_score:
                best, best_score = ident, x
        return best

    def endpoint(self, ident: str) -> str:
        return self._workers[ident].endpoint

    def _rebuild(self) -> None:
        self._ring = tuple((w.seed, w.ident) for w in self._workers.values())
