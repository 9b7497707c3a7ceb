"""UDP listeners over real loopback sockets on uvloop: SO_REUSEPORT sharing and sending."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from ingress.udp import UdpListener, bind_udp, open_udp
from tests.aio import run


async def until(pred: Any, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


async def recv(s: socket.socket) -> tuple[bytes, Any]:
    """One datagram from non-blocking ``s`` (uvloop has no sock_recvfrom), polled to 3 s."""
    async with asyncio.timeout(3):
        while True:
            try:
                return s.recvfrom(65536)
            except BlockingIOError:
                await asyncio.sleep(0.005)


def test_two_listeners_share_a_port_and_both_receive() -> None:
    """Two sockets bound to one port with SO_REUSEPORT both take datagrams (the kernel
    spreads sources over them), and each can send from the shared port."""

    async def main() -> None:
        got: dict[int, list[tuple[bytes, Any]]] = {0: [], 1: []}
        a = await open_udp("127.0.0.1", 0, lambda lst, d, addr: got[0].append((d, addr)))
        assert a.transport is not None
        port = a.transport.get_extra_info("sockname")[1]
        b = await open_udp("127.0.0.1", port, lambda lst, d, addr: got[1].append((d, addr)))
        senders = []
        try:
            # one datagram from each of up to 64 source ports: both sockets get some
            # (the chance that one gets none is 2**-63)
            for i in range(64):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
                senders.append(s)
                s.sendto(b"OPTIONS %d" % i, ("127.0.0.1", port))
            await until(lambda: len(got[0]) + len(got[1]) == 64)
            assert got[0] and got[1]
            # both send from the shared port
            for lst, idx in ((a, 0), (b, 1)):
                data, addr = got[idx][0]
                assert lst.send(b"reply " + data, addr)
            replies = []
            for idx in (0, 1):
                _, addr = got[idx][0]
                s = next(x for x in senders if x.getsockname()[1] == addr[1])
                data, src = await recv(s)
                assert src == ("127.0.0.1", port)
                replies.append(data)
            assert all(r.startswith(b"reply OPTIONS ") for r in replies)
        finally:
            for s in senders:
                s.close()
            a.close()
            b.close()

    run(main)


def test_send_after_close_is_refused() -> None:
    """A closed listener refuses to send instead of raising."""

    async def main() -> None:
        lst = await open_udp("127.0.0.1", 0, lambda *_: None)
        lst.close()
        assert not lst.send(b"x", ("127.0.0.1", 9))
        assert not UdpListener("127.0.0.1", 0, lambda *_: None).send(b"x", ("127.0.0.1", 9))

    run(main)


def test_bind_failure_leaks_no_socket() -> None:
    """Binding a port held without SO_REUSEPORT raises OSError and closes the new socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        with pytest.raises(OSError):
            bind_udp("127.0.0.1", holder.getsockname()[1])


def test_a_detached_listener_takes_nothing_new_and_loses_nothing_queued() -> None:
    """After ``detach`` every new datagram goes to the port's other socket; what the
    detached one had queued is all handed on by ``drain_queued``, and it can still answer
    from the shared port. Nothing sent is lost (an ingress replaced under load)."""

    async def main() -> None:
        got: dict[str, list[bytes]] = {"old": [], "new": []}
        old = await open_udp("127.0.0.1", 0, lambda lst, d, addr: got["old"].append(d))
        assert old.transport is not None
        port = old.transport.get_extra_info("sockname")[1]
        new = await open_udp("127.0.0.1", port, lambda lst, d, addr: got["new"].append(d))
        peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
        for p in peers:
            p.bind(("127.0.0.1", 0))
            p.setblocking(False)
        # no loop turn between the sends, the detach and the drain: the queue holds them
        for i, p in enumerate(peers):
            p.sendto(b"before-%d" % i, ("127.0.0.1", port))
        assert old.detach()
        for i, p in enumerate(peers):
            p.sendto(b"after-%d" % i, ("127.0.0.1", port))
        drained = old.drain_queued()
        assert drained == len(got["old"]) > 0  # the kernel gave it some before the detach
        await until(lambda: len(got["old"]) + len(got["new"]) == 2 * len(peers))
        assert all(d.startswith(b"before-") for d in got["old"])
        assert sum(d.startswith(b"after-") for d in got["new"]) == len(peers)
        assert old.send(b"answer", peers[0].getsockname())
        data, src = await recv(peers[0])
        assert (data, src[1]) == (b"answer", port)
        old.close()
        new.close()
        for p in peers:
            p.close()

    run(main)
