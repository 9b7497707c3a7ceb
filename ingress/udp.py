"""UDP listener: hands each datagram to the ingress core and sends what it is given.

Several ingress processes bind the same address with SO_REUSEPORT; the kernel spreads
datagrams over them by source address, so one peer's datagrams stay in one process, in order.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

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
