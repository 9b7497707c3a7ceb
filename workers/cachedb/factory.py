"""``open_cachedb(url)``: a backend chosen by URL.

- ``local://`` — the node's embedded store in the stateplane process, found in ``run_dir``
  (``local:///path/to/run_dir`` names the directory in the URL instead).
- ``redis://[:password@]host:port/db`` — a Redis server (redis-py URL syntax, ``rediss://`` too).
- ``redis-cluster://[:password@]host:port[,host:port...]/`` — a Redis Cluster, by its seed
  nodes (conf/cluster_url.py).
- ``memcached://host:port`` — a memcached server (port 11211 if omitted).

Opening does no I/O: connections are made by the first call, and a server that is down then
makes calls fail with ``CacheUnavailable`` until it is back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from stateplane import kv
from workers.cachedb.backend_local import LocalCacheDB
from workers.cachedb.backend_memcached import MemcachedCacheDB
from workers.cachedb.backend_redis import RedisCacheDB
from workers.cachedb.backend_redis_cluster import RedisClusterCacheDB
from workers.cachedb.guard import DEFAULT_SLOW_MS, DEFAULT_TIMEOUT_S
from workers.cachedb.interface import CacheDB

SCHEMES = ("local", "redis", "rediss", "redis-cluster", "memcached")


def open_cachedb(
    url: str,
    *,
    run_dir: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    slow_ms: float = DEFAULT_SLOW_MS,
    **options: Any,
) -> CacheDB:
    """The backend ``url`` names.

    Args:
        url: see the module docstring.
        run_dir: the node's run directory, for ``local://``.
        timeout_s: bound on each call, waiting included.
        slow_ms: calls slower than this log ``cachedb_slow``.
        options: backend specific: ``max_in_flight`` and ``ctx`` (local), ``max_connections``
            (redis, redis-cluster, memcached).

    Raises:
        ValueError: an unknown scheme, ``local://`` without a run directory, or a
            ``redis-cluster://`` URL that is not a seed list.
    """
    parts = urlsplit(url)
    if parts.scheme == "local":
        where = parts.path or run_dir
        if not where:
            raise ValueError("local:// needs the node's run_dir (or local:///run/dir)")
        return LocalCacheDB(kv.endpoint(where), timeout_s=timeout_s, slow_ms=slow_ms, **options)
    if parts.scheme in ("redis", "rediss"):
        return RedisCacheDB(url, timeout_s=timeout_s, slow_ms=slow_ms, **options)
    if parts.scheme == "redis-cluster":
        return RedisClusterCacheDB(url, timeout_s=timeout_s, slow_ms=slow_ms, **options)
    if parts.scheme == "memcached":
        if not parts.hostname:
            raise ValueError(f"memcached URL needs a host: {url!r}")
        return MemcachedCacheDB(
            parts.hostname, parts.port or 11211, timeout_s=timeout_s, slow_ms=slow_ms, **options
        )
    raise ValueError(f"cacheDB URL scheme must be one of {', '.join(SCHEMES)}: {url!r}")
