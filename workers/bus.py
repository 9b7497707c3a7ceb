"""The worker end of the ZeroMQ hop: batches in from ingresses, outbound messages back.

Rules:
1. The worker binds one PULL socket at ``worker-<id>.ipc``; every ingress connects a PUSH to it
   once it has heard our heartbeat.
2. Every heartbeat interval the worker looks for ``ingress-*.ipc`` files of live processes
   in the run directory, connects a pipe to each new one and sends each a heartbeat; a file
   that disappeared closes its pipe. On shutdown it says ``down`` so ingresses stop sending
   at once. Timers processes hear of the worker from its ``TimerClient``, on the socket
   that carries its arms (timers/client.py rule 6), not from the bus.
3. Output for one ingress leaves in one batch per ``[bus] flush_ms`` after its first
   message (``conf.pipe``; at once when ``max_batch`` fills it): each send costs the ingress
   a wake-up of its ZeroMQ and loop threads whatever the batch holds (docs/benchmarks.md
   "The hop's flush delay"). With 0, one batch per drained input batch. The worker's other
   pipes (its dialog deltas, its timer ops) ride the same flush: ``flush_soon`` asks for one
   whatever the ingress pipes hold, and ``before_flush`` sends theirs first, so a message's
   deltas never leave after the message, and the worker's ZeroMQ I/O thread wakes once per
   flush, not once per pipe and loop iteration. A batch that fills mid-iteration does not
   leave alone: with ``on_full`` set (the stateful worker: what its core queued so far, CDRs
   and deltas, goes first), it calls ``on_full`` and then flushes every pipe as above.
4. Pipes are opened only by rule 2, for ingresses that announced themselves in the node's
   run directory, never for an ingress id ``send`` is given: ids come out of packets (our
   Via's ``sl-c``, dialogs adopted from a peer node). UDP output for an ingress without a
   pipe (one that left: replaced, docs/operations.md) leaves through another live ingress,
   since every ingress binds the same listeners (``udp_rerouted``); other output for it is
   dropped and counted (``drop_unknown_ingress``). Output before our first heartbeat runs
   rule 2 at once: a worker just started can be handed a ``FWD`` (rule 6) before it, since
   the other workers see its socket file from its bind on, and its answer would be dropped.
5. An IN envelope whose ingress ident could name a file elsewhere (``conf.sockets.valid_ident``)
   is refused and counted as ``drop_bad_ident``.
6. A ``FWD`` is an IN another worker of the node passed on to us, the owner of its Call-ID
   after dialogs moved; ``HANDED`` says a source sent every dialog it owed us
   (``workers/dialogs/handover.py``). Both come only from the node's run directory, like the rest.
   A pipe we forward on queues (up to ``hwm``) while it connects: without, the first message
   to a worker just seen was refused and lost (a TCP caller does not send it again); it is
   closed when that worker leaves our view (``forget_worker``), queue and all.
7. Ingresses on other hosts (``conf.bustcp``): ``open_tcp`` binds a TCP socket of its own
   (CURVE-guarded, taking only ``IN`` and ``HB``) and connects a pipe to each endpoint of
   ``[bus] ingresses``, each expecting its host's key. Every heartbeat goes down each of them
   naming our TCP endpoint. A pipe serves the ingress whose ``HB`` came from that very
   endpoint (an ingress restarted there replaces the one before); one silent for
   ``liveness`` heartbeats, or that said ``down``, is forgotten as a vanished file is
   (rule 2), while its pipe stays to reach whoever listens there next. Its ``HB`` names its
   ring (``conf.bustcp`` rule 6): ``ring`` is the union over the live ones, and
   ``ring_endpoints`` where each of those on another host listens, as far as ``[[peer]]``
   allows connecting there (``TcpHop.worker_key``).
8. Worker hosts hand each other dialogs on that TCP socket (``dialogstate/hosts.py``):
   ``ADOPT``, ``HANDED`` and ``FWD`` go to ``on_host`` with the node name the sender's CURVE
   key authenticated (the ZAP handler's User-Id), which the worker checks them against;
   ``forward`` reaches a worker of another host over TCP with that host's key.
9. With ``[bus] discover`` (``conf/discovery.py``) the configured endpoints are instead those
   the node's state plane names in ``INGRESSES`` envelopes, per peer, each checked again
   here (rule 7 there) and connected with the key of the peer that announced it; one no
   longer in its peer's list loses its pipe, and a peer the envelope does not name keeps
   its pipes. Such an envelope changes nothing on a worker that does not discover.
10. Leaving (``leave``): we say ``down``, and every ingress we knew still sends us what it
   queued before it read that, then ``LEFT`` (``ingress/bus.py`` rule 6). We read on until
   each has said ``LEFT`` or is gone (its file vanished, or it said ``down`` itself; an
   ingress of another host silent for ``liveness`` heartbeats is not forgotten meanwhile),
   at most ``LEAVE_S``, saying ``down`` again every heartbeat in case one was lost; each
   ``LEFT`` wakes the wait (no polling step). Reading only until a quiet spell (0.1 s) was
   not enough: an ingress busy or descheduled for longer kept handing us calls after we had
   closed, and a TCP caller does not send those again. An edge of the previous release,
   whose heartbeat carries no ring (three items), never says ``LEFT``: it is not waited for
   (``_mute``), and ``leave`` says no promise covers it, as it does for an ingress that
   vanished before its ``LEFT`` came: the worker then reads until a quiet spell, that
   release's own rule (``workers/service.py`` ``stop``). An ingress of this host of this
   release says hello when it joins us, before any ``IN`` (``ingress/bus.py`` rule 8); one
   that sent us calls without it, or has not said it ``HELLO_S`` after we found it, is of
   the previous release and not waited for either. A hello that comes while we leave puts
   its ingress back among those we wait for.
11. An ingress leaving says ``LEFT`` first (``ingress/bus.py`` rule 7): we send what we hold
   for it, then ``LEFT`` ourselves (nothing of ours follows), and forget it, so our later
   output for it takes another live ingress as rule 4 says; it reads until every worker's
   ``LEFT``. One that vanished without a word (rule 2) still gets the batch we hold for it,
   and ZeroMQ's queue ``LINGER_MS`` more: it may be reading still.
12. An ingress of another host that drops us from its ring (our heartbeats reached it
   ``liveness`` beats late: a stall of a second on a loaded box) closes its pipe to us and
   tells the ring's other workers, not us; its next ``HB`` to us, once our next heartbeat
   took us back, already names us. So we never hear a ring without us: what we hear is its
   silence, its heartbeats stopping from the drop until it took us back. One read after a
   silence longer than ``liveness - 1`` heartbeats (the edge's own wait, less the beat its
   last one may have come late by) calls ``on_back`` after its ring is taken in: the
   workers of other hosts may have started calls of our Call-IDs meanwhile, and their
   state planes hand those to us as to a joiner (``workers/dialogs/owners.py`` rule 7). A
   stall of ours long enough shows the same way (what it sent meanwhile is read at once,
   after the gap). A silence that short of the edge's own wait is a false alarm: it costs
   a bounded wait, never a message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import structlog
import zmq

from conf import bustcp, discovery, envelope, refused, sockets
from conf.guard import GUARD, Reader
from conf.loadstats import LoadMeter
from conf.pipe import DRAIN_LIMIT, PushPipe, drain_pull, hops, woken
from conf.refused import RefusalLog
from conf.settings import Bus

if TYPE_CHECKING:
    from conf.bustcp import TcpHop

log = structlog.get_logger()

OnBatch = Callable[[str, list[list[Any]], list[bytes]], None]
#: a TIMER envelope's header and frames, for ``timers.client.TimerClient.receive``
OnTimer = Callable[[list[Any], list[bytes]], None]
#: an ADOPT envelope's header: [node the dialogs come from, records] (after a failover)
OnAdopt = Callable[[list[Any]], None]
#: rule 8: the sender's node name (User-Id) and what it sent
OnHost = Callable[[str, envelope.Envelope], None]
#: kinds a worker host may send us on the TCP socket (rule 8)
HOST_KINDS = frozenset({envelope.KIND_ADOPT, envelope.KIND_HANDED, envelope.KIND_FWD})
#: rule 10: how long a leaving worker waits at most for its ingresses to let go of it; with
#: the quiet wait that may follow (1 s at most), within ``conf.process.SHUTDOWN_S``
LEAVE_S = 2.0
#: rule 10: an ingress of this host that has not said hello this long after we found it is
#: of the previous release: one of this release says it as soon as it reads our first
#: heartbeat, and one stalled longer than the leave wait was not covered by it either
HELLO_S = LEAVE_S



def _out_header(metas: list[Any]) -> list[Any]:
    return [metas]


class _Local:
    """An ingress of this host (rule 2): when we found it, and whether it said hello (this
    release: it will say ``LEFT``) or sent calls without (the previous release, rule 10)."""

    __slots__ = ("found_at", "hello", "spoke")

    def __init__(self, found_at: float) -> None:
        self.found_at = found_at
        self.hello = False
        self.spoke = False


class _Remote:
    """An ingress endpoint of ``[bus] ingresses`` (rule 7): its pipe, and who answers there."""

    __slots__ = ("endpoint", "eps", "ident", "pipe", "ring", "says_left", "seen")

    def __init__(self, endpoint: str, pipe: PushPipe) -> None:
        self.endpoint, self.pipe = endpoint, pipe
        self.ident = ""
        self.seen = 0.0
        self.ring: frozenset[str] = frozenset()  # conf.bustcp rule 6
        self.eps: dict[str, str] = {}  # where each of the ring's workers listens (rule 7)
        #: its last heartbeat named a ring: this release or later, which says ``LEFT`` (rule 10)
        self.says_left = True

    def heard(self, now: float, silent_s: float) -> bool:
        """A heartbeat of this endpoint's ingress read at ``now``; True when it ends a silence
        longer than ``silent_s`` since one was last read here (rule 12: we may have been out
        of its ring)."""
        quiet = self.seen > 0.0 and now - self.seen > silent_s
        self.seen = now
        return quiet


class IngressBus:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cfg: Bus,
        run_dir: str,
        worker_id: str,
        on_batch: OnBatch,
        meter: LoadMeter,
        on_timer: OnTimer | None = None,
        on_adopt: OnAdopt | None = None,
        on_release: OnAdopt | None = None,
        on_forward: OnBatch | None = None,
        on_handed: OnAdopt | None = None,
        on_host: OnHost | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.endpoint = sockets.endpoint(run_dir, "worker", worker_id)
        self._ctx = ctx
        self._cfg = cfg
        self._run_dir = run_dir
        self._on_batch = on_batch
        self._meter = meter
        self._pipes: dict[str, PushPipe] = {}
        #: rule 2 has run (rule 4: output before it runs it first)
        self._beaten = False
        self._on_timer = on_timer
        self._on_adopt = on_adopt
        self._on_release = on_release
        self._on_forward = on_forward
        self._on_handed = on_handed
        self._on_host = on_host
        #: called when a live ingress's ring changed (dialogs move at once, rule 8)
        self.on_ring: Callable[[], None] | None = None
        #: called when an ingress of another host is heard after a silence in which it may
        #: have dropped us from its ring (rule 12)
        self.on_back: Callable[[], None] | None = None
        self._hop: TcpHop | None = None
        self._workers: dict[str, zmq.Socket[bytes]] = {}  # rule 6: FWD to the node's workers
        self._refused = RefusalLog("envelope_refused")
        self._loop = asyncio.get_running_loop()
        #: rule 3: the scheduled flush, and how long a batch waits for company
        self._flush_handle: asyncio.TimerHandle | None = None
        self._flush_s = cfg.flush_ms / 1000
        #: rule 3: what else leaves at each flush, before the ingress pipes' batches
        self.before_flush: Callable[[], None] | None = None
        #: rule 3: what must leave before a batch that filled mid-iteration
        self.on_full: Callable[[], None] | None = None
        self._pull = sockets.bind_pull(ctx, self.endpoint, cfg.hwm)
        self._reader = GUARD.add_reader(self._loop, self._pull.FD, "worker_bus", self._on_readable)
        #: rule 7: the TCP socket and its reader, our TCP endpoint, the configured ingresses
        self._tcp_pull: zmq.Socket[bytes] | None = None
        self._tcp_reader: Reader | None = None
        self.tcp_endpoint = ""
        self._remote: dict[str, _Remote] = {}
        #: rule 10: the ingresses of this host, by ident (those of ``_pipes`` not remote)
        self._local: dict[str, _Local] = {}
        #: rule 9: whether we discover, and the peers' bus addresses by name, once ``open_tcp``
        #: ran with ``discover``
        self._discover = False
        self._addresses: dict[str, str] = {}
        #: the peer that announced each learnt endpoint
        self._found_by: dict[str, str] = {}
        self._refused_found = RefusalLog("discovered_ingress_refused")
        #: rule 10: the ingresses that have not let go of us since we said ``down``
        self._holding: set[str] = set()
        self._leaving = False
        #: rule 10: when each ingress's LEFT came (loop time), once we began to leave
        self._left_at: dict[str, float] = {}
        #: rule 10: the ingresses ``leave`` waits for
        self._expected: frozenset[str] = frozenset()
        #: rule 10: set when one ``leave`` waits for let go of us
        self._released = asyncio.Event()

    def open_tcp(self, hop: TcpHop, addresses: dict[str, str] | None = None) -> None:
        """Rule 7: serve the ingresses of ``[bus] ingresses`` too; with ``addresses`` (the
        peers' bus addresses by name), those the state plane names instead (rule 9)."""
        self._tcp_pull, self.tcp_endpoint = hop.bind_pull(bustcp.endpoint(hop.address, "*"),
                                                          self._cfg.hwm)  # fmt: skip
        self._tcp_reader = GUARD.add_reader(self._loop, self._tcp_pull.FD, "worker_bus_tcp",
                                            self._on_tcp_readable)  # fmt: skip
        self._hop = hop
        for ep in hop.ingresses:
            self._add_remote(hop, ep, hop.server_key(ep))
        if addresses is not None:
            self._discover, self._addresses = True, addresses

    def _add_remote(self, hop: TcpHop, ep: str, key: bytes) -> None:
        sock = hop.connect_push(ep, key, self._cfg.hwm)
        pipe = PushPipe(ep, sock, envelope.KIND_OUT, _out_header, self._cfg.max_batch,
                        self._cfg.max_pending)  # fmt: skip
        pipe.on_full = self._full
        self._remote[ep] = _Remote(ep, pipe)

    def _on_discovered(self, header: Any) -> None:
        """Rule 9: the ingresses the node's state plane learnt, per peer it heard."""
        hop = self._hop
        if hop is None or not self._discover:
            self._meter.counters["drop_ingresses_unasked"] += 1
            return
        taken, refused = discovery.entries(header, self._addresses)
        for ep, reason in refused:
            self._meter.counters["drop_bad_discovered"] += 1
            self._refused_found.note(self._loop.time(), endpoint=ep, reason=reason)
        for peer, eps in (taken or {}).items():
            key = hop.key_of(peer)
            for ep in eps:
                if ep not in self._remote and key is not None:
                    self._add_remote(hop, ep, key)
                    self._found_by[ep] = peer
                    log.info("ingress_discovered", endpoint=ep, peer=peer)
            for ep in [e for e, p in self._found_by.items() if p == peer and e not in eps]:
                self._drop_found(ep)

    def _drop_found(self, ep: str) -> None:
        """Rule 9: a learnt endpoint its peer no longer announces loses its pipe."""
        peer = self._found_by.pop(ep)
        remote = self._remote.pop(ep)
        if remote.ident:
            self._forget_remote(remote)
        self._meter.counters["drop_ingress_gone"] += remote.pipe.close()
        log.info("ingress_undiscovered", endpoint=ep, peer=peer)

    def send(self, ingress: str, meta: list[Any], data: bytes) -> bool:
        """Queue one message for ``ingress``; False (counted) when it is unknown (rule 4) or
        its pipe is full."""
        pipe = self._pipes.get(ingress)
        if pipe is None and not self._beaten:  # rule 4: just started
            self.heartbeat()
            pipe = self._pipes.get(ingress)
        if pipe is None and meta[0] == "udp" and self._pipes:  # rule 4
            pipe = next(iter(self._pipes.values()))
            self._meter.counters["udp_rerouted"] += 1
        if pipe is None:
            self._meter.counters["drop_unknown_ingress"] += 1
            return False
        if not pipe.add(meta, data):
            self._meter.counters["drop_ingress_full"] += 1
            return False
        return True

    @property
    def ingresses(self) -> Collection[str]:
        """The live ingresses (rule 2), as they change."""
        return self._pipes.keys()

    def any_ingress(self) -> str | None:
        """An ingress to send through when any will do (UDP probes), or None yet."""
        return next(iter(self._pipes), None)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.before_flush is not None:
            self.before_flush()
        for pipe in self._pipes.values():
            pipe.flush()

    def _full(self, pipe: PushPipe) -> None:
        """Rule 3: a batch reached ``max_batch`` mid-iteration."""
        if self.on_full is None:
            pipe.flush()
            return
        self.on_full()
        self.flush()

    def _flush_soon(self) -> None:
        """Rule 3: send what the pipes hold ``[bus] flush_ms`` from now, unless already due."""
        if self._flush_handle is None and any(p.metas for p in self._pipes.values()):
            self.flush_soon()

    def flush_soon(self) -> None:
        """Rule 3: a flush ``[bus] flush_ms`` from now (unless one is due) for what
        ``before_flush`` sends, whatever the ingress pipes hold."""
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_later(self._flush_s, self.flush)

    @property
    def queued(self) -> int:
        """Messages waiting for an ingress pipe to accept them."""
        return sum(p.backlog_msgs for p in self._pipes.values())

    def hops(self, now: float) -> dict[str, dict[str, float]]:
        """Per ingress pipe: backlog depth, oldest message's wait, messages sent."""
        return hops(self._pipes.values(), now)

    def _on_readable(self) -> None:
        try:
            if drain_pull(self._pull, self._on_envelope, self._meter.counters):
                self._loop.call_soon(self._reader)  # let timers run before the rest
        finally:
            self._flush_soon()

    def _on_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_IN or env.kind == envelope.KIND_FWD:
            if not sockets.valid_ident(env.header[0]):  # we answer to the ingress it names
                self._meter.counters["drop_bad_ident"] += 1
                self._refused.note(self._loop.time(), reason="malformed ingress ident",
                                   ingress=env.header[0][:80])  # fmt: skip
                return
            if env.kind == envelope.KIND_IN:
                local = self._local.get(env.header[0])
                if local is not None and not local.hello:  # rule 10: the previous release
                    local.spoke = True
                self._on_batch(env.header[0], env.header[1], env.payloads)
            elif self._on_forward is not None:
                self._on_forward(env.header[0], env.header[1], env.payloads)
        elif env.kind == envelope.KIND_HANDED and self._on_handed is not None:
            self._on_handed(env.header)
        elif env.kind == envelope.KIND_TIMER and self._on_timer is not None:
            self._on_timer(env.header, env.payloads)
        elif env.kind == envelope.KIND_ADOPT and self._on_adopt is not None:
            self._on_adopt(env.header)
        elif env.kind == envelope.KIND_RELEASE and self._on_release is not None:
            self._on_release(env.header)
        elif env.kind == envelope.KIND_INGRESSES:
            self._on_discovered(env.header)
        elif env.kind == envelope.KIND_HB:
            self._on_hello(env.header[0])
        elif env.kind == envelope.KIND_LEFT:
            if self._leaving:  # rule 10: it let go of us
                if env.header[0] in self._expected:  # only those: a forged one costs nothing
                    self._left_at.setdefault(env.header[0], self._loop.time())
                self._holding.discard(env.header[0])
                self._let_go_check()
            else:
                self._let_go(env.header[0])

    def _on_hello(self, ingress: str) -> None:
        """Rule 10: an ingress of this host says it is of this release (``ingress/bus.py``
        rule 8): it will say ``LEFT``, so a leave under way waits for it after all."""
        local = self._local.get(ingress)
        if local is None:  # not one we found: nothing to note
            return
        local.hello = True
        if self._leaving and ingress not in self._expected:
            self._expected |= {ingress}
            self._holding.add(ingress)
            self._released.set()

    def _let_go(self, ingress: str) -> None:
        """Rule 11: ``ingress`` is leaving and says so."""
        pipe = self._pipes.pop(ingress, None)
        if pipe is None:
            return
        pipe.send_first(envelope.pack(envelope.KIND_LEFT, [self.worker_id]))  # the batch first
        remote = next((r for r in self._remote.values() if r.pipe is pipe), None)
        if remote is not None:
            self._forget_remote(remote)  # its pipe stays, for whoever listens there next
            return
        log.info("ingress_gone", ingress=ingress, reason="left")
        pipe.drain()
        self._meter.counters["drop_ingress_gone"] += pipe.close(sockets.LINGER_MS)

    def _on_tcp_readable(self) -> None:
        assert self._tcp_pull is not None and self._tcp_reader is not None
        try:
            if self._drain_tcp(self._tcp_pull):
                self._loop.call_soon(self._tcp_reader)
        finally:
            self._flush_soon()

    def _drain_tcp(self, sock: zmq.Socket[bytes]) -> bool:
        """``drain_pull`` that also reads who sent what a worker host sends (rule 8): the
        first frame is received as a ``zmq.Frame``, whose User-Id the ZAP handler set."""
        counters = self._meter.counters
        for _ in range(DRAIN_LIMIT):
            if sock.closed:
                return False
            try:
                first = sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return False
            frames = [first.bytes]
            while sock.rcvmore:
                frames.append(sock.recv(zmq.NOBLOCK))
            try:
                env = envelope.unpack(frames)
            except envelope.EnvelopeError as exc:
                counters["drop_bad_envelope"] += 1
                refused.ENVELOPES.note(time.monotonic(), reason=str(exc)[:200])
                continue
            if env.kind in HOST_KINDS:
                try:
                    user = str(first.get("User-Id") or "")
                except zmq.ZMQError:  # no ZAP handler judged it: not a peer of ours
                    user = ""
                self._on_host_envelope(user, env)
            else:
                self._on_tcp_envelope(env)
        return True

    def _on_host_envelope(self, user: str, env: envelope.Envelope) -> None:
        """Rule 8."""
        if not user or self._on_host is None:
            self._meter.counters["drop_host_unknown"] += 1
            return
        if env.kind == envelope.KIND_FWD and not sockets.valid_ident(env.header[0]):
            self._meter.counters["drop_bad_ident"] += 1
            return
        self._on_host(user, env)

    def _on_tcp_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_IN or env.kind == envelope.KIND_LEFT:
            self._on_envelope(env)
        elif env.kind == envelope.KIND_HB:
            back = self._on_ingress_hb(*env.header[:3])
            remote = self._remote.get(env.header[1])
            if remote is not None and remote.ident == env.header[0]:
                remote.says_left = len(env.header) >= 4  # rule 10: a ring, this release
            if len(env.header) >= 4:
                eps = env.header[4] if len(env.header) == 5 else []
                self._on_ingress_ring(env.header[0], env.header[1], env.header[3], eps)
            if back and self.on_back is not None:  # rule 12, with the ring it names now
                self.on_back()
        else:  # rule 7: nothing else crosses hosts
            self._meter.counters["drop_tcp_kind"] += 1

    def _on_ingress_hb(self, ident: str, ep: str, state: str) -> bool:
        """Rule 7: the ingress ``ident`` listens at ``ep``, or has left it. True when it
        was silent long enough to have dropped us from its ring meanwhile (rule 12)."""
        remote = self._remote.get(ep)
        if remote is None or not sockets.valid_ident(ident):
            self._meter.counters["drop_bad_ingress_hb"] += 1
            self._refused.note(self._loop.time(), reason="ingress endpoint not in [bus] ingresses",
                               ingress=str(ident)[:80], endpoint=str(ep)[:200])  # fmt: skip
            return False
        if state != "up":
            if remote.ident == ident:
                self._forget_remote(remote)
            return False
        # rule 12: a silence longer than the edge waits before it drops a worker, less one
        # heartbeat (ours are the same [bus] figures): it may have dropped us and taken us back
        cfg = self._cfg
        back = remote.heard(self._loop.time(), cfg.heartbeat_ms / 1000 * (cfg.liveness - 1))
        if remote.ident == ident:
            return back
        if remote.ident:
            self._forget_remote(remote)
        if ident in self._pipes:  # the same ident on ipc: that way in holds
            return False
        remote.ident = ident
        self._pipes[ident] = remote.pipe
        log.info("ingress_found", ingress=ident, endpoint=ep)
        return back

    def _on_ingress_ring(self, ident: str, ep: str, ring: list[Any], eps: list[Any]) -> None:
        """``conf.bustcp`` rule 6: the ring of the live ingress ``ident`` at ``ep``, and
        where each of its workers listens (rule 7)."""
        remote = self._remote.get(ep)
        if remote is None or remote.ident != ident:
            return  # refused or gone (_on_ingress_hb counted it)
        idents = bustcp.ring_idents(ring)
        if idents is None:
            self._meter.counters["drop_bad_ring"] += 1
            return
        new_eps = {i: e for i, e in zip(ring, eps) if e}
        changed = idents != remote.ring or new_eps != remote.eps
        remote.ring, remote.eps = idents, new_eps
        if changed and self.on_ring is not None:
            self.on_ring()

    def ring(self) -> frozenset[str] | None:
        """The workers of every host as the live ingresses of other hosts see them (the union
        of their rings, ``conf.bustcp`` rule 6), or None without one (a one-host node)."""
        rings = [r.ring for r in self._remote.values() if r.ident]
        return frozenset().union(*rings) if rings else None

    def ring_endpoints(self) -> dict[str, str]:
        """Rule 7: ``{ident: tcp endpoint}`` of the live ingresses' rings' workers on other
        hosts that ``[[peer]]`` lets us reach there (``TcpHop.worker_key``)."""
        hop, out = self._hop, dict[str, str]()
        if hop is None:
            return {}
        for r in self._remote.values():
            if r.ident:
                out.update((i, e) for i, e in r.eps.items() if hop.worker_key(i, e) is not None)
        return out

    def _forget_remote(self, remote: _Remote) -> None:
        remote.ring = frozenset()
        remote.eps = {}
        remote.says_left = True
        if self._pipes.get(remote.ident) is remote.pipe:
            del self._pipes[remote.ident]
        log.info("ingress_gone", ingress=remote.ident, endpoint=remote.endpoint)
        remote.ident = ""
        self._let_go_check()

    def _beat_remote(self, state: str) -> None:
        """Rule 7: our heartbeat down every configured pipe; forget the silent ingresses."""
        now = self._loop.time()
        silent_s = self._cfg.heartbeat_ms / 1000 * self._cfg.liveness
        frames = envelope.pack(envelope.KIND_HB, [self.worker_id, self.tcp_endpoint, state])
        for remote in self._remote.values():
            # one we wait for as we leave stays until its LEFT, or LEAVE_S: an ingress busy
            # for a second may still hand us what it queued before it read our "down"
            if remote.ident and now - remote.seen > silent_s and remote.ident not in self._holding:
                self._forget_remote(remote)
            remote.pipe.drain()
            remote.pipe.send_now(frames)

    def forward(self, worker: str, ep: str, ingress: str, meta: list[Any], raw: bytes) -> bool:
        """Rule 6: one message to the node's worker ``worker`` (at ``ep``, read from the run
        directory) as a ``FWD``; False (counted) when its pipe is full."""
        sock = self._workers.get(worker)
        if sock is None and ep.startswith("tcp://"):  # a worker of another host (rule 8)
            key = self._hop.worker_key(worker, ep) if self._hop is not None else None
            if key is None or self._hop is None:
                self._meter.counters["drop_forward_gone"] += 1
                return False
            sock = self._workers[worker] = self._hop.connect_push(ep, key, self._cfg.hwm, False)
        elif sock is None:
            sock = self._workers[worker] = sockets.connect_push(self._ctx, ep, self._cfg.hwm,
                                                                False)  # fmt: skip
        try:
            sock.send_multipart(envelope.pack(envelope.KIND_FWD, [ingress, [meta]], [raw]),
                                zmq.NOBLOCK)  # fmt: skip
        except zmq.Again:
            self._meter.counters["drop_forward_full"] += 1
            return False
        self._meter.counters["forwarded"] += 1
        return True

    def forget_worker(self, worker: str) -> None:
        sock = self._workers.pop(worker, None)
        if sock is not None:
            sock.close(linger=0)

    def _connect(self, ingress: str, ep: str) -> PushPipe:
        sock = sockets.connect_push(self._ctx, ep, self._cfg.hwm)
        pipe = PushPipe(ingress, sock, envelope.KIND_OUT, _out_header, self._cfg.max_batch,
                        self._cfg.max_pending)  # fmt: skip
        pipe.on_full = self._full
        self._pipes[ingress] = pipe
        self._local[ingress] = _Local(self._loop.time())
        log.info("ingress_found", ingress=ingress)
        return pipe

    def heartbeat(self, state: str = "up") -> None:
        """Find ingresses, forget vanished ones, and tell each we are ``state``."""
        self._beaten = True
        found = sockets.live_endpoints(self._run_dir, "ingress")
        remote = {r.ident for r in self._remote.values()}
        for ident in [i for i in self._pipes if i not in found and i not in remote]:
            pipe = self._pipes.pop(ident)
            pipe.flush()  # rule 11: it may be reading still
            self._meter.counters["drop_ingress_gone"] += pipe.close(sockets.LINGER_MS)
            log.info("ingress_gone", ingress=ident)
        frames = envelope.pack(envelope.KIND_HB, [self.worker_id, self.endpoint, state])
        for ident, ep in found.items():
            if ident in remote:
                continue  # an ident a remote ingress took first (rule 7)
            pipe = self._pipes.get(ident) or self._connect(ident, ep)
            pipe.drain()
            pipe.send_now(frames)
        for ident in [i for i in self._local if i not in self._pipes]:
            del self._local[ident]
        if self._remote:
            self._beat_remote(state)

    async def leave(self) -> bool:
        """Rule 10: say ``down`` and wait, at most ``LEAVE_S``, until every ingress we knew
        has let go of us; we still read and answer meanwhile. True when each one said
        ``LEFT``, so nothing of theirs follows; False when one did not (gone, or ``LEAVE_S``
        passed) or cannot (``_mute``), or an ingress of another host may be sending unheard."""
        loop = self._loop
        self._leaving = True
        mute = self._mute()
        self._holding = {i for i in self._pipes if i not in mute}
        self._expected = frozenset(self._holding)
        # an endpoint of [bus] ingresses we have heard no ingress at yet: one there may have
        # heard our "up" and be sending already, unknown to us
        unheard = [r.endpoint for r in self._remote.values() if not r.ident]
        log.info("worker_leaving", ingresses=sorted(self._pipes)[:20], mute=sorted(mute)[:20])
        beat_s = self._cfg.heartbeat_ms / 1000
        t0 = next_beat = loop.time()
        while True:
            now = loop.time()
            if now >= next_beat:  # "down" again each beat, in case one was lost
                self.heartbeat("down")  # forgets the ingresses that vanished, too
                next_beat = now + beat_s
                late = self._holding & self._mute()  # HELLO_S passed without a hello
                mute |= late
                self._holding -= late
            self._holding &= self._pipes.keys()
            left_s = t0 + LEAVE_S - now
            if not self._holding or left_s <= 0:
                break
            # woken by a LEFT or an ingress forgotten (``_let_go_check``), or the beat
            await woken(self._released, min(next_beat - now, left_s))
        left_ms = {i: round((self._left_at[i] - t0) * 1000, 1)
                   for i in sorted(self._expected & self._left_at.keys())[:20]}
        log.info("worker_released", waited_ms=round((loop.time() - t0) * 1000), left_ms=left_ms,
                 holding=sorted(self._holding)[:20])  # fmt: skip
        # one that vanished before its LEFT came may have sent more: not a promise
        return not mute and not unheard and self._expected <= self._left_at.keys()

    def _mute(self) -> set[str]:
        """Rule 10: the live ingresses of the previous release, which never say ``LEFT``:
        those of another host whose heartbeat has no ring (three items, docs/operations.md
        "Rolling upgrade"), and those of this host that sent us calls without saying hello
        first or have not said it ``HELLO_S`` after we found them."""
        now = self._loop.time()
        mute = {r.ident for r in self._remote.values() if r.ident and not r.says_left}
        return mute | {i for i, x in self._local.items() if i in self._pipes and not x.hello
                       and (x.spoke or now - x.found_at >= HELLO_S)}  # fmt: skip

    def _let_go_check(self) -> None:
        """Rule 10: wake ``leave`` when one it waits for let go of us."""
        if self._leaving:
            self._released.set()

    def close(self) -> None:
        """Say goodbye, stop reading, and send what is left."""
        self._reader.remove()
        self.flush()
        self.heartbeat("down")
        self._pull.close(linger=0)
        sockets.unlink(self.endpoint)
        if self._tcp_pull is not None and self._tcp_reader is not None:
            self._tcp_reader.remove()
            self._tcp_pull.close(linger=0)
        remote = {id(r.pipe) for r in self._remote.values()}
        for pipe in self._pipes.values():
            if id(pipe) not in remote:
                pipe.close(linger_ms=sockets.LINGER_MS)
        for r in self._remote.values():
            r.pipe.close(linger_ms=sockets.LINGER_MS)
        for sock in self._workers.values():
            sock.close(linger=sockets.LINGER_MS)
