"""The ingress process: sockets in, parsed messages to workers, workers' output back out.

Rules:
1. Every message's start line, header count and Call-ID are checked here (``scan_message``);
   what fails is answered with the codec's status (never an ACK, never a response: those are
   dropped). The worker parses the rest and answers, the same way, what only that finds.
   A refusal is counted (``drop_malformed``, and by reason in the ``rejects`` tally), never
   logged on its own: the tally, TCP closes included, is logged as one ``rejected`` line per
   source every ``[log] rejected_interval_s`` (conf/rejects.py).
2. When no worker can take a message (none alive, or its pipe is full) a new INVITE is answered
   503 with Retry-After and anything else is dropped and counted: no unbounded queue anywhere.
3. This module makes no routing decision; workers do.
4. Pike (``[pike]``, docs/protection.md) runs before anything is parsed, on the source address:
   a request (anything not starting ``SIP/``) from a blocked source is dropped and counted
   (``drop_pike``). A block this ingress measures is logged once (``pike_blocked``, then
   ``pike_unblocked``) and told to the node's other ingresses, which apply it silently; with
   ``[pike] cluster`` to the ingresses of the ``[stateplane] peers`` nodes too.
5. No exception from one message ends anything (``conf.guard``): a datagram handler that
   raised is reported by the loop's exception handler and the listener reads on; the TCP
   message handlers are guarded, since uvloop closes a connection whose callback raised.
6. ``[tcp] max_connections`` is held below the open-file limit, less ``FD_RESERVE`` for the
   ZeroMQ sockets and files (``conf.process.connection_cap``); a clamp is logged at start.
7. Replaceable under load (docs/operations.md): a starting ingress binds its listeners only
   once every live worker of the node has announced itself to it (at most ``READY_BEATS``
   heartbeats), so the kernel never hands it a message it would have to refuse or send to
   another owner. At a node's start no worker is live yet (they start beside the ingress and
   take longer): it then waits for the first one to announce itself, at most ``[bus]
   first_worker_wait_s``, so a call sent once it listens is not refused 503 for want of one. A stopping one takes its UDP sockets out of the kernel's choice first
   (``UdpListener.detach``), hands on what they had queued, closes its TCP listeners and
   serves its inbound connections until they close or ``[tcp] drain_s`` (at once when no
   worker is left), then withdraws its bus endpoint and tells the workers so, and exits once
   each has answered that nothing more of theirs follows (``ingress/bus.py`` rule 7).
8. Workers on other hosts (``[bus] address``, ``conf.bustcp``): the ingress listens for them
   over TCP+CURVE at ``ingress_port + N - 1`` before anything else. They announce themselves
   every heartbeat once connected and cannot be listed in advance, so a starting ingress with
   a TCP endpoint waits two heartbeats more (rule 7's bound holds) before it binds its
   listeners.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

import structlog
import zmq

from conf import process, sockets
from conf.bustcp import TcpHop
from conf.control import ControlServer
from conf.guard import GUARD
from conf.loadstats import LoadMeter
from conf.pipe import oldest_ms
from conf.rejects import RejectTally, log_rejects
from conf.settings import Listener, Settings, Tcp
from ingress import shedding
from ingress.bus import FULL, WorkerBus
from ingress.pike import Pike, PikeEvent
from ingress.pikeshare import PikeShare
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.scan import scan_message
from ingress.sip.serialize import build_response
from ingress.tcp import TcpConnection, TcpHub
from ingress.tls import TlsClient, TlsServer
from ingress.udp import UdpListener, open_udp
from ingress.virtual import VirtualListeners

log = structlog.get_logger()


#: heartbeats a starting ingress waits at most for the node's live workers (rule 7): a worker
#: sees our endpoint at its next heartbeat, so it needs one; the rest is room for a busy loop
READY_BEATS = 8

#: a server name a worker may ask a TLS connection to be verified against (``_stream``)
SERVER_NAME = re.compile(r"[a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*\.?")

#: how a re-INVITE is resubmitted when new INVITEs are being refused (shedding rule 5)
REINVITE = b"re-INVITE"


class Ingress:
    def __init__(self, settings: Settings, ingress_id: str, ctx: zmq.Context[Any]) -> None:
        self.settings = settings
        self.ingress_id = ingress_id
        self.loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self.loop.time())
        #: refused messages and TCP connections by source (rule 1)
        self.rejects = RejectTally(settings.log.rejected_interval_s, self.loop.time())
        self.udp: dict[tuple[str, int], UdpListener] = {}
        tls = any(x.transport == "tls" for x in settings.listen)  # docs/tls.md
        self.tcp = TcpHub(_tcp_limits(settings), GUARD.guarded("tcp_message", self._on_tcp_message),
                          GUARD.guarded("tcp_error", self._on_tcp_error), self.rejects, settings.tls,
                          TlsClient.from_settings(settings.tls) if tls else None)  # fmt: skip
        self.bus = WorkerBus(
            ctx, settings.bus, settings.node.run_dir, ingress_id, self._on_out, self.meter
        )
        self._retry_after = b"Retry-After: %d" % settings.bus.retry_after_s
        #: cleared on shutdown: new input is dropped while what is in flight drains
        self.accepting = True
        p = settings.pike
        self.pike: Pike | None = None
        self.pike_share: PikeShare | None = None
        if p.enabled:
            self.pike = Pike(unit_s=p.sampling_time_unit_s, density=p.reqs_density_per_unit,
                             latency_s=p.remove_latency_s, whitelist=tuple(p.whitelist),
                             max_sources=p.max_sources)  # fmt: skip
            cluster = tuple(settings.stateplane.peers) if p.cluster else ()
            self.pike_share = PikeShare(ctx, settings.node.run_dir, ingress_id,
                                        self._on_peer_block, self._announce_blocks,
                                        peer_dirs=cluster)  # fmt: skip
        self.control = ControlServer(ctx, settings.node.run_dir, ingress_id, {
            "stats": self._ctl_stats,
            "pike": self._ctl_pike,
        })  # fmt: skip
        self._ctx = ctx
        #: rule 8: the hop to workers on other hosts
        self.hop: TcpHop | None = None
        if settings.bus.address:
            self.hop = TcpHop(ctx, self.loop, settings, self.meter.counters)
        #: the failover pair's shared listeners, held while the node is active (docs/failover.md)
        self.virtual: VirtualListeners | None = None

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Open the bus, wait for the workers (rule 7; ``stop`` ends the wait), then listen."""
        ep = self.hop.ingress_endpoint() if self.hop is not None else None
        if self.hop is not None and ep is not None:
            try:
                self.bus.open_tcp(self.hop, ep)
            except zmq.ZMQError as exc:
                raise OSError(exc.errno, f"bus endpoint {ep}: {exc.strerror}") from exc
            log.info("ingress_bus_tcp", endpoint=self.bus.tcp_endpoint)
        await self._await_workers(stop or asyncio.Event())
        if stop is not None and stop.is_set():
            return  # stopped before it listened: nothing to bind, the drain finds nothing
        await self._listen([x for x in self.settings.listen if not x.virtual])
        if any(x.virtual for x in self.settings.listen):
            self.virtual = VirtualListeners(
                self._ctx, self.settings.node.run_dir, self.settings.stateplane.heartbeat_ms / 1000,
                self._bind_virtual, self._release_virtual)  # fmt: skip
        log.info("ingress_listening", endpoint=self.bus.endpoint,
                 listen=[f"{x.transport}:{x.address}:{x.port}{' (virtual)' if x.virtual else ''}"
                         for x in self.settings.listen])  # fmt: skip

    async def _await_workers(self, stop: asyncio.Event) -> None:
        """Rule 7: wait until every worker whose endpoint is live in the run directory has
        announced itself, at most ``READY_BEATS`` heartbeats; while none has, until the first
        one does, at most ``[bus] first_worker_wait_s`` (or ``stop`` is set)."""
        loop, hb = self.loop, self.settings.bus.heartbeat_ms / 1000
        start = loop.time()
        missing: set[str] = set()
        remote_s = 2 * hb if self.bus.tcp_endpoint else 0.0  # rule 8
        first_s = self.settings.bus.first_worker_wait_s
        while not stop.is_set():
            waited = loop.time() - start
            live = sockets.live_endpoints(self.settings.node.run_dir, "worker")
            missing = {i for i in live if i not in self.bus.workers}
            one = bool(self.bus.workers) or first_s == 0
            if not missing and one and waited >= remote_s:
                break
            if waited >= (READY_BEATS * hb if one else max(READY_BEATS * hb, first_s)):
                break
            await asyncio.sleep(hb / 10)  # polling step, bounded by the deadlines above
        log.info("ingress_ready", workers=len(self.bus.workers), missing=sorted(missing),
                 waited_ms=round((loop.time() - start) * 1000))  # fmt: skip

    async def _listen(self, listeners: list[Listener]) -> None:
        for lst in listeners:
            try:
                if lst.transport == "udp":
                    self.udp[(lst.address, lst.port)] = await open_udp(
                        lst.address, lst.port, self._on_datagram
                    )
                else:
                    tls = TlsServer.from_listener(lst) if lst.transport == "tls" else None
                    await self.tcp.listen(lst.address, lst.port, tls)
            except OSError as exc:
                # the socket's own error does not say which listener (several share a port,
                # the listen_failed log line must name it), as the bus endpoint's above
                where = f"{lst.transport} {lst.address}:{lst.port}"
                raise OSError(exc.errno, f"listen {where}: {exc.strerror or exc}") from exc

    async def _bind_virtual(self, addr: str) -> None:
        try:
            await self._listen([x for x in self.settings.listen if x.virtual and x.address == addr])
        except OSError:
            self._release_virtual(addr)  # all or none: a half-bound address is worse than none
            raise

    def _release_virtual(self, addr: str) -> None:
        for lst in self.settings.listen:
            if not lst.virtual or lst.address != addr:
                continue
            if lst.transport == "udp":
                udp = self.udp.pop((lst.address, lst.port), None)
                if udp is not None:
                    udp.close()
            else:
                self.tcp.unlisten(lst.address, lst.port)

    # -- inbound -----------------------------------------------------------------------------

    def _on_datagram(self, lst: UdpListener, data: bytes, addr: Any) -> None:
        # one clock for the message's arrival and the busy time it starts (perf_counter is
        # the same CLOCK_MONOTONIC on Linux; a read less per datagram)
        now = time.monotonic()
        self.meter.counters["msgs_in"] += 1
        if len(data) < 4 or data.isspace():
            return  # CRLF keep-alives (RFC 5626 §4.4.1 uses STUN; some UAs send CRLF over UDP)
        # requests only (a response starts "SIP/"): rule 4, before any parsing
        if self.pike is not None and not data.startswith(b"SIP/") and not self._pike_ok(
                addr[0], now):  # fmt: skip
            self.meter.add_busy(time.monotonic() - now)
            return
        meta = ["udp", addr[0], addr[1], 0, lst.address, lst.port, now]
        reply = self._accept(data, meta)
        if reply is not None:  # sent back where the request came from (symmetric, as rport)
            lst.send(reply, (addr[0], addr[1]))
        self.meter.add_busy(time.monotonic() - now)

    def _on_tcp_message(self, conn: TcpConnection, data: bytes) -> None:
        t0 = time.perf_counter()
        self.meter.counters["msgs_in"] += 1
        local = conn.local
        now = time.monotonic()
        if self.pike is not None and not data.startswith(b"SIP/") and not self._pike_ok(
                conn.peer[0], now):  # fmt: skip
            self.meter.add_busy(time.perf_counter() - t0)
            return
        meta = ["tls" if conn.tls else "tcp", conn.peer[0], conn.peer[1], conn.conn_id, local[0],
                local[1], now]  # fmt: skip
        reply = self._accept(data, meta)
        if reply is not None:
            conn.write(reply)
        self.meter.add_busy(time.perf_counter() - t0)

    def _on_tcp_error(self, conn: TcpConnection, exc: SipError) -> None:
        reply = self._reject(exc, conn.peer[0], conn.peer[1], "tls" if conn.tls else "tcp")
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
            return self._reject(exc, meta[1], meta[2], meta[0])
        verdict = self.bus.submit(summary.call_id, meta, data, summary.method)
        if verdict == shedding.ADMIT:
            return None
        counters = self.meter.counters
        if verdict == shedding.SHED:
            # "drop_*" counters are listed by reason in load_stats: the operator sees the order
            counters["drop_shed_" + summary.method.decode("latin-1").lower()] += 1  # type: ignore[union-attr]
            return None
        if verdict == FULL and counters["drop_no_worker"] + counters["rejected_503"] == 0:
            log.warning("no_worker_available", call_id=summary.call_id.decode("latin-1"),
                        workers=len(self.bus.workers))  # fmt: skip
        if summary.method == b"INVITE":
            try:
                msg = parse_message(data)
            except SipError as exc:
                return self._reject(exc, meta[1], meta[2], meta[0])
            if verdict == shedding.REFUSE and isinstance(msg, Request) and msg.to.tag:
                # a re-INVITE belongs to a call already admitted (shedding rule 5)
                if self.bus.submit(summary.call_id, meta, data, REINVITE) == shedding.ADMIT:
                    return None
            elif isinstance(msg, Request) and msg.to.tag is None:
                counters["rejected_503" if verdict == FULL else "drop_shed_invite"] += 1
                return build_response(
                    msg, 503, "Service Unavailable", extra_headers=(self._retry_after,)
                )
        counters["drop_no_worker"] += 1
        return None

    # -- pike --------------------------------------------------------------------------------

    def _pike_ok(self, src: str, now: float) -> bool:
        """Pike's verdict on one request from ``src`` (rule 4); False is counted as a drop."""
        pike = self.pike
        assert pike is not None
        ok = pike.check(src, now)
        if not ok:
            self.meter.counters["drop_pike"] += 1
        if pike.events:
            self._pike_events(now)
        return ok

    def _pike_events(self, now: float) -> None:
        assert self.pike is not None and self.pike_share is not None
        for ev in self.pike.take_events():
            self._log_pike(ev, now)
            if ev.kind == "blocked" and ev.origin == "local":
                self.pike_share.publish(ev.src, ev.until - now, ev.count)

    @staticmethod
    def _log_pike(ev: PikeEvent, now: float) -> None:
        # one event per block across the node: the ingress that measured it logs it
        if ev.origin == "local":
            if ev.kind == "blocked":
                log.warning("pike_blocked", src=ev.src, count=ev.count,
                            until_s=round(ev.until - now, 1))  # fmt: skip
            else:
                log.info("pike_unblocked", src=ev.src, count=ev.count, reason=ev.reason)
        elif ev.kind == "blocked":
            log.debug("pike_block_applied", src=ev.src, count=ev.count,
                      until_s=round(ev.until - now, 1))  # fmt: skip

    def _on_peer_block(self, src: str, remaining_s: float, count: int) -> None:
        """A sibling ingress (or a peer node's) blocked ``src``: apply it here until the same
        moment."""
        assert self.pike is not None
        now = time.monotonic()
        self.pike.block(src, now + remaining_s, count, now, origin="peer")
        self._pike_events(now)

    def _announce_blocks(self) -> None:
        """A sibling subscribed (started late or restarted): tell it every live block."""
        assert self.pike is not None and self.pike_share is not None
        now = time.monotonic()
        for src, until in self.pike.local_blocks(now):
            self.pike_share.publish(src, until - now, 0)

    def _ctl_pike(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.pike is None:
            return {"pike": {"enabled": False, "blocked": [], "sources": 0}}
        now = time.monotonic()
        peers = self.pike_share.peers if self.pike_share else []
        bad = self.pike_share.bad_frames if self.pike_share else 0
        return {"pike": {"enabled": True, "blocked": self.pike.blocked(now),
                         "sources": len(self.pike), "peers": peers, "bad_frames": bad}}  # fmt: skip

    def _ctl_stats(self, _: dict[str, Any]) -> dict[str, Any]:
        hops = self.bus.hops(self.loop.time())
        return {**self.meter.control("ingress"), "queued_out": self.bus.queued,
                "queued_oldest_ms": oldest_ms(hops), "hops": hops,
                "rejected": dict(self.rejects.totals), **self.tcp.stats()}  # fmt: skip

    def heartbeat(self) -> None:
        """Every heartbeat: workers' liveness, pike's expiries, sibling ingresses and the
        ``rejected`` lines once their interval is over."""
        self.bus.expire()
        now = self.loop.time()
        if self.rejects.due(now):
            log_rejects(self.rejects, now)
        if self.pike is not None and self.pike_share is not None:
            self.pike.expire(time.monotonic())
            if self.pike.events:
                self._pike_events(time.monotonic())
            self.pike_share.refresh()

    def _reject(self, exc: SipError, ip: str, port: int, transport: str) -> bytes | None:
        """Count a malformed message (rule 1); the answer, when one is allowed."""
        self.meter.counters["drop_malformed"] += 1
        answered = exc.answerable
        self.rejects.add(ip, exc.key, exc.detail, answered)
        log.debug("message_rejected", status=exc.status, reason=exc.detail, src=f"{ip}:{port}",
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
            elif not self.tcp.send(dst_ip, dst_port, conn, data, *_stream(transport)):
                counters["drop_tcp_send"] += 1
                continue
            sent += 1
        counters["msgs_out"] += sent
        self.meter.add_busy(time.perf_counter() - t0)

    # -- housekeeping ------------------------------------------------------------------------

    def stats(self, interval_s: float) -> dict[str, Any]:
        hops = self.bus.hops(self.loop.time())
        return {
            **self.meter.snapshot(interval_s),
            "workers": len(self.bus.workers),
            "queued": self.bus.queued,
            "queued_oldest_ms": oldest_ms(hops),
            "hops": self.meter.hop_rates(hops, interval_s),
            **self.tcp.stats(),
            "rejected": dict(self.rejects.totals),
        }

    async def drain(self) -> None:
        """Rule 7: stop taking new input without losing what the kernel already gave us, serve
        open connections to their end or the deadline, and send what workers return."""
        queued = 0
        for lst in self.udp.values():
            if not lst.detach():
                log.warning("udp_detach_failed", listen=f"{lst.address}:{lst.port}")
        self.tcp.stop_listening()
        for lst in self.udp.values():
            queued += lst.drain_queued()
        self.bus.flush()
        log.info("ingress_leaving", udp_queued=queued, tcp_conns=self.tcp.inbound,
                 workers=len(self.bus.workers))  # fmt: skip
        t0 = self.loop.time()
        await self._serve_connections()
        self.accepting = False
        log.info("ingress_drained", tcp_left=self.tcp.inbound,
                 waited_ms=round((self.loop.time() - t0) * 1000))  # fmt: skip
        if self.bus.workers:
            # what the workers send until they answer our LEFT is still ours to deliver
            # (ingress/bus.py rule 7)
            await self.bus.leave()
        await process.until_quiet(lambda: self.meter.counters["msgs_out"])

    async def _serve_connections(self) -> None:
        """Until the inbound TCP connections close, no worker is left or ``[tcp] drain_s``."""
        end = self.loop.time() + self.settings.tcp.drain_s
        while self.tcp.inbound and self.bus.workers and self.loop.time() < end:
            await asyncio.sleep(0.1)  # polling step, bounded by the deadline above
            self.bus.expire()  # the heartbeat task has ended: a worker that died must go

    async def close(self) -> None:
        await self.tcp.close()
        log_rejects(self.rejects, self.loop.time())  # what the last interval counted
        for lst in self.udp.values():
            lst.close()
        self.control.close()
        if self.virtual is not None:
            self.virtual.close()
        if self.pike_share is not None:
            self.pike_share.close()
        self.bus.close()
        if self.hop is not None:
            self.hop.close()


def _stream(transport: str) -> tuple[bool, str]:
    """(TLS, server name) of a worker's meta transport: ``tcp``, ``tls`` or ``tls:<name>``
    (docs/tls.md); a name that is not a plain host name is ignored (frames may be forged)."""
    if not transport.startswith("tls"):
        return False, ""
    name = transport[4:]
    return True, name if len(name) <= 253 and SERVER_NAME.fullmatch(name) else ""


def _tcp_limits(settings: Settings) -> Tcp:
    """``[tcp]`` with ``max_connections`` held below the open-file limit (rule 6)."""
    cfg = settings.tcp
    limit = process.fd_limit()
    cap = process.connection_cap(cfg.max_connections, limit)
    if cap == cfg.max_connections:
        return cfg
    log.warning("tcp_max_connections_clamped", configured=cfg.max_connections, clamped_to=cap,
                fd_limit=limit, fd_reserve=process.FD_RESERVE)  # fmt: skip
    return dataclasses.replace(cfg, max_connections=cap,
                               max_connections_per_ip=min(cfg.max_connections_per_ip, cap))  # fmt: skip
