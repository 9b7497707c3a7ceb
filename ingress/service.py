"""The ingress process: sockets in, parsed messages to workers, workers' output back out.

Rules:
1. Every message is parsed here in full; what fails is answered with the codec's status
   (never an ACK, never a response: those are dropped) and logged once. Workers receive only
   messages that parsed.
2. When no worker can take a message (none alive, or its pipe is full) a new INVITE is answered
   503 with Retry-After and anything else is dropped and counted: no unbounded queue anywhere.
3. This module makes no routing decision; workers do.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
import zmq

from conf import envelope, process
from conf.loadstats import LoadMeter
from conf.settings import Settings
from ingress.bus import WorkerBus
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from ingress.tcp import TcpConnection, TcpHub
from ingress.udp import UdpListener, open_udp

log = structlog.get_logger()


class Ingress:
    def __init__(self, settings: Settings, ingress_id: str, ctx: zmq.Context[Any]) -> None:
        self.settings = settings
        self.ingress_id = ingress_id
        self.loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self.loop.time())
        self.udp: dict[tuple[str, int], UdpListener] = {}
        self.tcp = TcpHub(settings.tcp, self._on_tcp_message, self._on_tcp_error)
        self.bus = WorkerBus(
            ctx, settings.bus, settings.node.run_dir, ingress_id, self._on_out, self.meter
        )
        self._retry_after = b"Retry-After: %d" % settings.bus.retry_after_s
        #: cleared on shutdown: new input is dropped while what is in flight drains
        self.accepting = True

    async def start(self) -> None:
        for lst in self.settings.listen:
            if lst.transport == "udp":
                self.udp[(lst.address, lst.port)] = await open_udp(
                    lst.address, lst.port, self._on_datagram
                )
            else:
                await self.tcp.listen(lst.address, lst.port)
        log.info("ingress_listening", endpoint=self.bus.endpoint,
                 listen=[f"{x.transport}:{x.address}:{x.port}" for x in self.settings.listen])  # fmt: skip

    # -- inbound -----------------------------------------------------------------------------

    def _on_datagram(self, lst: UdpListener, data: bytes, addr: Any) -> None:
        t0 = time.perf_counter()
        self.meter.counters["msgs_in"] += 1
        if len(data) < 4 or data.isspace():
            return  # CRLF keep-alives (RFC 5626 §4.4.1 uses STUN; some UAs send CRLF over UDP)
        src = (addr[0], addr[1])
        meta = ["udp", src[0], src[1], 0, lst.address, lst.port, time.monotonic()]
        self._accept(data, meta, lambda reply: lst.send(reply, src))
        self.meter.add_busy(time.perf_counter() - t0)

    def _on_tcp_message(self, conn: TcpConnection, data: bytes) -> None:
        t0 = time.perf_counter()
        self.meter.counters["msgs_in"] += 1
        local = conn.local
        meta = ["tcp", conn.peer[0], conn.peer[1], conn.conn_id, local[0], local[1],
                time.monotonic()]  # fmt: skip
        self._accept(data, meta, conn.write)
        self.meter.add_busy(time.perf_counter() - t0)

    def _on_tcp_error(self, conn: TcpConnection, exc: SipError) -> None:
        self._reject(exc, conn.write, f"{conn.peer[0]}:{conn.peer[1]}", "tcp")

    def _accept(self, data: bytes, meta: list[Any], reply: Any) -> None:
        if not self.accepting:
            self.meter.counters["drop_shutting_down"] += 1
            return
        try:
            msg = parse_message(data)
        except SipError as exc:
            self._reject(exc, reply, f"{meta[1]}:{meta[2]}", meta[0])
            return
        if self.bus.submit(msg.call_id.encode("latin-1"), meta, data):
            return
        # no worker can take it
        if isinstance(msg, Request) and msg.method == "INVITE" and msg.to.tag is None:
            self.meter.counters["rejected_503"] += 1
            reply(build_response(msg, 503, "Service Unavailable",
                                 extra_headers=(self._retry_after,)))
        else:
            self.meter.counters["drop_no_worker"] += 1
        if self.meter.counters["drop_no_worker"] + self.meter.counters["rejected_503"] == 1:
            log.warning("no_worker_available", call_id=msg.call_id, workers=len(self.bus.workers))

    def _reject(self, exc: SipError, reply: Any, src: str, transport: str) -> None:
        self.meter.counters["drop_malformed"] += 1
        answered = exc.answerable
        log.info("message_rejected", status=exc.status, reason=exc.detail, src=src,
                 transport=transport, answered=answered)  # fmt: skip
        if answered:
            s = exc.salvage
            assert s is not None
            reply(build_response(s, exc.status, exc.reason, extra_headers=exc.extra_headers))

    # -- outbound ----------------------------------------------------------------------------

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        t0 = time.perf_counter()
        counters = self.meter.counters
        for meta, data in zip(metas, payloads):
            if meta[envelope.OUT_TRANSPORT] == "udp":
                lst = self.udp.get((meta[envelope.OUT_LOCAL_IP], meta[envelope.OUT_LOCAL_PORT]))
                if lst is None:
                    counters["drop_no_listener"] += 1
                    continue
                lst.send(data, (meta[envelope.OUT_DST_IP], meta[envelope.OUT_DST_PORT]))
            elif not self.tcp.send(meta[envelope.OUT_DST_IP], meta[envelope.OUT_DST_PORT],
                                   meta[envelope.OUT_CONN], data):  # fmt: skip
                counters["drop_tcp_send"] += 1
                continue
            counters["msgs_out"] += 1
        self.meter.add_busy(time.perf_counter() - t0)

    # -- housekeeping ------------------------------------------------------------------------

    def stats(self, interval_s: float) -> dict[str, Any]:
        return {
            **self.meter.snapshot(interval_s),
            "workers": len(self.bus.workers),
            "queued": self.bus.queued,
            **self.tcp.stats(),
        }

    async def drain(self) -> None:
        """Stop taking input, hand on what was taken, and send what workers return for it."""
        self.accepting = False
        self.tcp.stop_listening()
        self.bus.flush()
        await process.until_quiet(lambda: self.meter.counters["msgs_out"])

    async def close(self) -> None:
        await self.tcp.close()
        for lst in self.udp.values():
            lst.close()
        self.bus.close()
