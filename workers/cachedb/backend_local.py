"""``local://``: the node's embedded store, reached over ZeroMQ (DEALER -> the stateplane's
ROUTER at ``ipc://<run_dir>/stateplane-kv.ipc``).

Rules:
1. One DEALER per client; every request carries an 8-byte request id and the reply is matched
   to its future by it (circus ``client.py``). A reply whose id nobody waits for any more (its
   call timed out) is dropped and counted.
2. In flight: at most ``max_in_flight`` requests; a call waits for a slot inside its deadline.
3. Requests made in one loop iteration leave in one ZeroMQ message (``stateplane/kv.py``
   rule 5), at most ``MAX_BATCH`` requests or about ``MAX_BATCH_BYTES`` each.
4. The socket is ``IMMEDIATE``: with no stateplane connected a send fails at once instead of
   queueing for a server that may never come. Unsent requests then wait in the outbox and
   the send is retried (1 ms, doubling to 20 ms: the pipe takes a few ms to attach after a
   start or restart); a request still unsent at 80 % of its call's deadline fails with
   ``CacheUnavailable``, one sent but not answered in time with ``CacheTimeout``. ZeroMQ
   reconnects by itself (every ``RECONNECT_MS``) when the stateplane returns.
5. The FD is registered with the loop (no zmq.asyncio) and drained with NOBLOCK; it is
   edge-triggered, so after every send we drain once more.
"""

from __future__ import annotations

import asyncio
import itertools
import struct

import zmq

from conf.guard import GUARD
from stateplane import kv
from workers.cachedb.errors import CacheError, CacheFull, CacheUnavailable, CacheValueError
from workers.cachedb.guard import DEFAULT_SLOW_MS, DEFAULT_TIMEOUT_S, Guarded

RECONNECT_MS = 50
DEFAULT_MAX_IN_FLIGHT = 1024
MAX_BATCH = 256
MAX_BATCH_BYTES = 1 << 20
#: a reply frame holds one value (at most ``MAX_VALUE_BYTES``) or a small header
MAX_REPLY_FRAME_BYTES = 2 << 20
_RID = struct.Struct("!Q")

Reply = tuple[str, int | None, bytes]


