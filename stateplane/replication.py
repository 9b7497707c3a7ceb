"""The state plane's replication adapter: sockets around the sans-IO cores (``docs/stateplane.md``).

Rules:
1. Owner side: a PULL (``stateplane-deltas.ipc``) takes the workers' dialog deltas; each
   batch is applied to the owner's mirror ``DialogTable`` (the snapshot source), numbered by
   the ``Publisher`` and sent on the PUB (``stateplane-pub.ipc``). ``HUGZ`` go out on the
   publisher's schedule whether or not anything changed.
2. Snapshots: a ROUTER (``stateplane-snap.ipc``) answers ``ICANHAZ`` with ``snapshot.serve``,
   one message per answer per loop turn, so heartbeats and deltas keep flowing during a big
   sync. The ROUTER is mandatory-routing: a full pipe to the asker keeps that answer's
   message for later instead of dropping a chunk silently (the asker would otherwise wait
   for its sync timeout), and holds up no other answer. Who may ask, how often, and when an
   asker that stops reading loses its answer: ``stateplane/asks.py``.
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
10. Dialogs follow their Call-ID (docs/stateplane.md): every heartbeat the node's workers are
   read from the run directory. A new one is told ``HANDED`` (nothing more is owed it by the
   state plane; after a restore, once its restored dialogs went out; otherwise once every
   other worker said, by a ``y`` marker after its deltas, that it let go of the dialogs the
   newcomer takes, and those went to it from the mirror). One gone (killed, or
   stopping: it removes its socket file first) has, once its process is gone (so the mirror
   holds its last deltas), the mirror's dialogs it owned handed to their new owners, then
   every live worker is told ``HANDED`` for it (``workers/dialogs/handover.py`` rule 1).
11. On a host of several (``[bus] address`` and ``ingresses``: ``dialogstate/hosts.py``) the
   workers of rule 10 are every host's: ours from the run directory, the others' as our
   workers last told us they see them in the edge's ring (a ``ring`` delta, each entry
   checked against ``[[peer]]`` as the ingress checks a heartbeat, ``TcpHop.worker_key``).
   Owners are decided over that view; what goes to a worker of another host goes over TCP
   with CURVE, expecting that host's key. A worker of another host that joins is handed the
   mirror's dialogs it owns once our workers let go of them, then ``HANDED`` as
   ``stateplane@<node>``; one of ours gone has its dialogs handed to their owners on any
   host, then ``HANDED`` for it to every host's workers. Workers of other hosts that leave
   are their own host's business: we hold none of their dialogs and say nothing for them.
12. A vanished worker's dialogs leave the mirror only for calls whose CDR is not in this
   host's ``[dialogs] cdr_file`` yet: a worker killed between its CDR's ``write(2)`` and its
   ``t`` reaching us left the call ended in the file but live here, and a worker of another
   host cannot read our file (``docs/dialogs.md`` "Exactly once"). Those are ended here
   (``t``, cause ``cdr_written``), never handed on.
13. Ingresses found through the state plane (``conf/discovery.py``): an edge publishes its
   live ingresses' TCP endpoints (``INGRESSES``) every heartbeat; a worker host with
   ``[bus] discover`` takes them only from a configured peer that proved its key, checks
   each, and hands what it accepted to its workers every heartbeat
   (``stateplane/ingresses.py``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from conf import curve, refused, sockets
from conf import envelope as env
from conf.bustcp import TcpHop
from conf.cdrkeys import READ_BACK_BYTES, cdr_key, read_keys
from conf.settings import Settings
from conf.workerset import WorkerSet
from dialogstate.hosts import HostView, host_source, pairs_ring
from dialogstate.sources import STATEPLANE, vanished_source
from dialogstate.table import DialogTable
from stateplane import updates as up
from stateplane.asks import AskGate, idle, stalled
from stateplane.bstar import State
from stateplane.cluster import ClusterFailover
from stateplane.failover import Adopter, Failover, opposite
from stateplane.ingresses import IngressFinder
from stateplane.peer import ERROR_LOG_EVERY, PUB_HWM, SNAP_HWM, Peer, Reader, split_bind
from stateplane.persist import Persistence
from stateplane.replica import Publisher, next_epoch
from stateplane.snapshot import collector_paused, serve

log = structlog.get_logger()

#: the node's workers must be the same set this long before restored dialogs go to them
RESTORE_SETTLE_S = 1.0
#: a restore waits this long at most for as many workers as the last run had
RESTORE_WAIT_S = 10.0
#: the most workers the node had, kept in the persistence directory for the next start
WORKERS_FILE = "workers"
#: a worker that removed its socket file has this long to exit before its dialogs move anyway
LEAVE_WAIT_S = 10.0
#: a joined worker's dialogs move at most this long after it appeared, let go or not
JOIN_WAIT_S = 5.0
#: joiners whose ``y`` markers are kept at once (a worker's markers name live workers)
MAX_JOINERS = 1024
#: a worker whose endpoint is this much older than the state plane ran before it started
SURVIVOR_AGE_S = 1.0
#: how long restored dialogs wait for such workers' resyncs before going to the workers
RESYNC_WAIT_S = 5.0
#: an ICANHAZ is a few numbers and a node name
MAX_ASK_BYTES = 1 << 10
#: retry of answers whose askers' pipes are all full
ANSWER_RETRY_S = 0.005


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
        self.restoring: Restore | None = None
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
                self.restoring = Restore(loaded.records, started=self.loop.time(),
                                         expect_workers=_read_count(self.persist.dir))  # fmt: skip
        self._snapshot_step: Iterator[None] | None = None
        self.publisher = Publisher(settings.node.name, next_epoch(last_epoch, time.time()),
                                   backlog=sp.backlog, heartbeat_s=self.heartbeat_s,
                                   now=self.loop.time())  # fmt: skip
        self.counters: Counter[str] = Counter()
        self.endpoints = [f"ipc://{run_dir}/{name}" for name in
                          (env.STATEPLANE_DELTAS, env.STATEPLANE_PUB, env.STATEPLANE_SNAP)]  # fmt: skip
        pull = _bind(ctx, zmq.PULL, self.endpoints[0], settings.bus.hwm, sockets.MAX_MSG_BYTES)
        self.pub = _bind(ctx, zmq.PUB, self.endpoints[1], PUB_HWM, sockets.MAX_SEND_ONLY_BYTES)
        self.snap = _bind(ctx, zmq.ROUTER, self.endpoints[2], SNAP_HWM, MAX_ASK_BYTES)
        self.snap.setsockopt(zmq.ROUTER_MANDATORY, 1)  # rule 2
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
        self._answers: dict[bytes, _Answer] = {}
        self._asks = AskGate(self.loop.time())
        self._answering: asyncio.Handle | None = None
        #: keys heard from each worker in a resync in progress (workers/dialogs/deltas.py)
        self._sweeps: dict[str, set[str]] = {}
        #: the node's workers as last read (rule 10), those gone since when, and the most seen
        self._workers: dict[str, str] = {}
        self._leaving: dict[str, float] = {}
        self._most_workers = 0
        #: workers joined, until when their hand-over waits; who let go of what they take
        self._joining: dict[str, float] = {}
        self._yields: dict[str, set[str]] = {}
        #: dialogs a joiner created itself before its hand-over (the mirror's copy may lag)
        self._own_new: dict[str, set[str]] = {}
        #: workers that resynced since we started: they hold their own dialogs (a restart
        #: of ours alone), so nothing restored from disk goes to them (``_not_resynced``)
        self._resynced: set[str] = set()
        self._started_wall = time.time()
        self.readers = [Reader(self.loop, pull, self._on_deltas),
                        Reader(self.loop, self.snap, self._on_ask, copy=False)]  # fmt: skip
        #: rule 13: the ingresses we announce and those we learn
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
            self.failover.on_role = self._on_role
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
            self.failover.on_role = self._on_role
        self.adopter = self.failover.adopter if self.failover else Adopter(
            ctx, run_dir, self.counters)  # fmt: skip
        #: rule 11: every host's workers, and the CURVE pipes to the other hosts' ones
        self.hosts: HostView | None = None
        self.hop: TcpHop | None = None
        self._hosts_seen: dict[str, str] = {}
        if settings.bus.address and settings.bus.ingresses and self.keys is not None:
            self.hosts = HostView(settings.node.name)
            self.hop = TcpHop(ctx, self.loop, settings, self.counters, serve=False)
            self.adopter.connect_tcp = self._connect_tcp
        if self.restoring is not None and self.failover is None:
            self._restore_decided(True)

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

    def _on_role(self, addr: str, before: State, after: State) -> None:
        """Persistence vs the peer: our dialogs on disk are the newest copy only when we
        activate without taking over (the peer holds nothing newer of ours: it is dead or new);
        going passive means the peer is active and holds our calls, newer than our disk."""
        if self.restoring is None or self.restoring.decided or addr not in self._own:
            return
        if after is State.ACTIVE and before in (State.PRIMARY, State.BACKUP):
            self._restore_decided(True)
        elif after is State.PASSIVE:
            self._restore_decided(False)

    def _restore_decided(self, restore: bool) -> None:
        assert self.restoring is not None
        r = self.restoring
        r.decided = True
        if not restore:
            log.info("persistence_discarded", dialogs=len(r.records), reason="peer_active")
            self.restoring = None
            # nothing restored is owed to the workers seen meanwhile (rule 10)
            self.adopter.handed(STATEPLANE, self._workers, self.loop.time())
            return
        now, wall = self.loop.time(), time.time()
        self.mirror.restore(r.records, now, wall)  # what peers snapshot from now

    def _restore_tick(self, now: float) -> None:
        """Hand the restored dialogs to the workers once their set has settled."""
        r = self.restoring
        if r is None or not r.decided:
            return
        live = sockets.live_endpoints(self.settings.node.run_dir, "worker")
        workers = frozenset(live)
        if workers != r.workers:
            r.workers, r.since = workers, now
            return
        if not workers or now - r.since < RESTORE_SETTLE_S:
            return
        if len(workers) < r.expect_workers and now - r.started < RESTORE_WAIT_S:
            return  # the last run's workers are still starting: their Call-IDs would move
        waiting = self._survivors(live) - self._resynced
        if waiting and now - r.since < RESYNC_WAIT_S:
            return  # they hold their own dialogs: their resync says which, and is on its way
        records = self._not_resynced(r.records, workers)
        n, lost = self.adopter.hand_over(self.settings.node.name, records, now)
        # after the ADOPTs on each pipe: the workers serve what they held for these calls
        self.adopter.handed(STATEPLANE, live, now)
        log.info("dialogs_restored", dialogs=len(records), workers=n, lost=lost,
                 kept_by_workers=len(r.records) - len(records),
                 waited_s=round(now - r.started, 2))  # fmt: skip
        self.restoring = None

    def _survivors(self, live: dict[str, str]) -> set[str]:
        """Workers whose endpoint is older than us by ``SURVIVOR_AGE_S``: they ran before we
        started (the state plane restarted alone) and will resync (``workers/dialogs/deltas.py``
        rule 4). A worker of a node started together with us is younger; one misjudged
        only delays the restore to ``RESYNC_WAIT_S``."""
        out = set()
        for ident, ep in live.items():
            try:
                born = os.stat(sockets.endpoint_path(ep)).st_mtime
            except OSError:
                continue
            if born < self._started_wall - SURVIVOR_AGE_S:
                out.add(ident)
        return out

    def _not_resynced(self, records: list[list[Any]], workers: frozenset[str]) -> list[list[Any]]:
        """The restored records whose owner did not resync with us: a worker that did ran
        through our restart (the state plane restarted alone, docs/operations.md) and holds
        its dialogs itself, newer than our disk (``workers/dialogs/deltas.py`` rule 4); handing them
        to it again would count them twice. A fresh worker holds none and takes them."""
        if not self._resynced:
            return records
        ring = WorkerSet.fixed(dict.fromkeys(workers, ""))
        return [rec for rec in records
                if ring.owner(str(rec[0]).encode("utf-8", "surrogateescape"))
                not in self._resynced]  # fmt: skip

    def _track_workers(self, now: float) -> None:
        """Rule 10."""
        live = sockets.live_endpoints(self.settings.node.run_dir, "worker")
        view = self._workers_view(live)
        new = {i: ep for i, ep in view.items() if i not in self._hosts_seen}
        for ident in self._workers:
            if ident not in live:
                self._leaving.setdefault(ident, now)
        self._workers, self._hosts_seen = live, view
        if len(live) > self._most_workers:
            self._most_workers = len(live)
            if self.persist is not None:
                _write_count(self.persist.dir, len(live))
        if self.restoring is not None:
            return  # the restore tells them (``_restore_tick``) and covers the gone ones
        for ident in new:
            self._joining[ident] = now + JOIN_WAIT_S
        for ident, until in list(self._joining.items()):
            others = set(live) - {ident}
            if ident in view and not others <= self._yields.get(ident, set()) and now < until:
                continue  # a worker still holds dialogs it takes: their last state is to come
            del self._joining[ident]
            self._yields.pop(ident, None)
            own = self._own_new.pop(ident, set())
            if ident in view:
                self._hand_joiner(ident, view, now, own)
        for ident in [j for j in self._yields if j not in self._joining]:
            del self._yields[ident]  # a marker after its hand-over: nothing waits for it
        for ident in [j for j in self._own_new if j not in self._joining]:
            del self._own_new[ident]
        for ident, since in list(self._leaving.items()):
            pid = sockets.ident_pid(ident)
            if pid is not None and sockets.pid_alive(pid) and now - since < LEAVE_WAIT_S:
                continue  # still finishing what it holds: its last deltas are to come
            del self._leaving[ident]
            self._adopt_vanished(ident, view, now)
        self.adopter.forget(set(view.values()))

    def _note_yield(self, worker: str, delta: Any) -> None:
        if not (isinstance(delta, list) and len(delta) == 3 and isinstance(delta[2], str)
                and delta[1] == worker):  # fmt: skip
            self.counters["bad_delta"] += 1
            return
        if delta[2] not in self._yields and len(self._yields) >= MAX_JOINERS:
            self.counters["yields_dropped"] += 1  # its hand-over waits to its deadline
            return
        self._yields.setdefault(delta[2], set()).add(worker)

    def _hand_joiner(self, ident: str, live: dict[str, str], now: float, own: set[str]) -> None:
        """Rule 10: the mirror's dialogs a joined worker owns go to it, then HANDED; not
        those it created itself meanwhile (``own``: it holds them, newer than our copy)."""
        ring = WorkerSet.fixed(live)
        wall, mine, keys = time.time(), [], self.mirror.keys()
        for key in keys:
            if key in own:
                continue
            if ring.owner(key.partition("\0")[0].encode("utf-8", "surrogateescape")) == ident:
                rec = self.mirror.record(key, now, wall)
                if rec is not None:
                    mine.append(rec)
        # rule 11: a worker of another host hears who hands it over by our node's name
        local = self.hosts is None or self.hosts.is_local(ident)
        source = STATEPLANE if local else host_source(self.settings.node.name)
        if mine:
            _, lost = self.adopter.hand_over(self.settings.node.name, mine, now, True,
                                             workers=live, source=source)  # fmt: skip
            self.counters["worker_dialogs_moved"] += len(mine) - lost
            log.info("worker_dialogs_moved", to=ident, dialogs=len(mine), lost=lost)
        self.adopter.handed(source, {ident: live[ident]}, now)

    def _adopt_vanished(self, ident: str, live: dict[str, str], now: float) -> None:
        """Rule 10: the mirror's dialogs ``ident`` owned go to their owners now."""
        ring = WorkerSet.fixed({**live, ident: ""})
        wall, mine, keys = time.time(), [], self.mirror.keys()
        for key in keys:
            cid = key.partition("\0")[0]
            if ring.owner(cid.encode("utf-8", "surrogateescape")) == ident:
                rec = self.mirror.record(key, now, wall)
                if rec is not None:
                    mine.append(rec)
        mine = self._not_written(ident, mine, now, wall)
        n, lost = self.adopter.hand_over(self.settings.node.name, mine, now, True, workers=live,
                                         source=vanished_source(ident))  # fmt: skip
        self.adopter.handed(vanished_source(ident), live, now)
        self.counters["worker_dialogs_moved"] += len(mine) - lost
        log.info("worker_dialogs_moved", worker=ident, dialogs=len(mine), workers=n, lost=lost)

    def _not_written(self, ident: str, records: list[list[Any]], now: float,
                     wall: float) -> list[list[Any]]:  # fmt: skip
        """Rule 12: ``records`` less those whose CDR our host's file holds, which end here."""
        path = self.settings.dialogs.cdr_file
        written = read_keys(path, READ_BACK_BYTES) if path and records else set()
        if not written:
            return records
        keep, ended = [], []
        for rec in records:
            cid, tag = rec[0], rec[1]
            if isinstance(cid, str) and isinstance(tag, str) and (
                    cdr_key(cid, tag) in written or cid in written):  # fmt: skip
                ended.append(["t", cid, tag, "cdr_written", "proxy", wall])
            else:
                keep.append(rec)
        if ended:
            for delta in ended:
                self.mirror.apply(delta, now, wall)
            updates = self.publisher.publish(ended)
            for upd in updates:
                self._publish(upd)
            if self.persist is not None:
                self.persist.append(updates)
            self.counters["adopt_cdr_written"] += len(ended)
            log.info("dialogs_already_ended", worker=ident, dialogs=len(ended))
        return keep

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

    def _view(self) -> tuple[tuple[str, ...], ...]:
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
        for delta in e.header[1]:
            op = delta[0] if isinstance(delta, list) and delta else None
            if op == "s+":  # a worker's resync begins (workers/dialogs/deltas.py rule 2)
                sweep = self._sweeps[worker] = set()
                if delta[2:] != ["fresh"]:  # a fresh worker holds none of the restored ones
                    self._resynced.add(worker)
                continue
            if op == "y":  # a worker let go of what a joiner takes (workers/dialogs/deltas.py rule 4)
                self._note_yield(worker, delta)
                continue
            if op == "ring":  # the other hosts' workers, as this worker sees them (rule 11)
                self._on_ring(worker, delta)
                continue
            if op == "s-":
                if sweep is not None:
                    good += self._end_sweep(worker, sweep, wall)
                    del self._sweeps[worker]
                    sweep = None
                continue
            try:
                up.check_delta(delta)
                self.mirror.apply(delta, now, wall)
            except (ValueError, TypeError, KeyError, IndexError):
                self.counters["bad_delta"] += 1
                continue
            if sweep is not None and op == "c":
                sweep.add(delta[1] + "\0" + delta[2])
            if op == "c" and (worker in self._joining or worker not in self._workers):
                # its own (and one we have not read joining yet): never handed back to it
                self._own_new.setdefault(worker, set()).add(delta[1] + "\0" + delta[2])
            good.append(delta)
        updates = self.publisher.publish(good)
        for upd in updates:
            self._publish(upd)
        if self.persist is not None:
            self.persist.append(updates)
        self.counters["deltas"] += len(good)

    def _on_ring(self, worker: str, delta: list[Any]) -> None:
        """Rule 11: the view's other hosts, entries ``[[peer]]`` does not allow dropped."""
        ring = pairs_ring(delta[2]) if len(delta) == 3 and delta[1] == worker else None
        if ring is None or self.hosts is None or self.hop is None:
            self.counters["bad_delta"] += 1
            return
        hop = self.hop
        allowed = {i: ep for i, ep in ring.items() if hop.worker_key(i, ep) is not None}
        self.counters["ring_refused"] += len(ring) - len(allowed)
        self.hosts.set_ring(allowed, self.loop.time())

    def _connect_tcp(self, ep: str) -> zmq.Socket[bytes] | None:
        """Rule 11: a CURVE pipe to the worker of another host at ``ep``, or None when the
        view has no worker there that ``[[peer]]`` lets us reach."""
        if self.hop is None or self.hosts is None:
            return None
        for ident, at in self.hosts.view().items():
            key = self.hop.worker_key(ident, ep) if at == ep else None
            if key is not None:
                return self.hop.connect_push(ep, key, 1_000)
        return None

    def _workers_view(self, live: dict[str, str]) -> dict[str, str]:
        """Rule 11: every host's workers, or this host's (``live``) on a host alone."""
        if self.hosts is None:
            return live
        self.hosts.set_local(live)
        return self.hosts.view()

    def _end_sweep(self, worker: str, seen: set[str], wall: float) -> list[list[Any]]:
        """The dialogs we hold for ``worker`` that its resync did not name ended unseen:
        remove them, and tell the peers ("t", cause ``lost``)."""
        live = self._workers_view(sockets.live_endpoints(self.settings.node.run_dir, "worker"))
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
        self._track_workers(now)
        self.finder.tick(self._workers)
        if self.persist is not None:
            self.persist.sync()
            # not while restored dialogs wait for a decision or the workers: a snapshot of
            # the mirror without them would replace the only copy on disk
            if (self.persist.since_snapshot >= self.settings.stateplane.snapshot_every
                    and self.restoring is None):  # fmt: skip
                self._start_snapshot()
        self._restore_tick(now)
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

    # -- snapshots ---------------------------------------------------------------------------

    def _on_ask(self, frames: list[zmq.Frame]) -> None:
        if len(frames) != 3:
            self.counters["bad_ask"] += 1
            return
        try:
            ask = up.unpack([f.bytes for f in frames[1:]])
        except up.UpdateError:
            self.counters["bad_ask"] += 1
            return
        if not isinstance(ask, up.Icanhaz) or ask.node != self.publisher.node:
            self.counters["bad_ask"] += 1
            return
        ident, now = frames[0].bytes, self.loop.time()
        asker = _asker(frames[1], ident)
        if len(self._answers) >= self._asks.max_answers and asker not in self._answers:
            self._drop_idle(now)
        refused = self._asks.admit(now, len(self._answers), asker in self._answers)
        if refused:
            self.counters[f"ask_refused_{refused}"] += 1
            return
        if self._answers.pop(asker, None) is not None:
            self.counters["ask_replaced"] += 1
        answer = serve(ask, self.publisher, self.mirror, now, time.time())
        with collector_paused():
            first = up.pack(next(answer))  # (epoch, seq) and key list read now (serve's rule)
        self._answers[asker] = _Answer(ident, answer, first, now)
        self.counters["snapshots"] += 1
        if self._answering is None:
            self._answering = self.loop.call_soon(self._send_answers)

    def _drop_idle(self, now: float) -> None:
        """``asks.py`` rule 3: the answer whose pipe has been full longest gives its place."""
        asker, a = min(self._answers.items(), key=lambda kv: kv[1].sent_at)
        if idle(a.sent_at, now):
            del self._answers[asker]
            self.counters["asker_idle"] += 1

    def _send_answers(self) -> None:
        """One message of each answer in progress per loop turn; a full pipe holds up only
        its own answer, and past ``asks.STALL_S`` loses it (rule 2)."""
        self._answering = None
        now, moved = self.loop.time(), False
        for asker, a in list(self._answers.items()):
            if a.frames is None:
                with collector_paused():
                    msg = next(a.rest, None)
                    a.frames = None if msg is None else up.pack(msg)
                if a.frames is None:
                    del self._answers[asker]  # answered to the end
                    continue
            try:
                self.snap.send_multipart([a.ident, *a.frames], zmq.NOBLOCK)
            except zmq.Again:  # the asker's pipe is full: keep the message for later
                if stalled(a.sent_at, now):
                    del self._answers[asker]
                    self.counters["asker_stalled"] += 1
                    log.warning("snapshot_asker_stalled", asker=asker.hex()[:32])
                continue
            except zmq.ZMQError:  # the asker is gone (EHOSTUNREACH): drop its answer
                del self._answers[asker]
                self.counters["asker_gone"] += 1
                continue
            a.frames, a.sent_at, moved = None, now, True
        if self._answers:
            self._answering = (self.loop.call_soon(self._send_answers) if moved else
                               self.loop.call_later(ANSWER_RETRY_S, self._send_answers))  # fmt: skip

    def resync(self) -> list[str]:
        """``sipline ctl sync``: a whole snapshot from every peer heard so far."""
        for peer in self.peers:
            peer.resync()
        return [p.run_dir for p in self.peers if p.replica is not None]

    def failback(self) -> list[str]:
        """``sipline ctl failback``: the addresses handed back to the peer (failover.py rule 7)."""
        return self.failover.failback(self.loop.time()) if self.failover is not None else []

    def stats(self) -> dict[str, Any]:
        p = self.publisher
        return {"node": p.node, "epoch": p.epoch, "seq": p.seq, "owned": len(self.mirror),
                "replicas": {(peer.replica.node if peer.replica else peer.run_dir): peer.stats()
                             for peer in self.peers},
                "failover": self.failover.stats() if self.failover else None,
                "ingresses": self.finder.stats(),
                "hosts": None if self.hosts is None else sorted(self.hosts.hosts()),
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
        if self.hop is not None:
            self.hop.close()
        for ep in self.endpoints:
            sockets.unlink(ep)


@dataclass(slots=True)
class Restore:
    """Dialogs loaded from disk at start, waiting for the decision to restore them and for
    the workers to take them."""

    records: list[list[Any]]
    decided: bool = False
    workers: frozenset[str] = frozenset()
    since: float = 0.0
    #: loop time of the load, and how many workers the last run had (``RESTORE_WAIT_S``)
    started: float = 0.0
    expect_workers: int = 0


def _read_count(directory: Path) -> int:
    try:
        return max(0, min(1024, int((directory / WORKERS_FILE).read_text().strip())))
    except (OSError, ValueError):
        return 0


def _write_count(directory: Path, count: int) -> None:
    tmp = directory / (WORKERS_FILE + ".tmp")
    try:
        tmp.write_text(f"{count}\n")
        os.replace(tmp, directory / WORKERS_FILE)
    except OSError as exc:
        log.warning("workers_count_not_written", error=str(exc))


def _asker(frame: zmq.Frame, ident: bytes) -> bytes:
    """``asks.py`` rule 1: the node a CURVE key authenticated, else the connection."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP handler judged this connection (ipc)
        return b"r:" + ident
    return b"u:" + str(user).encode() if user else b"r:" + ident


@dataclass(slots=True)
class _Answer:
    """A snapshot answer in progress: who asked, the rest of it, a message not sent yet, and
    when the asker's pipe last took one."""

    ident: bytes
    rest: Iterator[up.Update | up.Chunk | up.Kthxbai]
    frames: list[bytes] | None
    sent_at: float
