"""UDP listener: hands each datagram to the ingress core and sends what it is given.

Several ingress processes bind the same address with SO_REUSEPORT; the kernel spreads
datagrams over them by source address, so one peer's datagrams stay in one process, in order.

Leaving without losing a datagram (an ingress replaced, docs/operations.md): closing a socket
of a SO_REUSEPORT group drops what its receive queue holds. So a leaving ingress first
``detach``es: it connects the socket to the discard port of its own address, and the kernel,
which gives a connected socket of the group only datagrams from its peer (Linux 5.x
``reuseport_select_sock_by_hash`` skips connected sockets), sends every later datagram to the
group's other sockets while the queue stays readable; ``drain_queued`` then reads it to the
end. A connected UDP socket may still ``sendto`` any address on Linux, so answers leave from
the same address and port as before.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from typing import Any

#: RFC 863's discard port: no peer sends from it, so a socket connected there hears nobody
DISCARD_PORT = 9
#: datagrams read at most by ``drain_queued``: a receive queue of RCVBUF_BYTES holds fewer
MAX_DRAIN = 1_000_000

#: a busy proxy takes bursts of thousands of datagrams between two loop iterations
RCVBUF_BYTES = 4 << 20

OnDatagram = Callable[["UdpListener", bytes, Any], None]


class UdpListener(asyncio.DatagramProtocol):
    __slots__ = ("address", "on_datagram", "port", "transport")

    def __init__(self, address: str, port: int, on_datagram: OnDatagram) -> None:
        self.address = address
        self.port = port
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a peer that went away: nothing to do per datagram

    def send(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Send one datagram; False when the listener is closed (the caller counts a drop)."""
        t = self.transport
        if t is None or t.is_closing():
            return False
        t.sendto(data, addr)
        return True

    def detach(self) -> bool:
        """Take this socket out of the kernel's choice for new datagrams (module docstring);
        False when it is closed already or the connect failed (it then keeps receiving until
        it closes, as before)."""
        sock = self._dup()
        if sock is None:
            return False
        with sock:
            host = sock.getsockname()[0]
            if host in ("0.0.0.0", "::"):  # a wildcard socket: connect over loopback
                host = "::1" if sock.family == socket.AF_INET6 else "127.0.0.1"
            try:
                sock.connect((host, DISCARD_PORT))
            except OSError:
                return False
        return True

    def drain_queued(self) -> int:
        """Hand on every datagram already queued, without yielding to the loop; returns how
        many. After ``detach`` nothing new joins the queue, so this empties it."""
        sock = self._dup()
        if sock is None:
            return 0
        n = 0
        with sock:
            sock.setblocking(False)
            for _ in range(MAX_DRAIN):
                try:
                    data, addr = sock.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error reported once on the socket: read on
                    continue
                n += 1
                self.on_datagram(self, data, addr)
        return n

    def _dup(self) -> socket.socket | None:
        """A socket object on a duplicate of the transport's descriptor (uvloop exposes only
        a pseudo-socket); it shares the kernel socket, so connect and reads act on it."""
        t = self.transport
        if t is None or t.is_closing():
            return None
        return socket.socket(fileno=os.dup(t.get_extra_info("socket").fileno()))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def bind_udp(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # the kernel caps these at net.core.[rw]mem_max without an error
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF_BYTES)
        sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_udp(address: str, port: int, on_datagram: OnDatagram) -> UdpListener:
    loop = asyncio.get_running_loop()
    proto = UdpListener(address, port, on_datagram)
    await loop.create_datagram_endpoint(lambda: proto, sock=bind_udp(address, port))
    return proto
