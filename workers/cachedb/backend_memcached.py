"""``memcached://host:port``: memcached over its text protocol, with our own small pool.

Why not aiomcache (aio-libs): its pool puts a connection back after a cancelled command
(``acquire`` catches ``Exception``, not ``CancelledError``), so a call cut by a timeout leaves
an unread reply that the next call on that connection reads as its own (aiomcache issue #91
asks for timeouts; still open). Timeouts are the first thing we need, so we speak the
protocol ourselves (``mcproto.py``, ~100 lines) and keep the pool rules below.

Rules:
1. At most ``max_connections`` connections, each carrying one command at a time; a call waits
   for one inside its deadline.
2. A connection goes back to the pool only after a complete, expected reply. Any error,
   cancellation or timeout closes it, so no reply is ever read by the wrong call.
3. ``SERVER_ERROR``/``CLIENT_ERROR`` leave the connection in step (it goes back); a
   non-numeric incr/decr is ``CacheValueError``.
4. Connecting happens on demand: a server that comes back is simply reconnected to by the
   next call. A refused connection is ``CacheUnavailable``.
5. ``incr`` of a missing key is ``incr``, then ``add`` of ``by`` with the TTL, then ``incr``
   again if another client added it first (interface.py rule 3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from workers.cachedb import mcproto
from workers.cachedb.errors import CacheError, CacheUnavailable, CacheValueError
from workers.cachedb.guard import DEFAULT_SLOW_MS, DEFAULT_TIMEOUT_S, Guarded

T = TypeVar("T")
DEFAULT_MAX_CONNECTIONS = 8
#: a reply line (``VALUE <250-byte key> 0 <size>``) is far shorter; refuse longer ones
MAX_LINE_BYTES = 1024


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def line(self) -> bytes:
        line = await self.reader.readuntil(b"\r\n")
        if len(line) > MAX_LINE_BYTES:
            raise mcproto.ProtocolError("reply line too long")
        return line

    def close(self) -> None:
        self.writer.close()


class MemcachedCacheDB(Guarded):
    backend = "memcached"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        slow_ms: float = DEFAULT_SLOW_MS,
    ) -> None:
        super().__init__(timeout_s=timeout_s, slow_ms=slow_ms)
        self.host, self.port = host, port
        self._idle: list[_Conn] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False

    async def _with_conn(self, fn: Callable[[_Conn], Awaitable[T]]) -> T:
        async with self._slots:
            if self._closed:
                raise CacheUnavailable("client closed")
            conn = self._idle_conn() or await self._connect()
            ok = False
            try:
                result = await fn(conn)
                ok = True
            except mcproto.ServerError:
                ok = True  # the server answered in full: the connection is still in step
                raise
            finally:
                if ok and not self._closed:
                    self._idle.append(conn)
                else:
                    conn.close()
            return result

    def _idle_conn(self) -> _Conn | None:
        # a server that restarted closed our idle connections: the loop has seen their EOF
        while self._idle:
            conn = self._idle.pop()
            if not (conn.reader.at_eof() or conn.writer.is_closing()):
                return conn
            conn.close()
        return None

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise CacheUnavailable(f"memcached {self.host}:{self.port}: {exc}") from exc
        return _Conn(reader, writer)

    async def _roundtrip(self, conn: _Conn, command: bytes) -> bytes:
        conn.writer.write(command)
        await conn.writer.drain()
        return await conn.line()

    async def _get(self, key: str) -> bytes | None:
        async def op(conn: _Conn) -> bytes | None:
            size = mcproto.value_header(await self._roundtrip(conn, mcproto.get(key)))
            if size is None:
                return None
            data = await conn.reader.readexactly(size + 2)
            if mcproto.value_header(await conn.line()) is not None or data[-2:] != b"\r\n":
                raise mcproto.ProtocolError("get: no END after the value")
            return data[:-2]

        return await self._with_conn(op)

    async def _store(self, verb: bytes, key: str, value: bytes, ttl_s: float | None) -> bool:
        command = mcproto.storage(verb, key, value, mcproto.exptime(ttl_s, time.time()))

        async def op(conn: _Conn) -> bool:
            return mcproto.stored(await self._roundtrip(conn, command))

        return await self._with_conn(op)

    async def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        if not await self._store(b"set", key, value, ttl_s):
            raise CacheError(f"memcached set {key!r}: NOT_STORED")

    async def _add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        return await self._store(b"add", key, value, ttl_s)

    async def _delta(self, verb: bytes, key: str, by: int) -> int | None:
        async def op(conn: _Conn) -> int | None:
            return mcproto.number(await self._roundtrip(conn, mcproto.delta(verb, key, by)))

        return await self._with_conn(op)

    async def _incr(self, key: str, by: int, ttl_s: float | None) -> int:
        for _ in range(3):  # a race with another client's add or an expiry: try again
            n = await self._delta(b"incr", key, by)
            if n is not None:
                return n
            if await self._store(b"add", key, b"%d" % by, ttl_s):
                return by
        raise CacheError(f"memcached incr {key!r}: lost three races in a row")

    async def _decr(self, key: str, by: int) -> int:
        n = await self._delta(b"decr", key, by)
        return 0 if n is None else n

    async def _delete(self, key: str) -> bool:
        async def op(conn: _Conn) -> bool:
            return mcproto.deleted(await self._roundtrip(conn, mcproto.delete(key)))

        return await self._with_conn(op)

    async def _close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        for conn in idle:
            try:
                await conn.writer.wait_closed()
            except OSError:
                pass

    def _translate(self, exc: Exception) -> CacheError | None:
        if isinstance(exc, mcproto.ServerError):
            if exc.non_numeric:
                return CacheValueError(f"memcached: {exc}")
            return CacheError(f"memcached: {exc}")
        if isinstance(exc, OSError | asyncio.IncompleteReadError | asyncio.LimitOverrunError):
            return CacheUnavailable(f"memcached {self.host}:{self.port}: {exc!r}")
        return None
