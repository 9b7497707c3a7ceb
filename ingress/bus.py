"""The ingress end of the ZeroMQ hop: parsed messages out to workers, outbound messages in.

Rules:
1. One pipe (``conf.pipe.PushPipe``) per live worker; every message of a Call-ID goes through
   the same one, so a call's messages reach its worker in the order they arrived.
2. Workers announce themselves with heartbeats on our PULL socket; ``WorkerSet`` decides who is
   alive and who owns a Call-ID.
3. ZeroMQ's FD is edge-triggered: after it fires, the socket is drained until ``zmq.Again``.
4. Workers of other hosts (``conf.bustcp``): with ``open_tcp`` the ingress also reads a TCP
   socket of its own, CURVE-guarded, which takes only ``OUT`` and ``HB``; each worker that
   joined over it hears our ``HB [ingress_id, endpoint, state, ring, endpoints]`` at once and
   every heartbeat (``conf.bustcp`` rules 5-6), so it knows which ingress its pipe reaches, who
   owns a Call-ID and where each worker of another host listens (dialogs moving between hosts
   go there, ``dialogstate/hosts.py``). When the ring changes every such worker hears it at
   once, not at the next heartbeat: its dialogs move as soon as the calls do.
5. A batch leaves ``[bus] flush_ms`` after its first message was queued (or when
   ``max_batch`` fills it): each send costs the worker a wake-up of its ZeroMQ and loop
   threads, whatever the batch holds (docs/benchmarks.md "The hop's flush delay").
6. A worker that says ``down`` leaves the ring at once; what was already queued for it
   still goes to it, then ``LEFT``: nothing of ours follows, and the worker, which waits
   for that from every ingress (``workers/bus.py`` rule 10), may close.
7. Leaving (``leave``, rule 6 the other way round): once we take no more input we remove
   our endpoint's file, say ``LEFT`` down every worker pipe, and read on until each worker
   has answered ``LEFT`` (what it had for us is in: ``workers/bus.py`` rule 11) or is gone
   (said ``down``, or its process ended), at most ``LEAVE_S``; each ``LEFT`` or ``down``
   wakes the wait (no polling step). A worker of the previous release never answers (its
   heartbeat looks like ours): it costs ``LEAVE_S``. A worker silent for
   ``liveness`` heartbeats meanwhile is waited for still: one descheduled that long sends
   nothing, heartbeats included, until it runs again. Waiting a fixed two heartbeats and then
   a quiet spell was not enough: a worker busy or descheduled for longer still sent us
   answers after we had closed, and they were lost.
8. A worker of this host that joins hears our hello first, a heartbeat ``[ingress_id,
   endpoint, "up"]`` down its new pipe, before any ``IN``: it says we are of a release that
   says ``LEFT`` (``workers/bus.py`` rule 10). A worker of an earlier release ignores it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
import zmq

from conf import envelope, sockets
from conf.guard import GUARD, Reader
from conf.loadstats import LoadMeter
from conf.pipe import PushPipe, WorkerPipes, drain_pull, hops, woken
from conf.settings import Bus
from ingress import shedding

if TYPE_CHECKING:
    from conf.bustcp import TcpHop

log = structlog.get_logger()

#: rule 7: how long a leaving ingress waits at most for its workers' ``LEFT``; with the quiet
#: wait after it (1 s at most), within ``conf.process.SHUTDOWN_S``
LEAVE_S = 2.0

OnOut = Callable[[list[list[Any]], list[bytes]], None]



#: ``submit`` found no worker, or no room even for what is never shed
FULL = 3


class WorkerBus:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cfg: Bus,
        run_dir: str,
        ingress_id: str,
        on_out: OnOut,
        meter: LoadMeter,
    ) -> None:
        self.ingress_id = ingress_id
        self.endpoint = sockets.endpoint(run_dir, "ingress", ingress_id)
        self._run_dir = run_dir
        self._ctx = ctx
        self._cfg = cfg
        self.shedder = shedding.Shedder(cfg)
        self._on_out = on_out
        self._meter = meter
        self._dirty: list[PushPipe] = []
        self._peers = WorkerPipes(ctx, cfg, run_dir, envelope.KIND_IN, self._header, meter.counters,
                                  self._forget_dirty, self._left)  # fmt: skip
        self.workers = self._peers.workers
        self._pipes = self._peers.pipes
        self._loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.Handle | None = None
        #: rule 5: a batch waits this long for company (uvloop: 0 runs it this iteration)
        self._flush_s = cfg.flush_ms / 1000
        self._pull = sockets.bind_pull(ctx, self.endpoint, cfg.hwm)
        self._reader = GUARD.add_reader(self._loop, self._pull.FD, "ingress_bus",
                                        self._on_readable)
        #: rule 4: the TCP socket, its reader and where it listens, once ``open_tcp`` ran
        self._tcp_pull: zmq.Socket[bytes] | None = None
        self._tcp_reader: Reader | None = None
        self.tcp_endpoint = ""
        #: we said "down" (``withdraw``, ``leave``): later heartbeats say it again, never "up"
        self._state = "up"
        #: rule 7: the workers that have not answered our ``LEFT`` since we began to leave
        self._holding: set[str] = set()
        #: rule 7: set when one of them let go of us
        self._released = asyncio.Event()
        #: rule 8: what a worker of this host hears from us first
        self._hello = envelope.pack(envelope.KIND_HB, [ingress_id, self.endpoint, "up"])

    def open_tcp(self, hop: TcpHop, ep: str) -> None:
        """Rule 4: listen for workers of other hosts at ``ep`` too."""
        self._peers.tcp = hop
        self._tcp_pull, self.tcp_endpoint = hop.bind_pull(ep, self._cfg.hwm)
        self._tcp_reader = GUARD.add_reader(self._loop, self._tcp_pull.FD, "ingress_bus_tcp",
                                            self._on_tcp_readable)  # fmt: skip

    # -- ingress -> worker -------------------------------------------------------------------

    def submit(self, call_id: bytes, meta: list[Any], raw: bytes, method: bytes | None = b"",
               ) -> int:  # fmt: skip
        """Queue one checked message for the worker owning ``call_id``: ``ADMIT`` when it
        was queued; ``SHED`` (dropped, counted) or ``REFUSE`` (a new INVITE: answer 503) by
        the overload order of ``ingress.shedding``; ``FULL`` when there is no worker or no
        room. ``method`` is the request's (None for a response)."""
        ident = self.workers.owner(call_id)
        if ident is None:
            return FULL
        pipe = self._pipes[ident]
        limit = 0
        if pipe.backlog_msgs:  # ZeroMQ refused before: this worker is behind (rule 1)
            verdict = self.shedder.verdict(method, pipe.backlog_msgs / pipe.max_backlog)
            if verdict != shedding.ADMIT:
                return verdict
            limit = self.shedder.limit(method, pipe.max_backlog)
        if not pipe.metas:
            self._dirty.append(pipe)
            if self._flush_handle is None:
                self._flush_handle = self._loop.call_later(self._flush_s, self.flush)
        return shedding.ADMIT if pipe.add(meta, raw, limit) else FULL

    def flush(self) -> None:
        """Send every batch gathered since the first of them (``[bus] flush_ms``, rule 5)."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        for pipe in dirty:
            pipe.flush()

    @property
    def queued(self) -> int:
        """Messages waiting for a worker pipe to accept them."""
        return sum(p.backlog_msgs for p in self._pipes.values())

    def hops(self, now: float) -> dict[str, dict[str, float]]:
        """Per worker pipe: backlog depth, oldest message's wait, messages sent (``conf.pipe``
        rule 5); ``now`` is loop time."""
        return hops(self._pipes.values(), now)

    # -- worker -> ingress -------------------------------------------------------------------

    def _on_readable(self) -> None:
        if drain_pull(self._pull, self._on_envelope, self._meter.counters):
            self._loop.call_soon(self._reader)  # more may be waiting; let others run first

    def _on_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_OUT:
            self._on_out(env.header[0], env.payloads)
        elif env.kind == envelope.KIND_HB:
            ident, endpoint, state = env.header[:3]  # a 4th (a ring) is an ingress's
            change = self._peers.heartbeat(ident, endpoint, state, self._loop.time())
            if change == "joined":  # rule 8: before any IN
                self._pipes[ident].send_first(self._hello)
            if change is not None:
                self._ring_changed()
                self._let_go(ident)
        elif env.kind == envelope.KIND_LEFT:
            self._let_go(env.header[0], answered=True)

    def _on_tcp_readable(self) -> None:
        assert self._tcp_pull is not None and self._tcp_reader is not None
        if drain_pull(self._tcp_pull, self._on_tcp_envelope, self._meter.counters):
            self._loop.call_soon(self._tcp_reader)

    def _on_tcp_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_OUT:
            self._on_out(env.header[0], env.payloads)
        elif env.kind == envelope.KIND_HB:
            ident, endpoint, state = env.header[:3]  # a 4th (a ring) is an ingress's
            change = self._peers.heartbeat(ident, endpoint, state, self._loop.time(), via_tcp=True)
            if change == "joined":
                # before any IN, even while the CURVE handshake is on (rule 4)
                self._pipes[ident].send_first(self._hb(self._state))
            if change is not None:
                self._ring_changed()
                self._let_go(ident)
        elif env.kind == envelope.KIND_LEFT:
            self._let_go(env.header[0], answered=True)
        else:  # rule 4: nothing else crosses hosts
            self._meter.counters["drop_tcp_kind"] += 1

    def _let_go(self, worker: str, answered: bool = False) -> None:
        """Rule 7: ``worker`` answered our ``LEFT`` or its pipe may have closed (its
        heartbeat changed the ring): wake ``leave`` if it waits for that worker."""
        if worker in self._holding:
            if answered:
                self._holding.discard(worker)
            self._released.set()

    def _announce(self, idents: Iterable[str], state: str) -> None:
        """Tell workers of other hosts who we are (rule 4)."""
        frames = self._hb(state)
        for ident in idents:
            pipe = self._pipes.get(ident)
            if pipe is not None:
                pipe.send_now(frames)

    def _ring_changed(self) -> None:
        """Rule 4: the workers of other hosts hear a new ring at once."""
        if self._peers.remote:
            self._announce(self._peers.remote, self._state)

    def _hb(self, state: str) -> list[bytes]:
        """Our heartbeat to a worker of another host, with the idents of our ring and their
        TCP endpoints: that is how its host knows who owns a Call-ID among the workers of
        every host (``conf/bustcp.py`` rule 6) and where each listens."""
        peers = self._peers
        ring = peers.workers.idents[: envelope.MAX_RING]
        eps = [peers.workers.endpoint(i) if i in peers.remote else "" for i in ring]
        return envelope.pack(envelope.KIND_HB, [self.ingress_id, self.tcp_endpoint, state, ring, eps])

    def _left(self) -> list[bytes]:
        """Rule 6: what a worker that said ``down`` gets last from us."""
        return envelope.pack(envelope.KIND_LEFT, [self.ingress_id])

    def _header(self, metas: list[Any]) -> list[Any]:
        return [self.ingress_id, metas]

    def expire(self) -> None:
        """Drop workers whose heartbeats stopped; call every heartbeat interval."""
        self._peers.expire(self._loop.time())  # a worker lost is heard at the heartbeat below
        if self._peers.remote:
            self._announce(self._peers.remote, self._state)

    def _forget_dirty(self, pipe: PushPipe) -> None:
        # every entry: a pipe that filled ``max_batch`` and took more within one flush
        # interval is listed again, and a closed pipe must not be flushed when it is due
        if pipe in self._dirty:
            self._dirty = [p for p in self._dirty if p is not pipe]

    def withdraw(self) -> None:
        """Remove our endpoint's file: workers stop sending to us at their next heartbeat,
        while what they already sent still arrives (the connections outlive the file)."""
        sockets.unlink(self.endpoint)
        self._state = "down"
        self._announce(self._peers.remote, "down")

    async def leave(self, within_s: float = LEAVE_S) -> None:
        """Rule 7: withdraw and say ``LEFT`` to every worker, then read on until each has
        answered it or is gone, at most ``within_s``. Call once we take no more input."""
        loop = self._loop
        sockets.unlink(self.endpoint)  # first: a worker that read our LEFT must not find us again
        self.flush()
        self._holding = set(self._pipes)
        log.info("ingress_leaving_workers", workers=sorted(self._holding)[:20])
        for pipe in self._pipes.values():
            pipe.send_first(self._left())
        self._state = "down"
        self._announce(self._peers.remote, "down")
        beat_s = self._cfg.heartbeat_ms / 1000
        t0 = next_beat = loop.time()
        while True:
            now = loop.time()
            if now >= next_beat:  # a local worker whose process ended is gone
                live = sockets.live_endpoints(self._run_dir, "worker")
                self._holding = {w for w in self._holding if w in live or w in self._peers.remote}
                next_beat = now + beat_s
            self._holding &= self._pipes.keys()  # said "down"
            left_s = t0 + within_s - now
            if not self._holding or left_s <= 0:
                break
            # woken by a LEFT or a worker's "down" (``_let_go``), or the beat
            await woken(self._released, min(next_beat - now, left_s))
        log.info("ingress_released", waited_ms=round((loop.time() - t0) * 1000),
                 holding=sorted(self._holding)[:20])  # fmt: skip

    def close(self) -> None:
        self.flush()
        self._announce(self._peers.remote, "down")
        self._reader.remove()
        if self._tcp_pull is not None and self._tcp_reader is not None:
            self._tcp_reader.remove()
            self._tcp_pull.close(linger=0)
        for ident in list(self._pipes):
            self._peers.close(ident)
        self._peers.settle()
        self._pull.close(linger=0)
        sockets.unlink(self.endpoint)
