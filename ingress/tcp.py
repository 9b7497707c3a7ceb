"""SIP over TCP: accept, frame, reuse and open connections without ever blocking the loop.

Rules:
1. A connection costs what it buffers: the framer (and its buffer) exists only while part of
   a message is buffered, and no per-connection timer or handle exists. One hub timer sweeps:
   the connections holding a partial message (``partial``) every ``_sweep_s`` for the message
   deadline, and all connections every ``_idle_sweep_s`` for the idle timeout.
2. A message must complete within ``max_reads_per_message`` reads and
   ``message_deadline_ms``; a header section or body over its cap gets the codec's status
   (513/413/400, answered by the ``on_error`` callback). The stream cannot be resynchronised,
   so the connection is closed after the answer (gracefully, so the answer is flushed).
3. Writes never block: a connection whose queue (bytes waiting for the connect, or the
   transport's write buffer) would pass ``write_queue_bytes`` refuses the send; the caller
   counts a drop. Outbound connects run as tasks under ``connect_timeout_ms``; what is sent
   meanwhile waits in the same bounded queue and is dropped, logged, if the connect fails.
4. Connection ids are small integers local to this ingress; workers address a connection as
   (ingress id, connection id). Responses and requests to a peer with an open (or opening)
   connection use it (RFC 3261 §18.2.2, §18.1.1): by connection id, else by peer address.
   The id comes from a packet (a Via parameter), so it is used only if the connection leads
   to the destination the worker gives: the same address, and for a connection we opened the
   same port too (an inbound one's port is ephemeral; a Via without ``rport`` names the peer's
   listening port). Otherwise the id is treated as unknown and counted
   (``tcp_conn_mismatch``).
5. Bookkeeping has one entry and one exit: ``attach`` (inbound after admission, outbound once
   connected) and ``detach`` (idempotent, called from every way a connection ends). ``per_ip``
   counts attached inbound connections only; ``by_peer`` never keeps a detached connection.
6. A peer opens and breaks connections at will, so what it causes is counted, not logged:
   each connection closed (``tcp_<reason>``) or refused (``tcp_refused_<limit>``) goes to the
   ``rejects`` tally (conf/rejects.py), which the ingress logs as one ``rejected`` line per
   source per interval; ``tcp_closed`` and ``tcp_refused`` are DEBUG events. What we cause is
   logged once: ``tcp_connect_failed``, ``tcp_connect_refused``, and one ``tcp_shutdown``
   instead of one line per connection.
7. TLS (``ingress/tls.py``) is this adapter with Python's ``ssl`` as the transport: an inbound
   TLS connection joins the hub (``_ready``) once its handshake is done, an outbound one once
   connected and verified; TLS and TCP connections are filed apart (``by_peer_tls``).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

import structlog

from conf import tlsfiles
from conf.rejects import RejectTally
from conf.settings import Tcp, Tls
from ingress import tls as tlsmod
from ingress.sip.errors import SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.tls import Handshakes, TlsClient, TlsClosed, TlsServer, TlsSession

log = structlog.get_logger()

#: the longest the sweep sleeps; it runs faster when the message deadline is short
SWEEP_S = 0.5
#: idle connections are looked for at most this often (a full pass over every connection)
IDLE_SWEEP_S = 5.0

OnMessage = Callable[["TcpConnection", bytes], None]
OnError = Callable[["TcpConnection", SipError], None]


class TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound or outbound: a thin adapter around ``StreamFramer``."""

    __slots__ = (
        "closed", "conn_id", "framer", "hub", "last_active", "local", "msg_started", "outbound",
        "peer", "pending", "pending_bytes", "server", "server_name", "session", "tls",
        "transport",
    )  # fmt: skip

    def __init__(
        self, hub: TcpHub, conn_id: int, outbound: bool, local: tuple[str, int] = ("", 0),
        tls: bool = False, server: TlsServer | None = None,
    ) -> None:  # fmt: skip
        self.hub = hub
        #: a TLS connection (rule 7): ``session`` is its TLS state once connected; ``server``
        #: the TLS listener of an inbound one (shared), for the client names it requires
        self.tls = tls
        self.server = server
        self.session: TlsSession | None = None
        #: the name an outbound TLS server must prove (its address when empty)
        self.server_name = ""
        self.conn_id = conn_id
        self.outbound = outbound
        #: the listener this connection belongs to (shared tuple; outbound ones count as the
        #: first listener's, the address our Via and Record-Route name)
        self.local = local
        self.peer: tuple[str, int] = ("", 0)
        self.transport: asyncio.Transport | None = None
        #: created on the first byte of a partial message, dropped when nothing is buffered:
        #: an idle connection holds no framer and no buffer
        self.framer: StreamFramer | None = None
        self.last_active = hub.loop.time()
        self.msg_started = 0.0  # when the first byte of the current message arrived
        #: sends queued while an outbound connect is in progress (None once connected)
        self.pending: list[bytes] | None = [] if outbound else None
        self.pending_bytes = 0
        self.closed = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport does not subclass asyncio.Transport; it has its methods
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        hub = self.hub
        if self.closed:  # the connect was given up (timeout, shutdown) as it completed
            transport.abort()
            return
        if not self.outbound:
            # an outbound connection keeps the address it was dialled by: that is the key
            # by_peer files it under, and the peer may report another spelling of it
            peer = transport.get_extra_info("peername")
            if not peer:  # reset before we saw it
                self.closed = True
                transport.abort()
                return
            # IPv4 peernames are already (ip, port): keep that tuple rather than a copy
            self.peer = peer if len(peer) == 2 else (peer[0], peer[1])
            if not hub.admit(self):
                self.closed = True
                transport.abort()
                return
        if self.tls:  # rule 7: joins once the handshake is done
            self._start_tls(transport)
            return
        self._ready()

    def _ready(self) -> None:
        """The connection can carry SIP: join the hub and send what waited for it."""
        self.last_active = self.hub.loop.time()
        self.hub.attach(self)
        pending = self.pending
        self.pending = None
        self.pending_bytes = 0
        for data in pending or ():
            self._send(data)

    def _start_tls(self, transport: asyncio.Transport) -> None:
        """ingress/tls.py rules 1 and 3: a handshake slot, then the first flight."""
        hub = self.hub
        if self.outbound:
            assert hub.tls_client is not None  # _connect opens none without it
            self.session = TlsSession(hub.tls_client.ctx, False, self.server_name or self.peer[0])
        else:
            refused = hub.handshakes.refusal(self.peer[0])
            if refused is not None or self.server is None:
                name, limit = refused or ("max_handshakes", 0)
                hub._refuse(self.peer[0], name, limit, "tls_refused_")
                self.closed = True
                transport.abort()
                return
            self.session = TlsSession(self.server.ctx, True)
        self.msg_started = hub.loop.time()  # the handshake's deadline runs from here
        hub.handshakes.begin(self)
        self._tls_step(b"")

    def _tls_step(self, data: bytes) -> bytes:
        """Feed ``data`` to the TLS session, write what it answers, end the handshake when
        it completes; the plaintext (b"" when the connection ended)."""
        session = self.session
        assert session is not None and self.transport is not None
        was_done = session.done
        plain = b""
        try:
            if data:
                plain = session.receive_data(data)
            else:  # the client's first flight (a server waits for the client's)
                session.handshake()
        except TlsClosed:
            self.close("shutdown")
            return b""
        except (ssl.SSLError, ValueError) as exc:  # rule 2: this connection only
            self._tls_failed(exc, was_done)
            return b""
        out = session.data_to_send()
        if out:
            self.transport.write(out)
        if session.done and not was_done:
            self.hub.handshakes.end(self)
            server = self.server
            if server is not None and not tlsfiles.names_allowed(session.peercert,
                                                                 server.client_names):  # fmt: skip
                self.close("tls_client_name")
                return b""
            self._ready()
        return plain

    def _tls_failed(self, exc: BaseException, was_done: bool) -> None:
        if self.outbound and self.pending is not None:
            self._fail_connect(tlsmod.describe(exc))
        else:
            self.close("tls_error" if was_done else "tls_handshake_failed",
                       error=tlsmod.describe(exc))  # fmt: skip

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        hub = self.hub
        if self.session is not None:
            data = self._tls_step(data)
            if not data or self.closed:
                return
        now = hub.loop.time()
        self.last_active = now
        framer = self.framer
        if framer is None:
            framer = self.framer = StreamFramer(hub.cfg.max_header_bytes, hub.cfg.max_body_bytes)
            self.msg_started = now
        framer.receive_data(data)
        try:
            while True:
                item = framer.next_message()
                if item is NEED_DATA:
                    break
                if item is KEEPALIVE:
                    self.write(b"\r\n")  # RFC 5626 §3.5.1 pong
                else:
                    hub.on_message(self, item)  # type: ignore[arg-type]
                if self.closed:
                    return
                self.msg_started = now  # what is left began in this read
        except SipError as exc:
            hub.on_error(self, exc)
            self.close("framing_error", status=exc.status, detail=exc.detail)
            return
        if not framer.in_message:
            self.framer = None
            hub.partial.pop(self.conn_id, None)
            return
        if framer.reads > hub.cfg.max_reads_per_message:
            self.close("too_many_reads", reads=framer.reads)
            return
        hub.partial[self.conn_id] = self

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None and not self.session.done and not self.closed:
            if self.outbound:  # the server hung up on our handshake
                self._fail_connect("closed during the TLS handshake")
                return
            self.hub.rejects.add(self.peer[0], "tls_handshake_failed", "closed by the client")
        self.closed = True
        self.hub.detach(self)

    # -- used by the hub and the ingress ---------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False when the connection is closed or its queue would overflow."""
        if self.closed:
            return False
        limit = self.hub.cfg.write_queue_bytes
        pending = self.pending
        if pending is not None:  # still connecting
            if self.pending_bytes + len(data) > limit:
                return False
            pending.append(data)
            self.pending_bytes += len(data)
            return True
        t = self.transport
        # uvloop writes straight to the socket when it can and buffers the rest in the
        # transport; its size is the queue (pause_writing is advisory and not needed here)
        if t is None or t.is_closing() or t.get_write_buffer_size() + len(data) > limit:
            return False
        self.last_active = self.hub.loop.time()
        return self._send(data)

    def _send(self, data: bytes) -> bool:
        t = self.transport
        assert t is not None
        session = self.session
        if session is None:
            t.write(data)
            return True
        try:
            session.encrypt(data)
        except (ssl.SSLError, ValueError) as exc:  # a session in error: this connection ends
            self.close("tls_error", error=tlsmod.describe(exc))
            return False
        t.write(session.data_to_send())
        return True

    def reaches(self, ip: str, port: int) -> bool:
        """Whether this connection leads to ip:port (rule 4)."""
        peer = self.peer
        return peer[0] == ip and (peer[1] == port or not self.outbound)

    def close(self, reason: str, **fields: Any) -> None:
        """Close for ``reason``; idempotent. Framing errors and shutdown flush what is queued
        (the error answer); slow senders and idle connections are aborted."""
        if self.closed:
            return
        self.closed = True
        if reason != "shutdown":
            framer = self.framer
            buffered = framer.buffered if framer else 0
            sample = " ".join([reason, *(f"{k}={v}" for k, v in fields.items())])
            key = reason if reason.startswith("tls_") else "tcp_" + reason
            self.hub.rejects.add(self.peer[0], key, sample)
            log.debug("tcp_closed", conn=self.conn_id, peer=f"{self.peer[0]}:{self.peer[1]}",
                      reason=reason, buffered=buffered, **fields)  # fmt: skip
        self.framer = None
        t = self.transport
        if t is not None:
            if reason in ("framing_error", "shutdown"):
                t.close()
            else:
                t.abort()
        self.hub.detach(self)

    def _fail_connect(self, error: str) -> None:
        """The outbound connect failed or timed out: drop what was queued for it."""
        if self.closed:
            return
        self.closed = True
        dropped = len(self.pending or ())
        self.pending = None
        self.pending_bytes = 0
        if self.transport is not None:
            self.transport.abort()
        self.hub.detach(self)
        log.warning("tcp_connect_failed", conn=self.conn_id, tls=self.tls,
                    peer=f"{self.peer[0]}:{self.peer[1]}", error=error, dropped=dropped)  # fmt: skip


