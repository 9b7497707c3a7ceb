"""The state plane's replication adapter: sockets around the sans-IO cores (``docs/stateplane.md``).

Rules:
1. Owner side: a PULL (``stateplane-deltas.ipc``) takes the workers' dialog deltas; each
   batch is applied to the owner's mirror ``DialogTable`` (the snapshot source), numbered by
   the ``Publisher`` and sent on the PUB (``stateplane-pub.ipc``). ``HUGZ`` go out on the
   publisher's schedule whether or not anything changed.
1a. The PUB is an XPUB: it tells us each topic that gains its first subscriber or loses its
   last, so we know whether anyone takes updates (a topic that is a prefix of ``UPD``). While
   no one does, updates are numbered, kept in the backlog and journaled but not packed nor
   sent (with no peer, most of the mirror's cost). A subscriber cannot miss one it needs:
   libzmq puts its subscription in the XPUB's filter before any message reaches it, and a
   replica asks its first snapshot only after hearing us (rule 3), so the subscription
   notices are read before any ``ICANHAZ`` is answered: the answer covers up to the
   publisher's ``seq``, every later update is sent. One joiner we have not noticed yet and
   that did not ask sees at worst a gap at the next heartbeat, and asks (the replica's rules).
2. Snapshots: a ROUTER (``stateplane-snap.ipc``, mandatory-routing) answers ``ICANHAZ`` with
   ``snapshot.serve``, one message per answer per loop turn, so heartbeats and deltas keep
   flowing during a big sync (``stateplane/answers.py``). Who may ask, how often, and when
   an asker that stops reading loses its answer: ``stateplane/asks.py``.
3. Replica side, per configured peer run directory: SUB to its PUB, DEALER to its ROUTER.
   The peer's node name is learned from the first message heard: only then is a ``Replica``
   made and the first snapshot asked, so the subscription is known to be live (the slow
   joiner of zguide ch. 5 needs no sleep). A gap, a new epoch or a stall asks again (the
   replica's rules); a stale owner is refused and logged.
4. Every bulk step (building, unpacking or applying a chunk) runs with the cyclic collector
   paused, and a finished full sync freezes the heap (``snapshot.collector_paused``).
5. Nothing blocks the loop: every socket is drained with NOBLOCK in bounded batches from the
   loop's reader, and every queue is bounded by a ZeroMQ HWM or the cores' own bounds.
6. Replication lag is measured where it ends: for every "c" (call created) and "a" (call
   answered) update heard, the wall time now minus the wall time the worker stamped on the
   event, one host's clock on a pair that shares a host (p50/p99/max per stats interval in
   ``replication_stats``; across hosts it includes the clocks' offset).
7. Peers on other hosts: with ``[stateplane] bind = "host:port"`` the PUB also listens on
   ``tcp://host:port`` and the snapshot ROUTER on the next port; a peer given as
   ``tcp://host:port`` is reached there, one given as a run directory over ipc. With
   ``[curve]`` both tcp:// endpoints are CURVE servers that admit only the ``[[peer]]`` keys
   (``conf/curve.py``: our ZAP handler, bound before them), and a tcp:// peer is reached
   only if it proves its ``[[peer]]`` key; ipc endpoints stay keyless.
8. Only the peer speaks for itself: every update, heartbeat and snapshot message a peer's
   sockets deliver must carry the node name of its ``[[peer]]`` (with CURVE, the name of the
   key that socket authenticated); anything else is counted (``wrong_node``) and dropped
   before it reaches the replica or Binary Star. Every socket has a ZMQ_MAXMSGSIZE for what
   it may read, and every frame is decoded within bounds (``updates.py`` rule 5).
9. A peer run directory is connected to only once it exists and ``conf.rundir.peer_problem``
   finds nothing wrong with it (checked every heartbeat until then): one another local user
   could write or create would let him feed us a forged replica. A refused one is counted
   (``peer_dir_refused`` in the peer's stats) and logged at most once per 10 s.
10. Dialogs follow their Call-ID: the mirror's dialogs go to the workers that own them when
   the node's workers change, across hosts on a host of several, and those restored from
   disk once the workers settle (``stateplane/handover.py``); ``y`` markers, ``ring`` deltas,
   ``k`` copies and resync starts arrive with the deltas (rule 1) and are passed to it. On a
   host of several with a CURVE ``bind``, what it hands another host's worker is published
   for that host's state plane to keep (``KEEP``, ``handover.py`` rules 6 and 8), and a
   ``KEEP`` a tcp:// peer publishes is passed to it with the name that peer's key proved.
11. Ingresses found through the state plane (``conf/discovery.py``): an edge publishes its
   live ingresses' TCP endpoints (``INGRESSES``) every heartbeat; a worker host with
   ``[bus] discover`` takes them only from a configured peer that proved its key, checks
   each, and hands what it accepted to its workers every heartbeat
   (``stateplane/ingresses.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import structlog
import zmq

from conf import curve, refused, sockets
from conf import envelope as env
from conf.settings import Settings
from conf.workerset import WorkerSet
from dialogstate.table import DialogTable
from stateplane import updates as up
from stateplane.answers import MAX_ASK_BYTES, Answers
from stateplane.cluster import ClusterFailover
from stateplane.failover import Adopter, Failover, opposite
from stateplane.handover import Handover, Restore, read_count
from stateplane.ingresses import IngressFinder
from stateplane.peer import ERROR_LOG_EVERY, PUB_HWM, SNAP_HWM, Peer, Reader, split_bind
from stateplane.persist import Persistence
from stateplane.quorum import View
from stateplane.replica import Publisher, next_epoch
from stateplane.snapshot import collector_paused

log = structlog.get_logger()


def _bind(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, ep: str, hwm: int,
          max_bytes: int) -> zmq.Socket[bytes]:  # fmt: skip
    sockets.unlink(ep)  # one stateplane per run directory: a file left here is a dead one's
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.sndhwm = sock.rcvhwm = hwm
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sockets.bind(sock, ep)
    return sock


class Replication:
    """The owner's mirror, publisher and snapshot server, and one ``Peer`` per peer (rules 1-2)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings) -> None:
        sp, run_dir = settings.stateplane, settings.node.run_dir
        self.ctx, self.settings = ctx, settings
        self.loop = asyncio.get_running_loop()
        self.heartbeat_s = sp.heartbeat_ms / 1000
        self.mirror = DialogTable(settings, emit_deltas=False)
        #: the node's own dialogs on disk (docs/stateplane.md "Persistence")
        self.persist: Persistence | None = None
        restoring: Restore | None = None
        last_epoch = 0
        if sp.persist_dir:
            self.persist = Persistence(sp.persist_dir)
            loaded = self.persist.load(self.make_table(), self.loop.time(), time.time())
            last_epoch = loaded.epoch
            self.persist.since_snapshot = loaded.replayed
            self.persist.open_journal()
            log.info("persistence_loaded", dir=sp.persist_dir, dialogs=len(loaded.records),
                     replayed=loaded.replayed, torn=loaded.torn, epoch=loaded.epoch,
                     files=loaded.files)  # fmt: skip
            if loaded.records:
                restoring = Restore(loaded.records, started=self.loop.time(),
                                    expect_workers=read_count(self.persist.dir))  # fmt: skip
        self._snapshot_step: Iterator[None] | None = None
        self.publisher = Publisher(settings.node.name, next_epoch(last_epoch, time.time()),
                                   backlog=sp.backlog, heartbeat_s=self.heartbeat_s,
                                   now=self.loop.time())  # fmt: skip
        self.counters: Counter[str] = Counter()
        self.endpoints = [f"ipc://{run_dir}/{name}" for name in
                          (env.STATEPLANE_DELTAS, env.STATEPLANE_PUB, env.STATEPLANE_SNAP)]  # fmt: skip
        pull = _bind(ctx, zmq.PULL, self.endpoints[0], settings.bus.hwm, sockets.MAX_MSG_BYTES)
        self.pub = _bind(ctx, zmq.XPUB, self.endpoints[1], PUB_HWM, sockets.MAX_SEND_ONLY_BYTES)
        #: rule 1a: the subscribed topics that take updates (at most the 4 prefixes of UPD)
        self._update_topics: set[bytes] = set()
        self.snap = _bind(ctx, zmq.ROUTER, self.endpoints[2], SNAP_HWM, MAX_ASK_BYTES)
        self.snap.setsockopt(zmq.ROUTER_MANDATORY, 1)  # rule 2
        self.answers = Answers(self.loop, self.snap, self.publisher, self.mirror, self.counters)
        #: this node's CURVE keys and the allow-list's handler (rule 7)
        self.keys = curve.node_keys(settings)
        self.zap: curve.ZapHandler | None = None
        if sp.bind:  # peers on other hosts (rule 7)
            if self.keys is not None:  # the handler first: libzmq admits anyone without one
                self.zap = curve.ZapHandler(ctx, self.loop, curve.allowed(settings),
                                            self._on_zap)  # fmt: skip
            host, port = split_bind(sp.bind)
            for sock, p in ((self.pub, port), (self.snap, port + 1)):
                if self.keys is not None:
                    curve.serve_curve(sock, self.keys)
                sock.bind(f"tcp://{host}:{p}")
        #: keys heard from each worker in a resync in progress (workers/dialogs/deltas.py)
        self._sweeps: dict[str, set[str]] = {}
        self.readers = [Reader(self.loop, pull, self._on_deltas),
                        Reader(self.loop, self.snap, self._on_ask, copy=False),
                        Reader(self.loop, self.pub, self._on_subscription)]  # fmt: skip
        #: rule 11: the ingresses we announce and those we learn
        self.finder = IngressFinder(ctx, settings, self._publish, self.counters)
        self.peers = [self._peer(d) for d in sp.peers]
        #: Binary Star with the pair's other node ([stateplane] role; docs/failover.md)
        self.failover: Failover | ClusterFailover | None = None
        #: our own virtual addresses (not ``standby``): their role decides a restore
        self._own: set[str] = set()
        if sp.role == "member":  # three nodes or more (stateplane/cluster.py)
            self._own = {lst.address for lst in settings.listen if lst.virtual and not lst.standby}
            self.failover = ClusterFailover(ctx, run_dir, sp.members, self._member_addresses(),
                                            settings.node.name, self.publisher.epoch,
                                            self.heartbeat_s, self.loop.time(), self._publish_role,
                                            self._replica_of)  # fmt: skip
        elif sp.role:
            roles = {lst.address: opposite(sp.role) if lst.standby else sp.role
                     for lst in settings.listen if lst.virtual}  # fmt: skip
            self._own = {lst.address for lst in settings.listen if lst.virtual and not lst.standby}
            self.failover = Failover(ctx, run_dir, roles, settings.node.name,
                                     self.publisher.epoch, self.heartbeat_s, self.loop.time(),
                                     self._publish_role,
                                     frozenset(roles) - self._own)  # fmt: skip
            self.failover.peer_table = self._pair_table
            self.failover.on_yield = self.peers[0].resync
        self.adopter = self.failover.adopter if self.failover else Adopter(
            ctx, run_dir, self.counters)  # fmt: skip
        #: rule 10: the workers, and what the mirror owes them
        self.handover = Handover(ctx, settings, self.loop, self.mirror, self.adopter,
                                 self.counters, self._announce, own=self._own,
                                 restoring=restoring, curve=self.keys is not None,
                                 persist_dir=self.persist.dir if self.persist else None)  # fmt: skip
        self.handover.drain = self.readers[0].drain  # handover.py rule 7
        if sp.bind and self.keys is not None and self.handover.hosts is not None:
            self.handover.publish_keep = self._publish_keep  # handover.py rule 6
        if self.failover is not None:
            self.failover.on_role = self.handover.on_role
        elif restoring is not None:
            self.handover.restore_decided(True)

    def _peer(self, endpoint: str) -> Peer:
        """Rule 8: a peer with its configured name and, over tcp:// with CURVE, its key."""
        conf = curve.peer_of(self.settings, endpoint)
        if conf is None:
            return Peer(self, endpoint)
        return Peer(self, endpoint, conf.name, curve.peer_key(conf.public_key, conf.public_key_file))

    def _on_zap(self, accepted: bool, address: str) -> None:
        """Handshakes judged by the allow-list; refusals logged once per ``ERROR_LOG_EVERY``."""
        key = "curve_accepted" if accepted else "curve_refused"
        self.counters[key] += 1
        if not accepted and self.counters[key] % ERROR_LOG_EVERY == 1:
            log.warning("curve_refused", address=address, count=self.counters[key])

    def peer_synced(self, peer: Peer) -> None:
        """A replica is whole again; after a lost split brain it decides what we let go
        (``failover.py`` rule 3)."""
        fo = self.failover
        if isinstance(fo, Failover) and fo.reconcile and peer is self.peers[0] and peer.replica:
            fo.reconciled(self.mirror.keys(), peer.replica.table, self.loop.time())

    def _member_addresses(self) -> dict[str, list[str]]:
        """Each member's virtual addresses we listen on: ours, and the standby ones by the
        ``[[peer]] virtual`` that names them."""
        listened = {lst.address for lst in self.settings.listen if lst.virtual}
        out = {self.settings.node.name: sorted(self._own)}
        for p in self.settings.peer:
            if p.name in self.settings.stateplane.members:
                out[p.name] = [a for a in p.virtual if a in listened]
        return out

    def _replica_of(self, node: str) -> DialogTable | None:
        for peer in self.peers:
            if peer.replica is not None and peer.replica.node == node:
                return peer.replica.table
        return None

    def _recheck_members(self, now: float) -> None:
        """``cluster.py`` rule 5, against each holder whose replica is in sync."""
        assert isinstance(self.failover, ClusterFailover)
        for peer in self.peers:
            r = peer.replica
            if r is not None and r.node in self.failover.reconcile_with and not r.syncing:
                self.failover.recheck(self.mirror.keys(), r.node, r.table, now)

    def _view(self) -> View | tuple[()]:
        fo = self.failover
        return fo.view(self.loop.time()) if isinstance(fo, ClusterFailover) else ()

    def _pair_table(self) -> tuple[str, DialogTable] | None:
        r = self.peers[0].replica
        return None if r is None else (r.node, r.table)

    def _publish_role(self) -> None:
        assert self.failover is not None
        self._publish(self.publisher.hugz(self.failover.role, self._view()))

    def make_table(self) -> DialogTable:
        return DialogTable(self.settings, emit_deltas=False)

    # -- owner -------------------------------------------------------------------------------

    def _on_deltas(self, frames: list[bytes]) -> None:
        try:
            e = env.unpack(frames)
        except env.EnvelopeError as exc:
            self.counters["drop_bad_envelope"] += 1
            refused.ENVELOPES.note(time.monotonic(), reason=str(exc)[:200])
            return
        if e.kind != env.KIND_DELTAS:
            self.counters["drop_bad_envelope"] += 1
            return
        now, wall = self.loop.time(), time.time()
        worker = e.header[0]
        good = []
        sweep = self._sweeps.get(worker)
        apply, lengths = self.mirror.apply, up.DELTA_LENGTHS
        for delta in e.header[1]:  # each a list (the envelope's check)
            op = delta[0] if delta else None
            # up.check_delta's checks, inline (one call fewer per delta): op, length, key types
            if (type(op) is str and lengths.get(op) == len(delta) and type(delta[1]) is str
                    and delta[1] and type(delta[2]) is str):  # fmt: skip
                try:
                    apply(delta, now, wall)
                except (ValueError, TypeError, KeyError, IndexError):
                    self.counters["bad_delta"] += 1
                    continue
                if op == "c":
                    key = delta[1] + "\0" + delta[2]
                    if sweep is not None:
                        sweep.add(key)
                    self.handover.created(worker, key)
                good.append(delta)
                continue
            if op == "s+":  # a worker's resync begins (workers/dialogs/deltas.py rule 2)
                sweep = self._sweeps[worker] = set()
                if delta[2:] != ["fresh"]:  # a fresh worker holds none of the restored ones
                    self.handover.resynced.add(worker)
                continue
            if op == "y":  # a worker let go of what a joiner takes (workers/dialogs/deltas.py rule 4)
                self.handover.note_yield(worker, delta)
                continue
            if op == "ring":  # the other hosts' workers, as this worker sees them (rule 10)
                self.handover.on_ring(worker, delta)
                continue
            if op == "k":  # another host's hand-over to a worker of ours, to keep (rule 10)
                self.handover.note_keep(worker, delta, now)
                continue
            if op == "s-":
                if sweep is not None:
                    good += self._end_sweep(worker, sweep, wall)
                    del self._sweeps[worker]
                    sweep = None
                continue
            self.counters["bad_delta"] += 1  # not a delta the mirror knows (up.check_delta)
        self._announce(good)
        self.counters["deltas"] += len(good)

    def _on_subscription(self, frames: list[bytes]) -> None:
        """Rule 1a: an XPUB notice, ``\x01topic`` (first subscriber) or ``\x00topic`` (last
        one gone); anything else a forged subscriber sent is ignored."""
        if len(frames) != 1 or not frames[0]:
            return
        notice, topic = frames[0][0], frames[0][1:]
        if not up.KIND_UPDATE.startswith(topic):
            return
        if notice == 1:
            self._update_topics.add(topic)
        elif notice == 0:
            self._update_topics.discard(topic)

    def _on_ask(self, frames: list[zmq.Frame]) -> None:
        """Rule 1a: the subscription notices first, so the answer's updates are all sent."""
        self.readers[2].drain()
        self.answers.on_ask(frames)

    def _announce(self, deltas: list[list[Any]]) -> None:
        """Deltas the mirror took: numbered, published (to subscribers, rule 1a), and
        journaled (rule 1)."""
        if not deltas:
            return
        pub = self.publisher
        first = pub.number(deltas)  # no Update objects: only the frames, and only if read
        if self._update_topics:
            send = self.pub.send_multipart
            for frames in up.pack_updates(pub.node, pub.epoch, first, deltas):
                try:
                    send(frames, zmq.NOBLOCK)
                except zmq.Again:  # as in _publish
                    self.counters["pub_dropped"] += 1
        else:
            self.counters["updates_unsent"] += len(deltas)
        if self.persist is not None:
            self.persist.append_numbered(pub.epoch, first, deltas)

    def _end_sweep(self, worker: str, seen: set[str], wall: float) -> list[list[Any]]:
        """The dialogs we hold for ``worker`` that its resync did not name ended unseen:
        remove them, and tell the peers ("t", cause ``lost``)."""
        live = self.handover.workers_view(sockets.live_endpoints(self.settings.node.run_dir,
                                                                 "worker"))
        ring = WorkerSet.fixed({**live, worker: live.get(worker, "")})
        now, gone, keys = self.loop.time(), [], self.mirror.keys()
        for key in keys:
            cid, _, ftag = key.partition("\0")
            if key not in seen and ring.owner(cid.encode("utf-8", "surrogateescape")) == worker:
                gone.append(["t", cid, ftag, "lost", "proxy", wall])
        for delta in gone:
            self.mirror.apply(delta, now, wall)
        self.counters["resyncs"] += 1
        log.info("mirror_resynced", worker=worker, dialogs=len(seen), removed=len(gone))
        return gone

    def _publish_keep(self, owner: str, source: str, records: list[list[Any]]) -> None:
        """``handover.py`` rule 6: what we handed ``owner`` of another host, for its host's
        state plane to keep (``updates.py`` rule 7)."""
        for frames in up.pack_keeps(self.publisher.node, owner, source, records):
            try:
                self.pub.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # as in _publish: that host's worker keeper may still have it
                self.counters["pub_dropped"] += 1

    def _publish(self, msg: up.Update | up.Hugz | up.Ingresses) -> None:
        try:
            self.pub.send_multipart(up.pack(msg), zmq.NOBLOCK)
        except zmq.Again:  # PUB never blocks; kept for safety: a subscriber sees the gap
            self.counters["pub_dropped"] += 1

    def heartbeat(self) -> None:
        """Publish a ``HUGZ`` if due, and let every replica check its peer (rules 1, 3)."""
        now = self.loop.time()
        if self.failover is not None:
            self.failover.tick(now)
        self.handover.track(now)
        self.finder.tick(self.handover.workers)
        if self.persist is not None:
            self.persist.sync()
            # not while restored dialogs wait for a decision or the workers: a snapshot of
            # the mirror without them would replace the only copy on disk
            if (self.persist.since_snapshot >= self.settings.stateplane.snapshot_every
                    and self.handover.restoring is None):  # fmt: skip
                self._start_snapshot()
        self.handover.restore_tick(now)
        peer = self.peers[0] if self.peers else None
        if isinstance(self.failover, ClusterFailover) and self.failover.reconcile_until:
            self._recheck_members(now)
        if (isinstance(self.failover, Failover) and self.failover.reconcile_until and peer is not None
                and peer.replica is not None and not peer.replica.syncing):  # fmt: skip
            self.failover.recheck(self.mirror.keys(), peer.replica.table, now)
        hugz = self.publisher.handle_timer(now, self.failover.role if self.failover else "",
                                           self._view())  # fmt: skip
        if hugz is not None:
            self._publish(hugz)
        for peer in self.peers:
            peer.tick()

    def _start_snapshot(self) -> None:
        assert self.persist is not None
        if self._snapshot_step is not None:
            return
        p = self.publisher
        self._snapshot_step = self.persist.snapshot(self.mirror, p.epoch, p.seq, self.loop.time(),
                                                    time.time())  # fmt: skip
        self._t_snapshot = self.loop.time()
        self.loop.call_soon(self._step_snapshot)

    def _step_snapshot(self) -> None:
        """One chunk of the persistence snapshot per loop turn (persist.py rule 2)."""
        step = self._snapshot_step
        if step is None:
            return
        with collector_paused():
            more = next(step, StopIteration) is not StopIteration
        if more:
            self.loop.call_soon(self._step_snapshot)
            return
        self._snapshot_step = None
        self.counters["persist_snapshots"] += 1
        log.info("persistence_snapshot", dialogs=len(self.mirror),
                 seconds=round(self.loop.time() - self._t_snapshot, 3))  # fmt: skip

    def resync(self) -> list[str]:
        """``sipline ctl sync``: a whole snapshot from every peer heard so far."""
        for peer in self.peers:
            peer.resync()
        return [p.run_dir for p in self.peers if p.replica is not None]

    def failback(self) -> list[str]:
        """``sipline ctl failback``: the addresses handed back to the peer (failover.py rule 7)."""
        return self.failover.failback(self.loop.time()) if self.failover is not None else []

    def stats(self) -> dict[str, Any]:
        p, hosts = self.publisher, self.handover.hosts
        return {"node": p.node, "epoch": p.epoch, "seq": p.seq, "owned": len(self.mirror),
                "replicas": {(peer.replica.node if peer.replica else peer.run_dir): peer.stats()
                             for peer in self.peers},
                "failover": self.failover.stats() if self.failover else None,
                "ingresses": self.finder.stats(),
                "hosts": None if hosts is None else sorted(hosts.hosts()),
                **self.counters}  # fmt: skip

    def close(self) -> None:
        if self.failover is not None:
            self.failover.close()
        else:
            self.adopter.close()
        if self.persist is not None:
            self.persist.close()
        for r in self.readers:
            r.close()
        for peer in self.peers:
            peer.close()
        self.finder.close()
        self.pub.close(linger=0)
        if self.zap is not None:
            self.zap.close()
        self.handover.close()
        for ep in self.endpoints:
            sockets.unlink(ep)

