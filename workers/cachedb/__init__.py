"""cacheDB: one async key-value interface over the node's embedded store, Redis and memcached.

``open_cachedb(url)`` picks the backend (``factory.py``); ``NearCache`` fronts one with a
per-process TTL cache (``near.py``). The rules every backend keeps are in ``interface.py``;
what calls raise is in ``errors.py``; the operator's view is ``docs/cachedb.md``.
"""

from workers.cachedb.errors import (
    CacheError,
    CacheFull,
    CacheKeyError,
    CacheTimeout,
    CacheUnavailable,
    CacheValueError,
)
from workers.cachedb.factory import open_cachedb
from workers.cachedb.interface import MAX_KEY_BYTES, MAX_VALUE_BYTES, CacheDB
from workers.cachedb.near import NearCache

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_VALUE_BYTES",
    "CacheDB",
    "CacheError",
    "CacheFull",
    "CacheKeyError",
    "CacheTimeout",
    "CacheUnavailable",
    "CacheValueError",
    "NearCache",
    "open_cachedb",
]
