"""What every backend does around each call: check arguments, bound the time, log slow
calls, and turn foreign errors into the ``CacheError`` tree.

Rules:
1. A backend subclasses ``Guarded`` and implements the ``_get`` … ``_delete`` coroutines with
   arguments already checked; it never sees a call without a deadline.
2. The deadline is ``timeout_s`` for the whole call (waiting for a connection or an in-flight
   slot included); only a backend's one-time start may pass a longer one to ``_run``
   (backend_redis_cluster.py rule 5). Expiry raises ``CacheTimeout``; the backend must then leave its connection
   in a sane state (a half-read reply is never reused: close it).
3. A call slower than ``slow_ms`` logs one ``cachedb_slow`` event (backend, op, ms), failed or
   not, as docs/design.md §3 "Protection" asks. Failures themselves
   are not logged here: the caller answers 500/503 and logs its one event.
4. ``_translate(exc)`` maps the backend's own exceptions; anything it returns None for becomes
   a plain ``CacheError``, so nothing foreign escapes.
5. ``close()`` is final: a call made after it raises ``CacheUnavailable`` with no I/O, and it
   lets the calls in flight end (each within its own deadline, so the wait is bounded by the
   latest of them) before the backend's ``_close``. redis-py reconnects a closed client on
   demand: without this, a call racing a close (a REGISTER in flight at worker shutdown)
   opened a connection nobody closed, and uvloop's ``close()`` waits forever on an open handle
   when its "unclosed resource" warning is raised as an error (pytest ``filterwarnings``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from workers.cachedb.errors import CacheError, CacheTimeout, CacheUnavailable
from workers.cachedb.interface import check_by, check_key, check_ttl, check_value

log = structlog.get_logger()

T = TypeVar("T")

#: a cache call sits in the path of a SIP request whose T1 is 500 ms: give up well before
DEFAULT_TIMEOUT_S = 0.25
#: a healthy loopback round trip is well under 1 ms; 20 ms means trouble worth a log line
DEFAULT_SLOW_MS = 20.0


class Guarded:
    """Base of the backends: the public ``CacheDB`` methods, guarded."""

    backend = "?"

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, slow_ms: float = DEFAULT_SLOW_MS):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, found {timeout_s}")
        self.timeout_s = timeout_s
        self.slow_ms = slow_ms
        self._closed = False
        self._inflight = 0
        self._drained = asyncio.Event()  # set while no call is in flight (rule 5)
        self._drained.set()
        self._drain_by = 0.0  # loop time by which every call in flight has met its deadline

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        return await self._run("get", self._get, key)

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        check_key(key)
        check_value(value)
        check_ttl(ttl_s)
        await self._run("set", self._set, key, bytes(value), ttl_s)

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        check_key(key)
        check_value(value)
        check_ttl(ttl_s)
        return await self._run("add", self._add, key, bytes(value), ttl_s)

    async def incr(self, key: str, by: int = 1, ttl_s: float | None = None) -> int:
        check_key(key)
        check_by(by)
        check_ttl(ttl_s)
        return await self._run("incr", self._incr, key, by, ttl_s)

    async def decr(self, key: str, by: int = 1) -> int:
        check_key(key)
        check_by(by)
        return await self._run("decr", self._decr, key, by)

    async def delete(self, key: str) -> bool:
        check_key(key)
        return await self._run("delete", self._delete, key)

    async def close(self) -> None:
        """Refuse new calls, let those in flight end, then release the backend (rule 5)."""
        if self._closed:
            return
        self._closed = True
        if self._inflight:
            left_s = self._drain_by - asyncio.get_running_loop().time()
            # each call ends by its own deadline: the margin covers a loaded loop's lag
            try:
                await asyncio.wait_for(self._drained.wait(), max(left_s, 0.0) + self.timeout_s)
            except TimeoutError:
                log.warning("cachedb_close_busy", backend=self.backend, calls=self._inflight)
        await self._close()

    async def _run(
        self, op: str, fn: Callable[..., Awaitable[T]], *args: Any, timeout_s: float | None = None
    ) -> T:
        """``fn(*args)`` guarded, within ``timeout_s`` (the client's own by default)."""
        timeout_s = timeout_s or self.timeout_s
        if self._closed:
            raise CacheUnavailable(f"{self.backend} {op}: client closed")
        self._drain_by = max(self._drain_by, asyncio.get_running_loop().time() + timeout_s)
        self._inflight += 1
        self._drained.clear()
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_s):
                return await fn(*args)
        except CacheError:
            raise
        except TimeoutError as exc:
            raise CacheTimeout(f"{self.backend} {op}: no answer in {timeout_s} s") from exc
        except Exception as exc:
            mapped = self._translate(exc) or CacheError(f"{self.backend} {op}: {exc!r}")
            raise mapped from exc
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._drained.set()
            ms = (time.perf_counter() - start) * 1000
            if ms > self.slow_ms:
                log.warning("cachedb_slow", backend=self.backend, op=op, ms=round(ms, 1))

    def _translate(self, exc: Exception) -> CacheError | None:
        """The ``CacheError`` a backend exception means; None for a plain ``CacheError``."""
        return None

    async def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    async def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        raise NotImplementedError

    async def _add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        raise NotImplementedError

    async def _incr(self, key: str, by: int, ttl_s: float | None) -> int:
        raise NotImplementedError

    async def _decr(self, key: str, by: int) -> int:
        raise NotImplementedError

    async def _delete(self, key: str) -> bool:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError
