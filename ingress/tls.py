"""SIP over TLS (RFC 3261 §26.3.1, RFC 5630): the TLS layer of ``ingress/tcp.py``'s connections.

A TLS connection is a TCP connection (``TcpConnection``: every ``[tcp]`` rule and limit, the
same framer, write queue, sweeps and bookkeeping) whose bytes pass through a ``TlsSession``:
Python's ``ssl.SSLObject`` over two ``MemoryBIO``s, fed the bytes the socket gave and asked
for the bytes to write. No I/O and no clock here (``loop.start_tls`` is not used: uvloop
hands the client's first flight to the plain protocol before the swap).

Rules:
1. Inbound: the TCP accept is admitted first (``TcpHub.admit``, the same connection caps), then
   the handshake must get a slot (``Handshakes``: at most ``[tls] max_handshakes`` inbound in
   one ingress, ``max_handshakes_per_ip`` per source, else the connection is aborted and
   counted ``tls_refused_<limit>``). Every handshake, either way, must finish within
   ``handshake_timeout_ms``: the hub's sweep closes the late ones (``tls_handshake_timeout``),
   no per-connection timer.
2. A connection joins the hub (``TcpConnection._ready``) only once its handshake succeeded and, on a listener
   with ``client_names``, the client certificate names one of them (``conf/tlsfiles.py`` rule
   4). Any TLS error (a failed handshake, a bad record, a refused name) ends that connection
   only: counted in the ``rejects`` tally (``tls_handshake_failed``, ``tls_error``,
   ``tls_client_name``), never logged one by one.
3. Outbound: the TCP connect as for TCP, then the client handshake with the server certificate
   checked against the destination's address (``[tls] verify_server``). What is sent meanwhile
   waits in the connection's bounded queue; a failure drops it, logged once
   (``tcp_connect_failed`` with ``tls=True``).
4. TLS and TCP connections to one peer address are different connections: the hub files them
   apart, and a connection id is used only for the transport it was opened on.
5. Memory: what a TCP connection buffers, plus the ciphertext of one incomplete TLS record
   (at most ~16 KB) and the TLS state OpenSSL keeps per connection (``docs/tls.md``
   measures it). Plaintext is never held here: it goes to the framer as it is decrypted.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conf import tlsfiles
from conf.settings import Listener, Tls

if TYPE_CHECKING:
    from ingress.tcp import TcpConnection

#: plaintext bytes decrypted per ``SSLObject.read`` call (one TLS record holds at most 16 KB)
READ_BYTES = 65536


@dataclass(frozen=True, slots=True)
class TlsServer:
    """A TLS listener's context, and the names a client certificate must carry."""

    ctx: ssl.SSLContext
    client_names: tuple[str, ...] = ()

    @classmethod
    def from_listener(cls, lst: Listener) -> TlsServer:
        """Raises ``tlsfiles.TlsFileError`` (validated at load, but the files may have
        changed since)."""
        ctx = tlsfiles.server_context(lst.cert_file, lst.key_file, lst.verify_client, lst.ca_file)
        return cls(ctx, tuple(lst.client_names))


@dataclass(frozen=True, slots=True)
class TlsClient:
    """The context of the TLS connections this ingress opens (rule 3)."""

    ctx: ssl.SSLContext

    @classmethod
    def from_settings(cls, t: Tls) -> TlsClient:
        return cls(tlsfiles.client_context(t.verify_server, t.ca_file, t.cert_file, t.key_file))


class TlsClosed(Exception):
    """The peer ended the TLS session (close_notify)."""


class TlsSession:
    """One connection's TLS state, sans-IO: ``receive_data`` takes what the socket read and
    returns the plaintext; ``encrypt`` takes plaintext; ``data_to_send`` returns what must be
    written to the socket after either."""

    __slots__ = ("done", "incoming", "obj", "outgoing")

    def __init__(self, ctx: ssl.SSLContext, server_side: bool, server_hostname: str | None = None,
                 ) -> None:  # fmt: skip
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                server_hostname=server_hostname)  # fmt: skip
        #: the handshake is over
        self.done = False

    def handshake(self) -> bool:
        """Advance the handshake; True once it is done.

        Raises:
            ssl.SSLError: the handshake failed (certificate refused, protocol error).
        """
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.done = True
        return True

    def receive_data(self, data: bytes) -> bytes:
        """The plaintext ``data`` completes (possibly none: a partial record, the handshake).

        Raises:
            ssl.SSLError: a bad record or a failed handshake. TlsClosed: close_notify.
        """
        self.incoming.write(data)
        if not self.done and not self.handshake():
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self.obj.read(READ_BYTES)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                chunk = b""
            if not chunk:  # the peer's close_notify (Python reports it as an empty read)
                if chunks:  # what came before it is delivered; the TCP close follows
                    break
                raise TlsClosed
            chunks.append(chunk)
        return b"".join(chunks)

    def encrypt(self, data: bytes) -> None:
        self.obj.write(data)

    def data_to_send(self) -> bytes:
        return self.outgoing.read()

    @property
    def peercert(self) -> dict[str, object] | None:
        return self.obj.getpeercert()  # type: ignore[return-value]


class Handshakes:
    """Handshakes in progress, for the sweep's deadline; inbound ones counted per source for
    their limits (rule 1)."""

    __slots__ = ("cfg", "inbound", "per_ip", "running")

    def __init__(self, cfg: Tls) -> None:
        self.cfg = cfg
        self.running: dict[int, TcpConnection] = {}
        self.per_ip: dict[str, int] = {}
        self.inbound = 0

    def refusal(self, ip: str) -> tuple[str, int] | None:
        """(limit name, limit) when an inbound handshake from ``ip`` may not start now."""
        if self.inbound >= self.cfg.max_handshakes:
            return "max_handshakes", self.cfg.max_handshakes
        if self.per_ip.get(ip, 0) >= self.cfg.max_handshakes_per_ip:
            return "max_handshakes_per_ip", self.cfg.max_handshakes_per_ip
        return None

    def begin(self, conn: TcpConnection) -> None:
        self.running[conn.conn_id] = conn
        if not conn.outbound:
            self.inbound += 1
            ip = conn.peer[0]
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def end(self, conn: TcpConnection) -> None:
        """Idempotent: the handshake's end and every way a connection ends call it."""
        if self.running.get(conn.conn_id) is not conn:
            return
        del self.running[conn.conn_id]
        if conn.outbound:
            return
        self.inbound -= 1
        ip = conn.peer[0]
        left = self.per_ip.get(ip, 0) - 1
        if left > 0:
            self.per_ip[ip] = left
        else:
            self.per_ip.pop(ip, None)

    def late(self, now: float) -> list[TcpConnection]:
        """Connections whose handshake started more than the timeout before ``now``."""
        limit = self.cfg.handshake_timeout_ms / 1000
        return [c for c in self.running.values() if now - c.msg_started > limit]


def describe(exc: BaseException) -> str:
    """A short, bounded reason for the tally: the exception's class and OpenSSL's reason
    code, nothing the peer wrote."""
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}:{reason}" if reason else type(exc).__name__
