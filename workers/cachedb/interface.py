"""The one async interface every cacheDB backend offers, and the rules all of them keep.

Rules (the contract ``tests/cachedb/test_contract.py`` runs against every backend):
1. Keys are ``str``: 1 to 250 UTF-8 bytes, no ASCII whitespace or control character
   (memcached's key rule, applied everywhere). Values are ``bytes`` of at most
   ``MAX_VALUE_BYTES`` (memcached's default 1 MiB item, less room for key and header).
   Both are checked before any I/O: ``CacheKeyError``/``CacheValueError``.
2. ``ttl_s`` is ``None`` (no expiry) or a positive number of seconds. A key is never gone
   before ``ttl_s``; memcached counts whole seconds, so there it may live up to ~2 s longer.
3. Counters are decimal ASCII integers from 0 to 2**63 - 1. ``incr`` of a missing key creates
   it with the value ``by`` and, only then, the TTL ``ttl_s``; ``incr`` of an existing key keeps
   its TTL. ``decr`` never goes below 0 (it stops at 0, as memcached does) and ``decr`` of a
   missing key returns 0 without creating it. ``by`` is a non-negative integer. incr/decr of a
   value that is not a counter raises ``CacheValueError``. Read a counter with ``incr(key, 0)``
   or ``int(await get(key))``: memcached may pad a decremented counter with trailing spaces.
4. Every call has a timeout and raises only the ``CacheError`` tree (``errors.py``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workers.cachedb.errors import CacheKeyError, CacheValueError

#: memcached's default item size is 1 MiB including key and item header (~60 bytes)
MAX_VALUE_BYTES = 1_000_000
#: memcached's limit (``KEY_MAX_LENGTH``)
MAX_KEY_BYTES = 250
#: counters are signed 64-bit in redis, unsigned in memcached: keep to what both hold
MAX_COUNTER = 2**63 - 1
_FORBIDDEN = frozenset(range(0x21)) | {0x7F}


@runtime_checkable
class CacheDB(Protocol):
    """A key-value store shared beyond this process (or a near cache in front of one)."""

    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or None when it is missing or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Store ``value`` under ``key`` (replacing any value and TTL)."""
        ...

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is missing; True when stored."""
        ...

    async def incr(self, key: str, by: int = 1, ttl_s: float | None = None) -> int:
        """Add ``by`` to the counter ``key`` (created as ``by`` with ``ttl_s`` if missing)."""
        ...

    async def decr(self, key: str, by: int = 1) -> int:
        """Subtract ``by`` from the counter ``key``, stopping at 0; 0 if missing."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        ...

    async def close(self) -> None:
        """Release connections; the object is unusable afterwards."""
        ...


def check_key(key: str) -> None:
    """Raises:
    CacheKeyError: ``key`` breaks rule 1.
    """
    if not isinstance(key, str):
        raise CacheKeyError(f"a key is a str, not {type(key).__name__}")
    raw = key.encode()
    if not 0 < len(raw) <= MAX_KEY_BYTES:
        raise CacheKeyError(f"a key is 1 to {MAX_KEY_BYTES} UTF-8 bytes, found {len(raw)}")
    if not _FORBIDDEN.isdisjoint(raw):
        raise CacheKeyError(f"a key has no whitespace or control characters: {key!r}")


def check_value(value: bytes) -> None:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise CacheValueError(f"a value is bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise CacheValueError(f"a value is at most {MAX_VALUE_BYTES} bytes, found {len(value)}")


def check_ttl(ttl_s: float | None) -> None:
    if ttl_s is not None and not (isinstance(ttl_s, int | float) and 0 < ttl_s < 10**9):
        raise CacheValueError(f"ttl_s is None or a positive number of seconds, found {ttl_s!r}")


def check_by(by: int) -> None:
    if not isinstance(by, int) or isinstance(by, bool) or not 0 <= by <= MAX_COUNTER:
        raise CacheValueError(f"by is an integer from 0 to 2**63-1, found {by!r}")