class LocalCacheDB(Guarded):
    backend = "local"

    def __init__(
        self,
        endpoint: str,
        *,
        ctx: zmq.Context[zmq.Socket[bytes]] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        slow_ms: float = DEFAULT_SLOW_MS,
    ) -> None:
        super().__init__(timeout_s=timeout_s, slow_ms=slow_ms)
        self.endpoint = endpoint
        self.late_replies = 0
        self._own_ctx = ctx is None
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context() if ctx is None else ctx
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.immediate = True
        sock.reconnect_ivl = RECONNECT_MS
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_FRAME_BYTES)
        sock.sndhwm = sock.rcvhwm = max_in_flight
        sock.connect(endpoint)
        self._sock = sock
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[Reply]] = {}
        self._outbox: list[tuple[float, bytes, list[bytes]]] = []  # (give up at, rid, frames)
        self._flushing: asyncio.Handle | None = None
        self._pause = 0.001
        self._slots = asyncio.Semaphore(max_in_flight)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _call(self, op: str, key: str, ttl_s: float | None = None, by: int = 0,
                    value: bytes = b"") -> Reply:  # fmt: skip
        loop = self._attach()
        async with self._slots:
            rid = _RID.pack(next(self._ids))
            frames = kv.pack_request(rid, kv.Request(op, key, ttl_s, by, value))
            fut: asyncio.Future[Reply] = loop.create_future()
            self._pending[rid] = fut
            self._outbox.append((loop.time() + 0.8 * self.timeout_s, rid, frames))
            if self._flushing is None:
                self._flushing = loop.call_soon(self._flush)
            try:
                status, number, data = await fut
            finally:
                self._pending.pop(rid, None)
        if status == "full":
            raise CacheFull(f"local store refused {op} {key!r}: full")
        if status == "bad_value":
            raise CacheValueError(f"local {op} {key!r}: value is not a counter")
        if status == "bad_request":
            raise CacheError(f"local {op}: the stateplane could not decode the request")
        return status, number, data

    def _flush(self) -> None:
        """Send the outbox in batches; on ``zmq.Again`` keep the rest and retry (rule 4)."""
        loop = self._loop
        assert loop is not None
        self._flushing = None
        now = loop.time()
        live = []
        for entry in self._outbox:
            fut = self._pending.get(entry[1])
            if fut is None or fut.done():  # its call is over (timed out, cancelled)
                continue
            if entry[0] <= now:
                fut.set_exception(CacheUnavailable(f"no stateplane at {self.endpoint}"))
                continue
            live.append(entry)
        self._outbox = []
        start = 0
        while start < len(live):
            end, size, batch = start, 0, []
            while end < len(live) and end - start < MAX_BATCH and size < MAX_BATCH_BYTES:
                batch += live[end][2]
                size += len(live[end][2][2])
                end += 1
            try:
                self._sock.send_multipart(batch, zmq.NOBLOCK)
            except zmq.Again:  # no stateplane connected (yet): rule 4
                self._outbox = live[start:]
                self._flushing = loop.call_later(self._pause, self._flush)
                self._pause = min(self._pause * 2, 0.02)
                return
            except zmq.ZMQError as exc:
                for _, rid, _ in live[start:]:
                    fut = self._pending.get(rid)
                    if fut is not None and not fut.done():
                        fut.set_exception(CacheUnavailable(f"local: {exc}"))
                return
            start = end
        self._pause = 0.001
        self._drain()  # the FD is edge-triggered: sending may have consumed the edge

    def _attach(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            if self._sock.closed:
                raise CacheUnavailable("client closed")
            self._loop = asyncio.get_running_loop()
            GUARD.add_reader(self._loop, self._sock.FD, "cachedb_local", self._drain)
        return self._loop

    def _drain(self) -> None:
        sock = self._sock
        while not sock.closed:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for i in range(0, len(frames) - 2, 3):
                try:
                    rid, status, number, value = kv.unpack_reply(frames[i : i + 3])
                except kv.WireError:
                    self.late_replies += 1
                    continue
                fut = self._pending.get(rid)
                if fut is None or fut.done():
                    self.late_replies += 1
                else:
                    fut.set_result((status, number, value))

    async def _get(self, key: str) -> bytes | None:
        status, _, value = await self._call("get", key)
        return value if status == "ok" else None

    async def _set(self, key: str, value: bytes, ttl_s: float | None) -> None:
        await self._call("set", key, ttl_s, value=value)

    async def _add(self, key: str, value: bytes, ttl_s: float | None) -> bool:
        status, _, _ = await self._call("add", key, ttl_s, value=value)
        return status == "ok"

    async def _incr(self, key: str, by: int, ttl_s: float | None) -> int:
        return _number(await self._call("incr", key, ttl_s, by))

    async def _decr(self, key: str, by: int) -> int:
        return _number(await self._call("decr", key, by=by))

    async def _delete(self, key: str) -> bool:
        status, _, _ = await self._call("delete", key)
        return status == "ok"

    async def _close(self) -> None:
        if self._flushing is not None:
            self._flushing.cancel()
        if self._loop is not None and not self._sock.closed:
            self._loop.remove_reader(self._sock.FD)
        for fut in self._pending.values():
            fut.cancel()
        self._sock.close(linger=0)
        if self._own_ctx:
            self._ctx.term()

    def _translate(self, exc: Exception) -> CacheError | None:
        if isinstance(exc, zmq.ZMQError):
            return CacheUnavailable(f"local: {exc}")
        return None


def _number(reply: tuple[str, int | None, bytes]) -> int:
    if not isinstance(reply[1], int):
        raise CacheError("local: a counter reply without a number")
    return reply[1]
