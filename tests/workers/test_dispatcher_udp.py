"""The dispatcher's probing over real UDP sockets on 127.0.0.1 (ports chosen by the kernel).

A thin asyncio adapter, as a worker would run it: one timer from ``next_deadline()``,
``handle_timer`` then ``due_probes`` when it fires, answers recognised by their branch and
fed to ``probe_answered``. The peer answers OPTIONS with 200, goes silent, then answers
again: the destination goes UP -> SUSPECT -> DOWN -> UP. Time is the loop's; the test waits
on events, never on fixed sleeps, all under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from conf.settings import DestinationSet as SetCfg
from conf.settings import Listener
from ingress.sip.message import Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from workers.routing.dispatcher import Dispatcher
from workers.routing.health import HealthChanged, State
from workers.routing.probes import PROBE_BRANCH_PREFIX


class Peer(asyncio.DatagramProtocol):
    """A UAS that answers OPTIONS with 200 while ``answering`` is set."""

    def __init__(self) -> None:
        self.answering = True
        self.answered = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        req = parse_message(data)
        if self.answering and self.transport is not None and not isinstance(req, Response):
            self.transport.sendto(build_response(req, 200, "OK"), addr)
            self.answered.set()


class Prober(asyncio.DatagramProtocol):
    """The adapter: shuttles probes and answers between the socket and the core."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.dispatcher: Dispatcher | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.changes: asyncio.Queue[HealthChanged] = asyncio.Queue()
        self.wake = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        msg = parse_message(data)
        branch = msg.vias[0].branch or ""
        if isinstance(msg, Response) and branch.startswith(PROBE_BRANCH_PREFIX):
            assert self.dispatcher is not None
            self._publish(self.dispatcher.probe_answered(branch, msg.status, self.loop.time()))
            self.wake.set()

    def _publish(self, changes: list[HealthChanged]) -> None:
        for c in changes:
            self.changes.put_nowait(c)

    async def run(self) -> None:
        d = self.dispatcher
        assert d is not None and self.transport is not None
        while True:
            now = self.loop.time()
            self._publish(d.handle_timer(now))
            for p in d.due_probes(now):
                self.transport.sendto(p.data, (p.host, p.port))
            deadline = d.next_deadline()
            assert deadline is not None
            self.wake.clear()
            timer = self.loop.call_at(deadline, self.wake.set)  # the one timer
            try:
                await self.wake.wait()
            finally:
                timer.cancel()


async def scenario() -> list[tuple[State, State]]:
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    prober_t, prober = await loop.create_datagram_endpoint(lambda: Prober(loop),
                                                           local_addr=("127.0.0.1", 0))  # fmt: skip
    try:
        peer_port = peer_t.get_extra_info("sockname")[1]
        our_port = prober_t.get_extra_info("sockname")[1]
        cfg = SetCfg(name="uas", destinations=[f"sip:127.0.0.1:{peer_port}"],
                     probe_interval_s=0.2, probe_timeout_s=0.2)  # fmt: skip
        lst = Listener(transport="udp", address="127.0.0.1", port=our_port)
        prober.dispatcher = Dispatcher([cfg], [lst], instance="udp-test")
        seen: list[tuple[State, State]] = []
        async with asyncio.timeout(5):
            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(prober.run())
                await peer.answered.wait()
                peer.answering = False
                while not seen or seen[-1][1] is not State.DOWN:
                    c = await prober.changes.get()
                    seen.append((c.old, c.new))
                peer.answering = True
                c = await prober.changes.get()
                seen.append((c.old, c.new))
                task.cancel()
        return seen
    finally:
        peer_t.close()
        prober_t.close()


def test_up_down_up_over_udp() -> None:
    """A real peer answering, then silent, then answering: UP -> SUSPECT -> DOWN -> UP."""
    seen = asyncio.run(scenario())
    # a loaded box may time out a probe before the silence (UP -> SUSPECT -> UP): allowed
    assert seen[-3:] == [(State.UP, State.SUSPECT), (State.SUSPECT, State.DOWN),
                         (State.DOWN, State.UP)]  # fmt: skip
    assert set(seen[:-3]) <= {(State.UP, State.SUSPECT), (State.SUSPECT, State.UP)}
