"""SIP over TCP: accept, frame, reuse and open connections without ever blocking the loop.

Rules:
1. A connection costs what it buffers: the framer's buffer holds only bytes received, and no
   per-connection timer exists; one sweep per ``SWEEP_S`` closes idle connections and those
   whose current message missed its deadline (slow senders).
2. A message must complete within ``max_reads_per_message`` reads and
   ``message_deadline_ms``; a header section or body over its cap gets 513/413. Either way the
   stream cannot be resynchronised, so the connection is closed after the answer.
3. Writes never block: a connection whose write buffer passes ``write_queue_bytes`` refuses
   the send (the caller counts a drop). Outbound connects run as tasks; what is sent meanwhile
   waits in the same bounded queue and is dropped, logged, if the connect fails.
4. Connection ids are small integers local to this ingress; workers address a connection as
   (ingress id, connection id). Responses and requests to a peer with an open connection use
   it (RFC 3261 §18.2.2, §18.1.1).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import structlog

from conf.settings import Tcp
from ingress.sip.errors import SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer

log = structlog.get_logger()

SWEEP_S = 0.5

OnMessage = Callable[["TcpConnection", bytes], None]
OnError = Callable[["TcpConnection", SipError], None]


class TcpConnection(asyncio.Protocol):
    __slots__ = (
        "hub", "conn_id", "peer", "transport", "framer", "last_active", "msg_started",
        "outbound", "pending", "pending_bytes", "closed",
    )  # fmt: skip

    def __init__(self, hub: TcpHub, conn_id: int, outbound: bool) -> None:
        self.hub = hub
        self.conn_id = conn_id
        self.outbound = outbound
        self.peer: tuple[str, int] = ("", 0)
        self.transport: asyncio.Transport | None = None
        self.framer = StreamFramer(hub.cfg.max_header_bytes, hub.cfg.max_body_bytes)
        self.last_active = hub.loop.time()
        self.msg_started = 0.0  # when the first byte of the current message arrived
        #: sends queued while an outbound connect is in progress
        self.pending: list[bytes] | None = [] if outbound else None
        self.pending_bytes = 0
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        if not self.outbound and not self.hub.admit(self):
            transport.abort()
            return
        self.hub.attach(self)
        if self.pending:
            for data in self.pending:
                self.transport.write(data)  # type: ignore[union-attr]
        self.pending = None

    def data_received(self, data: bytes) -> None:
        now = self.hub.loop.time()
        self.last_active = now
        framer = self.framer
        if not framer.in_message:
            self.msg_started = now
        framer.receive_data(data)
        try:
            while True:
                item = framer.next_message()
                if item is NEED_DATA:
                    break
                if item is KEEPALIVE:
                    self.write(b"\r\n")  # RFC 5626 §3.5.1 pong
                    continue
                self.msg_started = now
                self.hub.on_message(self, item)  # type: ignore[arg-type]
        except SipError as exc:
            self.hub.on_error(self, exc)
            self.close("framing_error")
            return
        if framer.in_message and framer.reads > self.hub.cfg.max_reads_per_message:
            self.close("too_many_reads")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.hub.detach(self)

    # -- used by the hub -------------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when the connection is closed or its queue is full."""
        if self.closed:
            return False
        limit = self.hub.cfg.write_queue_bytes
        if self.pending is not None:  # still connecting
            if self.pending_bytes + len(data) > limit:
                return False
            self.pending.append(data)
            self.pending_bytes += len(data)
            return True
        t = self.transport
        if t is None or t.is_closing() or t.get_write_buffer_size() + len(data) > limit:
            return False
        t.write(data)
        self.last_active = self.hub.loop.time()
        return True

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("tcp_closed", conn=self.conn_id, peer=f"{self.peer[0]}:{self.peer[1]}",
                 reason=reason, buffered=self.framer.buffered)  # fmt: skip
        if self.transport is not None:
            self.transport.abort() if reason != "shutdown" else self.transport.close()
        self.hub.detach(self)


class TcpHub:
    """All TCP connections of one ingress process."""

    def __init__(self, cfg: Tcp, on_message: OnMessage, on_error: OnError) -> None:
        self.cfg = cfg
        self.on_message = on_message
        self.on_error = on_error
        self.loop = asyncio.get_running_loop()
        self.conns: dict[int, TcpConnection] = {}
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        self.per_ip: dict[str, int] = {}
        self._next_id = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def listen(self, address: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((address, port))
        sock.setblocking(False)
        server = await self.loop.create_server(
            lambda: TcpConnection(self, self._new_id(), outbound=False), sock=sock, backlog=1024
        )
        self._servers.append(server)

    def admit(self, conn: TcpConnection) -> bool:
        ip = conn.peer[0]
        if len(self.conns) >= self.cfg.max_connections:
            log.warning("tcp_refused", peer=ip, reason="max_connections")
            return False
        if self.per_ip.get(ip, 0) >= self.cfg.max_connections_per_ip:
            log.warning("tcp_refused", peer=ip, reason="max_connections_per_ip")
            return False
        return True

    def attach(self, conn: TcpConnection) -> None:
        self.conns[conn.conn_id] = conn
        self.by_peer[conn.peer] = conn
        if not conn.outbound:
            self.per_ip[conn.peer[0]] = self.per_ip.get(conn.peer[0], 0) + 1

    def detach(self, conn: TcpConnection) -> None:
        if self.conns.pop(conn.conn_id, None) is None:
            if self.by_peer.get(conn.peer) is conn:  # a connect that never completed
                del self.by_peer[conn.peer]
            return
        if self.by_peer.get(conn.peer) is conn:
            del self.by_peer[conn.peer]
        if not conn.outbound:
            left = self.per_ip[conn.peer[0]] - 1
            if left:
                self.per_ip[conn.peer[0]] = left
            else:
                del self.per_ip[conn.peer[0]]

    def send(self, ip: str, port: int, conn_id: int, data: bytes) -> bool:
        """Send on connection ``conn_id`` if open, else on any connection to ip:port, else
        on a new one. False when the message cannot be queued."""
        conn = self.conns.get(conn_id) if conn_id else None
        if conn is None:
            conn = self.by_peer.get((ip, port))
        if conn is None:
            conn = self._connect(ip, port)
        return conn.write(data)

    def _connect(self, ip: str, port: int) -> TcpConnection:
        conn = TcpConnection(self, self._new_id(), outbound=True)
        conn.peer = (ip, port)
        self.by_peer[conn.peer] = conn
        self.loop.create_task(self._open(conn))
        return conn

    async def _open(self, conn: TcpConnection) -> None:
        ip, port = conn.peer
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_ms / 1000):
                await self.loop.create_connection(lambda: conn, ip, port)
        except (OSError, TimeoutError) as exc:
            dropped = len(conn.pending or ())
            conn.closed = True
            conn.pending = None
            self.detach(conn)
            log.warning("tcp_connect_failed", peer=f"{ip}:{port}", error=str(exc) or "timeout",
                        dropped=dropped)  # fmt: skip

    def _sweep(self) -> None:
        now = self.loop.time()
        idle = self.cfg.idle_timeout_s
        deadline = self.cfg.message_deadline_ms / 1000
        for conn in list(self.conns.values()):
            if conn.framer.in_message and now - conn.msg_started > deadline:
                conn.close("message_deadline")
            elif now - conn.last_active > idle:
                conn.close("idle")
        self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def stats(self) -> dict[str, Any]:
        return {"tcp_conns": len(self.conns)}

    async def close(self) -> None:
        self._sweeper.cancel()
        for server in self._servers:
            server.close()
        for conn in list(self.conns.values()):
            conn.close("shutdown")
