"""``redis-cluster://host:port[,host:port...]/``: a Redis Cluster through redis-py's asyncio
cluster client (``redis.asyncio.cluster.RedisCluster``).

Rules:
1. The URL names seed nodes (conf/cluster_url.py); the client reads the slot map from the
   first that answers and sends each call straight to the master owning its key's slot.
   A ``MOVED``/``ASK`` (resharding, failover) is followed by redis-py and the map refreshed:
   the command was not applied where it was refused, so following it never applies it twice.
2. Every call is one key (backend_redis.py ``RedisOps``), so no call can be cross-slot and keys
   need no hash tags. What the registrar keeps together (a record and its lock key) is never
   read or written in one command.
3. No retries after a connection error or a timeout (``Retry(NoBackoff(), 0)``), as on one
   server: a retried ``incr`` could count twice. The failed node is marked, the next call
   refreshes the slot map, so a failed-over master is found by the call after the failure.
4. redis-py keeps a pool per node that raises (not waits) when full; a semaphore of
   ``max_connections`` commands in flight per client makes a call wait inside its deadline
   instead, and bounds each node's pool to that many connections.
5. Opening does no I/O. The first call reads the slot map and redis-py's command table
   (``COMMAND``: ~11,000 RESP items parsed in Python, 0.13 s idle and over 0.5 s on a loaded
   box, more than a call's deadline). That start runs as one shared, shielded task: callers
   wait for it at most ``max(timeout_s, FIRST_CONNECT_S)``, and a caller giving up does not
   cancel it, so a slow start still finishes for the next call instead of being retried and
   cut short forever; redis-py's own read timeout is that long too, or it would cut the read
   short itself. Once per client; later topology refreshes reuse the command table.
6. A cluster that cannot be reached (or does not serve the key's slot) is
   ``CacheUnavailable``; a failed start is tried again by the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from conf import cluster_url
from workers.cachedb.backend_redis import DEFAULT_MAX_CONNECTIONS, RedisOps
from workers.cachedb.errors import CacheError, CacheUnavailable
from workers.cachedb.guard import DEFAULT_SLOW_MS, DEFAULT_TIMEOUT_S

T = TypeVar("T")

#: how long the first call of a client may wait for the cluster's slot map and command table
FIRST_CONNECT_S = 2.0


class RedisClusterCacheDB(RedisOps):
    backend = "redis-cluster"

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        slow_ms: float = DEFAULT_SLOW_MS,
    ) -> None:
        super().__init__(timeout_s=timeout_s, slow_ms=slow_ms)
        parsed = cluster_url.parse(url)
        self._gate = asyncio.Semaphore(max_connections)
        self._ready = False
        self._starting: asyncio.Task[Any] | None = None
        self._bind(
            RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
                username=parsed.username,
                password=parsed.password,
                # one read may be the command table (rule 5): the guard's deadline bounds a
                # call, and a cancelled command closes its connection (backend_redis.py rule 1)
                socket_timeout=max(self.timeout_s, FIRST_CONNECT_S),
                socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0),
                max_connections=max_connections,
            )
        )

    async def _run(
        self, op: str, fn: Callable[..., Awaitable[T]], *args: Any, timeout_s: float | None = None
    ) -> T:
        if not self._ready:
            await super()._run(op, self._start, timeout_s=max(self.timeout_s, FIRST_CONNECT_S))

        async def gated(*a: Any) -> T:
            async with self._gate:  # inside the guard's deadline: waiting counts
                return await fn(*a)

        return await super()._run(op, gated, *args, timeout_s=timeout_s)

    async def _start(self) -> None:
        old = self._starting
        if old is not None and old.done() and (old.cancelled() or old.exception() is not None):
            self._starting = None  # failed while no call waited: start again now
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._r.initialize())
            # its failure is read by a caller, or here when every caller has given up
            self._starting.add_done_callback(lambda t: t.cancelled() or t.exception())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        except asyncio.CancelledError:
            raise  # our deadline: the start goes on for the next caller
        except BaseException:
            if self._starting is starting:
                self._starting = None  # failed: the next call starts again
            raise
        self._ready = True

    async def _close(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        await super()._close()

    def _translate(self, exc: Exception) -> CacheError | None:
        # cluster-down, slot-not-served and try-again are states of the cluster, not of the
        # value: 503 like a server that is down (ClusterDownError is also a ResponseError)
        if isinstance(exc, rexc.ClusterError | rexc.TryAgainError | rexc.RedisClusterException):
            return CacheUnavailable(f"redis-cluster: {exc}")
        return super()._translate(exc)
