"""``redis://host:port/db``: Redis through redis-py's asyncio client (``redis.asyncio``).

Rules:
1. redis-py pools connections (a blocking pool of ``max_connections``), reconnects on
   demand, and since 4.5.4/5.0.1 disconnects a connection whose command was cancelled
   (CVE-2023-28858/28859), so a timeout never leaves a reply for the next caller.
2. No retries inside redis-py: a retried ``incr`` could count twice. A broken pooled
   connection is noticed when it is taken from the pool and replaced; a failure in flight is
   one ``CacheUnavailable`` and the next call reconnects.
3. TTLs are sent in milliseconds (``PX``), rounded up. ``incr`` with a TTL and ``decr`` run as
   Lua scripts so the interface's counter rules hold atomically (interface.py rule 3).
"""

from __future__ import annotations

import math
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from workers.cachedb.errors import CacheError, CacheTimeout, CacheUnavailable, CacheValueError
from workers.cachedb.guard import DEFAULT_SLOW_MS, DEFAULT_TIMEOUT_S, Guarded

DEFAULT_MAX_CONNECTIONS = 16

#: create with the TTL only when missing, then add: one atomic step
_INCR_TTL = """
redis.call('SET', KEYS[1], '0', 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""
#: a missing key stays missing and answers 0; a counter stops at 0 and keeps its TTL
_DECR = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('DECRBY', KEYS[1], ARGV[1])
if n < 0 then
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
  return 0
end
return n
"""


class RedisOps(Guarded):
    """The operations, on any redis-py asyncio client (one server or a cluster): each is one
    single-key command or a one-key script, so a cluster routes every call by its key's slot
    and no call ever spans two slots."""

    def _bind(self, client: Any) -> None:
        self._r = client
        self._incr_ttl = client.register_script(_INCR_TTL)
        self._decr_script = client.register_script(_DECR)

    async def _get(self, key: str) -> bytes | None:
        value = await self._r.get(key)
        # decode_responses is off, so redis-py hands back bytes (its stubs also allow str)
        return value.encode() if isinstance(value, str) else value

    async def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        await self._r.set(key, value, px=_ms(ttl_s))

    async def _add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        return bool(await self._r.set(key, value, px=_ms(ttl_s), nx=True))

    async def _incr(self, key: str, by: int, ttl_s: float | None) -> int:
        ttl_ms = _ms(ttl_s)
        if ttl_ms is None:
            return int(await self._r.incrby(key, by))
        return int(await self._incr_ttl(keys=[key], args=[by, ttl_ms]))

    async def _decr(self, key: str, by: int) -> int:
        return int(await self._decr_script(keys=[key], args=[by]))

    async def _delete(self, key: str) -> bool:
        return bool(await self._r.delete(key))

    async def _close(self) -> None:
        try:
            await self._r.aclose()
        except (rexc.RedisError, OSError):  # closing a broken connection is still closing
            pass

    def _translate(self, exc: Exception) -> CacheError | None:
        if isinstance(exc, rexc.TimeoutError):
            return CacheTimeout(f"redis: {exc}")
        if isinstance(exc, rexc.ConnectionError | OSError):
            return CacheUnavailable(f"redis: {exc}")
        if isinstance(exc, rexc.ResponseError) and (
            "integer" in str(exc) or "overflow" in str(exc)
        ):
            return CacheValueError(f"redis: {exc}")
        return None


class RedisCacheDB(RedisOps):
    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        slow_ms: float = DEFAULT_SLOW_MS,
    ) -> None:
        super().__init__(timeout_s=timeout_s, slow_ms=slow_ms)
        # blocking pool: a call waits for a free connection (inside its deadline) instead of
        # failing with MaxConnectionsError, as the plain pool does when all are busy
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=max_connections,
            timeout=self.timeout_s,
        )
        self._bind(aioredis.Redis.from_pool(pool))  # the client owns the pool: aclose() closes it


def _ms(ttl_s: float | None) -> int | None:
    return None if ttl_s is None else max(1, math.ceil(ttl_s * 1000))
