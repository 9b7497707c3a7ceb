"""The DNS answer cache: positive, negative and failure answers, each kept for its own TTL.

Rules of this module:

1. Keys are ``(name, rdtype)`` with ``name`` normalised (lower-case, no final dot).
2. Time is injected (``timer``, as cachetools ``TLRUCache(timer=...)``): nothing here reads
   a clock, so tests move time by hand. One event loop owns a cache (cachetools is not
   thread-safe).
3. Every entry carries its own time to live (``TLRUCache`` with a per-item ``ttu``):
   - positive answers: the record TTL (the minimum over a CNAME chain), clamped to
     ``[min_ttl_s, max_ttl_s]``;
   - negative answers (NXDOMAIN or NODATA, RFC 2308 §5): ``min(SOA TTL, SOA MINIMUM)`` from
     the authority section, capped at ``negative_ttl_s``, which is also the TTL when the
     reply carries no SOA; never below ``min_ttl_s``;
   - server failures (timeout, SERVFAIL; RFC 2308 §7.1 allows up to 5 minutes):
     ``failure_ttl_s``, 0 to never cache them. This keeps a dead DNS server from costing
     every request a full timeout.
4. Memory is bounded by ``maxsize`` entries; the least recently used entry goes first
   (expired entries are dropped on every insert).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from cachetools import TLRUCache

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """One cached answer: ``records`` (empty for a negative one), or a ``failure`` reason."""

    records: tuple[Hashable, ...]
    ttl_s: float
    failure: str | None = None

    @property
    def negative(self) -> bool:
        return not self.records and self.failure is None


class AnswerCache:
    """A bounded cache of DNS answers with per-entry TTLs (see the module rules)."""

    __slots__ = ("_cache", "failure_ttl_s", "max_ttl_s", "min_ttl_s", "negative_ttl_s")

    def __init__(
        self,
        maxsize: int,
        *,
        min_ttl_s: float,
        max_ttl_s: float,
        negative_ttl_s: float,
        failure_ttl_s: float,
        timer: Callable[[], float],
    ) -> None:
        if not 0 <= min_ttl_s <= max_ttl_s:
            raise ValueError("need 0 <= min_ttl_s <= max_ttl_s")
        self.min_ttl_s = min_ttl_s
        self.max_ttl_s = max_ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.failure_ttl_s = failure_ttl_s
        self._cache: TLRUCache[Key, Answer] = TLRUCache(maxsize, _ttu, timer=timer)

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, key: Key) -> Answer | None:
        """The live answer for ``key``, or None when absent or expired."""
        try:  # one lookup and one clock read; TLRUCache.get() does two of each
            return self._cache[key]
        except KeyError:
            return None

    def put_positive(self, key: Key, records: tuple[Hashable, ...], ttl_s: float) -> Answer:
        """Store records that came with TTL ``ttl_s`` (clamped to the configured bounds)."""
        ttl = min(max(ttl_s, self.min_ttl_s), self.max_ttl_s)
        return self._put(key, Answer(records, ttl))

    def put_negative(self, key: Key, soa_ttl_s: float | None) -> Answer:
        """Store "no such record"; ``soa_ttl_s`` is min(SOA TTL, MINIMUM), None without SOA."""
        ttl = self.negative_ttl_s if soa_ttl_s is None else min(soa_ttl_s, self.negative_ttl_s)
        return self._put(key, Answer((), max(ttl, self.min_ttl_s)))

    def put_failure(self, key: Key, reason: str) -> Answer:
        """Store a server failure for ``failure_ttl_s`` (not at all when that is 0)."""
        answer = Answer((), self.failure_ttl_s, reason)
        return self._put(key, answer) if self.failure_ttl_s > 0 else answer

    def _put(self, key: Key, answer: Answer) -> Answer:
        self._cache[key] = answer
        return answer


def _ttu(_key: Key, answer: Answer, now: float) -> float:
    return now + answer.ttl_s
