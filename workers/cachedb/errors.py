"""What a cacheDB call raises: one tree, so a caller catches ``CacheError`` and answers.

::

    CacheError             500  anything a cacheDB call could not do
    ├── CacheUnavailable   503  the server cannot be reached (refused, reset, no peer)
    ├── CacheTimeout       503  no answer within the call's timeout
    ├── CacheFull          503  the local store is at its bound and refuses new keys
    ├── CacheKeyError      500  a key breaks the key rule (also a ValueError)
    └── CacheValueError    500  value too large, bad TTL or ``by``, incr/decr of a value
                                that is not a counter (also a ValueError)

Rules:
1. Backends translate at the boundary (httpx ``map_httpcore_exceptions``): every redis, ZeroMQ,
   ``OSError`` or protocol error becomes one of these with ``raise ... from exc``; nothing else
   escapes a call (``asyncio.CancelledError`` of the caller's own task excepted).
2. ``status`` is the SIP status a request that needed the call should get (h2 ``error_code``):
   503 when trying again later may work, 500 when it will not.
"""

from __future__ import annotations


class CacheError(Exception):
    """A cacheDB call failed; ``status`` is the SIP answer it suggests."""

    status: int = 500


class CacheUnavailable(CacheError):
    """The server is down or unreachable; calls recover by themselves when it is back."""

    status = 503


class CacheTimeout(CacheError):
    """No answer within the call's timeout (the server may or may not have applied it)."""

    status = 503


class CacheFull(CacheError):
    """The embedded store is at ``max_keys``/``max_bytes`` and its policy is to refuse."""

    status = 503


class CacheKeyError(CacheError, ValueError):
    """The key is empty, longer than 250 UTF-8 bytes, or holds whitespace or a control
    character (memcached's rule, applied to every backend so all behave the same)."""


class CacheValueError(CacheError, ValueError):
    """The value, TTL or increment is out of range, or incr/decr met a non-counter."""