class TcpHub:
    """All TCP connections of one ingress process."""

    def __init__(
        self, cfg: Tcp, on_message: OnMessage, on_error: OnError, rejects: RejectTally | None = None,
        tls_cfg: Tls | None = None, tls_client: TlsClient | None = None,
    ) -> None:  # fmt: skip
        """``tls_client``: the context of TLS connections we open; None: no TLS sends."""
        self.cfg = cfg
        self.tls_cfg = tls_cfg or Tls()
        self.tls_client = tls_client
        #: inbound TLS handshakes in progress (ingress/tls.py rule 1)
        self.handshakes = Handshakes(self.tls_cfg)
        self.default_local: tuple[str, int] = ("", 0)
        self.on_message = on_message
        self.on_error = on_error
        self.loop = asyncio.get_running_loop()
        #: connections closed and refused, by source (rule 6); the ingress passes its own and
        #: logs it; a hub run alone (tests, tools) keeps one nobody logs
        self.rejects = rejects or RejectTally(10.0, self.loop.time())
        #: attached connections (inbound admitted, outbound connected)
        self.conns: dict[int, TcpConnection] = {}
        #: the connection to use for a peer address; may be one still connecting
        self.by_peer: dict[tuple[str, int], TcpConnection] = {}
        #: the same for TLS connections (rule 7)
        self.by_peer_tls: dict[tuple[str, int], TcpConnection] = {}
        #: attached inbound connections per source address
        self.per_ip: dict[str, int] = {}
        #: connections holding part of a message (the only ones the deadline applies to)
        self.partial: dict[int, TcpConnection] = {}
        self._connects: set[asyncio.Task[None]] = set()
        #: sends whose connection id named a connection to another peer (rule 4)
        self.mismatched = 0
        self._next_id = 0
        self._servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self._closing = False
        self._sweep_s = max(0.01, min(SWEEP_S, cfg.message_deadline_ms / 4000,
                                      self.tls_cfg.handshake_timeout_ms / 4000))  # fmt: skip
        self._idle_sweep_s = max(self._sweep_s, min(IDLE_SWEEP_S, cfg.idle_timeout_s / 4))
        self._next_idle_sweep = self.loop.time() + self._idle_sweep_s
        self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _book(self, conn: TcpConnection) -> dict[tuple[str, int], TcpConnection]:
        return self.by_peer_tls if conn.tls else self.by_peer

    async def listen(self, address: str, port: int, tls: TlsServer | None = None,
                     ) -> tuple[str, int]:  # fmt: skip
        """Listen on address:port (SO_REUSEPORT, shared with sibling ingress processes);
        returns the bound address (useful with port 0). ``tls``: a TLS listener."""
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))
            sock.setblocking(False)
            name = sock.getsockname()
            bound = (name[0], name[1])
            server = await self.loop.create_server(
                lambda: TcpConnection(self, self._new_id(), outbound=False, local=bound,
                                      tls=tls is not None, server=tls),
                sock=sock,
                backlog=1024,
            )
        except BaseException:
            sock.close()
            raise
        self._servers[(address, port)] = server
        if self.default_local == ("", 0):
            self.default_local = bound
        return bound

    def admit(self, conn: TcpConnection) -> bool:
        ip = conn.peer[0]
        if self._closing:
            return False
        busy = len(self.conns) + len(self._connects) + len(self.handshakes.running)
        if busy >= self.cfg.max_connections:
            return self._refuse(ip, "max_connections", self.cfg.max_connections)
        if self.per_ip.get(ip, 0) >= self.cfg.max_connections_per_ip:
            return self._refuse(ip, "max_connections_per_ip", self.cfg.max_connections_per_ip)
        return True

    def _refuse(self, ip: str, reason: str, limit: int, prefix: str = "tcp_refused_") -> bool:
        self.rejects.add(ip, prefix + reason, f"{reason} {limit}")
        log.debug("tcp_refused", peer=ip, reason=reason, limit=limit)
        return False

    def attach(self, conn: TcpConnection) -> None:
        self.conns[conn.conn_id] = conn
        self._book(conn)[conn.peer] = conn
        if not conn.outbound:
            self.per_ip[conn.peer[0]] = self.per_ip.get(conn.peer[0], 0) + 1

    def detach(self, conn: TcpConnection) -> None:
        """Forget ``conn``; safe to call any number of times, attached or not."""
        book = self._book(conn)
        if book.get(conn.peer) is conn:
            del book[conn.peer]
        self.partial.pop(conn.conn_id, None)
        if conn.session is not None:
            self.handshakes.end(conn)
        if self.conns.get(conn.conn_id) is not conn:
            return  # never attached (refused, connect failed) or already detached
        del self.conns[conn.conn_id]
        if not conn.outbound:
            ip = conn.peer[0]
            left = self.per_ip.get(ip, 0) - 1
            if left > 0:
                self.per_ip[ip] = left
            else:
                self.per_ip.pop(ip, None)

    def send(self, ip: str, port: int, conn_id: int, data: bytes, tls: bool = False,
             server_name: str = "") -> bool:  # fmt: skip
        """Send on connection ``conn_id`` if open and leading to ip:port (rule 4) over the
        transport asked for (rule 7), else on any such connection to ip:port, else on a new
        one. ``server_name``: a TLS server must prove this name (else its address), and a
        connection we opened for another name is not used. False when it cannot be queued."""
        conn = self.conns.get(conn_id) if conn_id else None
        if conn is not None and (conn.tls is not tls or not conn.reaches(ip, port)):
            self.mismatched += 1
            conn = None
        if conn is None or conn.closed:
            conn = (self.by_peer_tls if tls else self.by_peer).get((ip, port))
        if server_name and conn is not None and conn.outbound and conn.server_name != server_name:
            conn = None
        if conn is None or conn.closed:
            conn = self._connect(ip, port, tls, server_name)
            if conn is None:
                return False
        return conn.write(data)

    def _connect(self, ip: str, port: int, tls: bool = False, server_name: str = "",
                 ) -> TcpConnection | None:  # fmt: skip
        if self._closing:
            return None
        if tls and self.tls_client is None:
            return None  # no TLS listener, so no TLS context: the worker picked none either
        if len(self.conns) + len(self._connects) + len(self.handshakes.running) >= self.cfg.max_connections:
            log.warning("tcp_connect_refused", peer=f"{ip}:{port}", reason="max_connections",
                        limit=self.cfg.max_connections)  # fmt: skip
            return None
        conn = TcpConnection(self, self._new_id(), outbound=True, local=self.default_local, tls=tls)
        conn.peer = (ip, port)
        conn.server_name = server_name
        self._book(conn)[conn.peer] = conn
        task = self.loop.create_task(self._open(conn))
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)
        return conn

    async def _open(self, conn: TcpConnection) -> None:
        ip, port = conn.peer
        try:
            async with asyncio.timeout(self.cfg.connect_timeout_ms / 1000):
                await self.loop.create_connection(lambda: conn, ip, port)
        except asyncio.CancelledError:
            conn._fail_connect("shutdown")
            raise
        except TimeoutError:
            conn._fail_connect("timeout")
        except OSError as exc:
            conn._fail_connect(exc.strerror or str(exc))

    def _sweep(self) -> None:
        try:
            now = self.loop.time()
            deadline = self.cfg.message_deadline_ms / 1000
            for conn in [c for c in self.partial.values() if now - c.msg_started > deadline]:
                conn.close("message_deadline", deadline_ms=self.cfg.message_deadline_ms)
            for conn in self.handshakes.late(now):  # ingress/tls.py rule 1
                if conn.outbound:
                    conn._fail_connect("TLS handshake timeout")
                else:
                    conn.close("tls_handshake_timeout", timeout_ms=self.tls_cfg.handshake_timeout_ms)
            if now >= self._next_idle_sweep:
                self._next_idle_sweep = now + self._idle_sweep_s
                idle = self.cfg.idle_timeout_s
                for conn in [c for c in self.conns.values() if now - c.last_active > idle]:
                    conn.close("idle", idle_s=idle)
        finally:
            if not self._closing:
                self._sweeper = self.loop.call_later(self._sweep_s, self._sweep)

    @property
    def inbound(self) -> int:
        """Inbound connections attached (the ones a peer opened, RFC 5626 flows)."""
        return sum(self.per_ip.values())

    def stats(self) -> dict[str, Any]:
        return {"tcp_conns": len(self.conns), "tcp_connecting": len(self._connects),
                "tcp_conn_mismatch": self.mismatched,
                "tls_handshaking": len(self.handshakes.running)}  # fmt: skip

    def stop_listening(self) -> None:
        """Accept no new connection; open ones keep working (shutdown drains through them)."""
        for server in self._servers.values():
            server.close()

    def unlisten(self, address: str, port: int) -> None:
        """Stop accepting on address:port (a virtual address given up); open connections on
        it keep working until they close."""
        server = self._servers.pop((address, port), None)
        if server is not None:
            server.close()

    async def close(self) -> None:
        """Stop listening, give up pending connects and close every connection (flushing
        what is queued without waiting for it). Idempotent; returns within a second."""
        if self._closing:
            return
        self._closing = True
        self._sweeper.cancel()
        for server in self._servers.values():
            server.close()
        connects = list(self._connects)
        for task in connects:
            task.cancel()
        # a task cancelled before its first step never runs its except clause
        opening = [*self.by_peer.values(), *self.by_peer_tls.values()]
        for conn in [c for c in opening if c.pending is not None]:
            conn._fail_connect("shutdown")
        conns = list(self.conns.values())
        for conn in conns:
            conn.close("shutdown")
        if connects:
            await asyncio.wait(connects, timeout=1.0)
        log.info("tcp_shutdown", closed=len(conns), connects_cancelled=len(connects))
