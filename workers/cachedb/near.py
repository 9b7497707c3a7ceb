"""A per-process near cache in front of a shared cacheDB, for reads that may be stale.

Rules:
1. ``get`` answers from a ``cachetools.TTLCache`` (``ttl_s``, ``maxsize``) when it can, else
   asks the backend and remembers the answer, a miss included (``cache_misses``): a value
   another process writes may be seen up to ``ttl_s`` late. Use it only where that is fine
   (DNS-like lookups, configuration, routing data), never for counters or locks.
2. Writes (``set``, ``add``, ``incr``, ``decr``, ``delete``) go through to the backend and drop
   the key here, whether they succeed or fail (a failed write leaves the backend unknown).
3. A read that overlapped a write of this process is not remembered, so a stale answer can
   never land after the drop of rule 2.
4. The TTL clock is ``timer`` (default ``time.monotonic``): tests pass their own. cachetools
   is not thread-safe; one event loop owns a near cache.
5. Backend errors pass through unchanged (they are already ``CacheError``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

from workers.cachedb.interface import CacheDB

_ABSENT = object()


class NearCache:
    """``CacheDB`` in front of ``backend``; see the module rules."""

    def __init__(
        self,
        backend: CacheDB,
        ttl_s: float,
        maxsize: int,
        *,
        timer: Callable[[], float] = time.monotonic,
        cache_misses: bool = True,
    ) -> None:
        self.backend = backend
        self.cache_misses = cache_misses
        self._cache: TTLCache[str, bytes | None] = TTLCache(maxsize, ttl_s, timer=timer)
        self._writes = 0
        self.hits = 0
        self.misses = 0

    async def get(self, key: str) -> bytes | None:
        found = self._cache.get(key, _ABSENT)
        if found is not _ABSENT:
            self.hits += 1
            return found  # type: ignore[return-value]
        self.misses += 1
        writes = self._writes
        value = await self.backend.get(key)
        if writes == self._writes and (value is not None or self.cache_misses):
            self._cache[key] = value
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._wrote(key)
        try:
            await self.backend.set(key, value, ttl_s)
        finally:
            self._wrote(key)

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        self._wrote(key)
        try:
            return await self.backend.add(key, value, ttl_s)
        finally:
            self._wrote(key)

    async def incr(self, key: str, by: int = 1, ttl_s: float | None = None) -> int:
        self._wrote(key)
        try:
            return await self.backend.incr(key, by, ttl_s)
        finally:
            self._wrote(key)

    async def decr(self, key: str, by: int = 1) -> int:
        self._wrote(key)
        try:
            return await self.backend.decr(key, by)
        finally:
            self._wrote(key)

    async def delete(self, key: str) -> bool:
        self._wrote(key)
        try:
            return await self.backend.delete(key)
        finally:
            self._wrote(key)

    async def close(self) -> None:
        self._cache.clear()
        await self.backend.close()

    def _wrote(self, key: str) -> None:
        self._writes += 1
        self._cache.pop(key, None)
