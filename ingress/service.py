"""The ingress process: sockets in, parsed messages to workers, workers' output back out.

Rules:
1. Every message's start line and Call-ID are checked here (``scan_message``); what fails is
   answered with the codec's status (never an ACK, never a response: those are dropped) and
   logged once. The worker parses the rest and answers, the same way, what only that finds.
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

from conf import process
from conf.loadstats import LoadMeter
from conf.settings import Settings
from ingress.bus import WorkerBus
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.scan import scan_message
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
        meta = ["udp", addr[0], addr[1], 0, lst.address, lst.port, time.monotonic()]
        reply = self._accept(data, meta)
        if reply is not None:  # sent back where the request came from (symmetric, as rport)
            lst.send(reply, (addr[0], addr[1]))
        self.meter.add_busy(time.perf_counter() - t0)

    def _on_tcp_message(self, conn: TcpConnection, data: bytes) -> None:
        t0 = time.perf_counter()
        self.meter.counters["msgs_in"] += 1
        local = conn.local
        meta = ["tcp", conn.peer[0], conn.peer[1], conn.conn_id, local[0], local[1],
                time.monotonic()]  # fmt: skip
        reply = self._accept(data, meta)
        if reply is not None:
            conn.write(reply)
        self.meter.add_busy(time.perf_counter() - t0)

    def _on_tcp_error(self, conn: TcpConnection, exc: SipError) -> None:
        reply = self._reject(exc, f"{conn.peer[0]}:{conn.peer[1]}", "tcp")
        if reply is not None:
            conn.write(reply)

    def _accept(self, data: bytes, meta: list[Any]) -> bytes | None:
        """Check and hand on one message; returns the reply to send back, if any.

        The check is the start line and the Call-ID (``scan_message``): the worker parses the
        rest and answers what only that finds.
        """
        if not self.accepting:
            self.meter.counters["drop_shutting_down"] += 1
            return None
        try:
            summary = scan_message(data)
        except SipError as exc:
            return self._reject(exc, f"{meta[1]}:{meta[2]}", meta[0])
        if self.bus.submit(summary.call_id, meta, data):
            return None
        # no worker can take it
        counters = self.meter.counters
        if counters["drop_no_worker"] + counters["rejected_503"] == 0:
            log.warning("no_worker_available", call_id=summary.call_id.decode("latin-1"),
                        workers=len(self.bus.workers))  # fmt: skip
        if summary.method == b"INVITE":
            try:
                msg = parse_message(data)
            except SipError as exc:
                return self._reject(exc, f"{meta[1]}:{meta[2]}", meta[0])
            if isinstance(msg, Request) and msg.to.tag is None:
                counters["rejected_503"] += 1
                return build_response(
                    msg, 503, "Service Unavailable", extra_headers=(self._retry_after,)
                )
        counters["drop_no_worker"] += 1
        return None

    def _reject(self, exc: SipError, src: str, transport: str) -> bytes | None:
        """Count and log a malformed message; the answer, when one is allowed."""
        self.meter.counters["drop_malformed"] += 1
        answered = exc.answerable
        log.info("message_rejected", status=exc.status, reason=exc.detail, src=src,
                 transport=transport, answered=answered)  # fmt: skip
        if not answered:
            return None
        s = exc.salvage
        assert s is not None
        return build_response(s, exc.status, exc.reason, extra_headers=exc.extra_headers)

    # -- outbound ----------------------------------------------------------------------------

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        t0 = time.perf_counter()
        counters = self.meter.counters
        udp = self.udp
        sent = 0
        for meta, data in zip(metas, payloads):
            transport, dst_ip, dst_port, conn, local_ip, local_port = meta
            if transport == "udp":
                lst = udp.get((local_ip, local_port))
                if lst is None:
                    counters["drop_no_listener"] += 1
                    continue
                lst.send(data, (dst_ip, dst_port))
            elif not self.tcp.send(dst_ip, dst_port, conn, data):
                counters["drop_tcp_send"] += 1
                continue
            sent += 1
        counters["msgs_out"] += sent
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
