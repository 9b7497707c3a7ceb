"""The dialogs the state plane's mirror hands to the node's workers (docs/stateplane.md
"Workers joining and leaving"): to a worker that joins, a vanished worker's dialogs to their
new owners, and the dialogs restored from disk at start. The sockets are the ``Adopter``'s
(``failover.py``); the mirror and its deltas are ``replication.py``'s.

Rules:
1. Dialogs follow their Call-ID (docs/stateplane.md): every heartbeat the node's workers are
   read from the run directory. A new one is told ``HANDED`` (nothing more is owed it by the
   state plane; after a restore, once its restored dialogs went out; otherwise once every
   other worker said, by a ``y`` marker after its deltas, that it let go of the dialogs the
   newcomer takes, and those went to it from the mirror). One gone (killed, or
   stopping: it removes its socket file first) has, once its process is gone (so the mirror
   holds its last deltas), the mirror's dialogs it owned handed to their new owners, then
   every live worker is told ``HANDED`` for it (``workers/dialogs/handover.py`` rule 1).
2. On a host of several (``[bus] address`` and ``ingresses``: ``dialogstate/hosts.py``) the
   workers of rule 1 are every host's: ours from the run directory, the others' as our
   workers last told us they see them in the edge's ring (a ``ring`` delta, each entry
   checked against ``[[peer]]`` as the ingress checks a heartbeat, ``TcpHop.worker_key``).
   Owners are decided over that view; what goes to a worker of another host goes over TCP
   with CURVE, expecting that host's key. A worker of another host that joins is handed the
   mirror's dialogs it owns once our workers let go of them, then ``HANDED`` as
   ``stateplane@<node>``; one of ours gone has its dialogs handed to their owners on any
   host, then ``HANDED`` for it to every host's workers. Workers of other hosts that leave
   are their own host's business: we hold none of their dialogs and say nothing for them.
   One the edge dropped and took back (it missed the edge's heartbeat deadline) is a
   joiner again (``workers/dialogs/owners.py`` rule 7), even when it left and came back
   between two of our heartbeats: our workers saw both at once (a ring change reaches them
   at once) and let go of the calls of its Call-IDs they started meanwhile. Before, such a
   worker was never new to us: those dialogs stayed in our mirror with nobody holding them,
   and the worker, which waits for our ``HANDED``, waited for nothing.
3. A vanished worker's dialogs leave the mirror only for calls whose CDR is not in this
   host's ``[dialogs] cdr_file`` yet: a worker killed between its CDR's ``write(2)`` and its
   ``t`` reaching us left the call ended in the file but live here, and a worker of another
   host cannot read our file (``docs/dialogs.md`` "Exactly once"). Those are ended here
   (``t``, cause ``cdr_written``), never handed on.
4. Dialogs restored from disk (``persist.py``) go to the workers once the decision to restore
   them is made (at once without a failover pair; with one, by our role: ``on_role``) and the
   workers' set has settled (``RESTORE_SETTLE_S``; up to ``RESTORE_WAIT_S`` for as many
   workers as the last run had, up to ``RESYNC_WAIT_S`` for the resyncs of workers that ran
   before us), then every live worker is told ``HANDED``. Records whose owner resynced with
   us stay with it: it ran through our restart and holds its own dialogs, newer than our disk.
5. What goes to a worker of another host leaves our mirror once handed (``t``, cause
   ``moved``): that worker's deltas go to its own host's state plane, which owns the dialog
   from then on. Kept here, the copy would never end (its ``t`` goes there too) and would
   be handed again, as a live call, by the next change of our view that gives its Call-ID
   to a joiner, or to a worker of ours that then vanishes: a call that never ends, or ends
   with a second CDR.
6. Until the receiving worker's own ``c`` deltas reach its host's state plane, a dialog
   handed across hosts exists in that worker alone: killed before (the ``ADOPT`` unread,
   or its deltas not yet sent) it took the call's dialog with it, and the call ended
   without a CDR. So the records also go to another worker of that host (an ``ADOPT``
   naming the owner as its fifth element, ``dialogstate/hosts.py`` rule 5), which passes
   them to its state plane (``["k", worker, owner, records]``). That state plane keeps
   each until the owner's own ``c`` for it arrives (``KEEP_S`` at most) and, if the owner
   vanishes first, hands the kept ones with the owner's dialogs from the mirror (at once if
   they arrive after). A copy of a call that ended meanwhile is ended by rule 3 (the
   owner wrote its CDR in this host's file). When our PUB is a CURVE server
   (``[stateplane] bind`` with ``[curve]``), every such hand-over is also published on it
   (``updates.Keep``): a host that replicates us (its ``[stateplane] peers`` names our
   ``bind``, so its state plane holds a SUB that talks only to our key) keeps it itself,
   with no worker in the way, so a host with one worker is covered, and so is an owner
   that dies together with its keeper (rule 8). A copy that comes both ways, or again, is
   handed on once. Without that channel a host with one worker has no keeper
   (``keep_none``).
7. A gone worker's dialogs move at the heartbeat after the one that first saw its process
   gone, once the deltas pipe has been read to its end: the process wrote its last deltas
   before it ended, but our reader may not have had them yet when its end was seen, and a
   ``c`` read after the hand-over would stay in the mirror with nobody holding its call (an
   ``a`` would move an answered call as ringing). A worker that ended has nothing more to
   send; a heartbeat (0.25 s) is the time our pipe's I/O thread has to take in what it sent.
8. What another host's state plane publishes for us to keep (``note_host_keep``) is taken
   only from a peer whose key the SUB proved and whose ``[[peer]]`` has a ``bus_address``
   (a host allowed to hand our workers dialogs), and only the records
   ``dialogstate/hosts.py`` rule 5 lets its owner, a worker of ours (in the run directory
   now, or at our last heartbeat: one dead since is not handed yet), take from that peer;
   the rest is counted (``keep_refused``) and logged (``host_keep_refused``). A copy for a
   worker of another host is not ours to judge (``keep_not_ours``). An owner that vanished
   already (the peer's view still had it when it handed it those dialogs) is judged as the
   view was with it, and what passes goes on at once to its dialogs' new owners, as its
   other dialogs went: without this, what the peer sent a worker already dead was lost.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from conf import sockets
from conf.bustcp import TcpHop
from conf.cdrkeys import READ_BACK_BYTES, cdr_key, read_keys
from conf.refused import RefusalLog
from conf.settings import Settings
from conf.workerset import WorkerSet
from dialogstate.hosts import HostView, host_of, host_source, pairs_ring
from dialogstate.sources import STATEPLANE, vanished_source
from dialogstate.table import DialogTable
from stateplane import updates as up
from stateplane.bstar import State
from stateplane.failover import Adopter

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

#: how long a copy kept for a worker of ours waits for that worker's own "c" (rule 6):
#: milliseconds normally, so only a worker that stalls this long and then dies loses it
KEEP_S = 30.0
#: records kept for our workers at most (rule 6); past it the newest are not kept
MAX_KEPT = 65_536

#: applies, numbers, publishes and journals deltas the state plane itself makes (rule 3)
Announce = Callable[[list[list[Any]]], None]


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


class Handover:
    """Rules 1-4 for one state plane: the workers it sees, and what its mirror owes them."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings,
                 loop: asyncio.AbstractEventLoop, mirror: DialogTable, adopter: Adopter,
                 counters: Counter[str], announce: Announce, *, own: set[str],
                 restoring: Restore | None = None, persist_dir: Path | None = None,
                 curve: bool = False) -> None:  # fmt: skip
        """``own``: our own virtual addresses, whose role decides a restore; ``curve``: this
        node has CURVE keys (rule 2 needs them)."""
        self.settings, self.loop, self.mirror, self.adopter = settings, loop, mirror, adopter
        self.counters, self._announce, self._own = counters, announce, own
        self.restoring, self._persist_dir = restoring, persist_dir
        #: the node's workers as last read (rule 1), those gone since when, and the most seen
        self.workers: dict[str, str] = {}
        self._leaving: dict[str, float] = {}
        #: rule 7: leaving workers whose process was first seen gone, when; and what reads
        #: the workers' deltas pipe to its end (set by the replication adapter)
        self._ended: dict[str, float] = {}
        self.drain: Callable[[], None] = lambda: None
        self._most_workers = 0
        #: workers joined, until when their hand-over waits; who let go of what they take
        self._joining: dict[str, float] = {}
        self._yields: dict[str, set[str]] = {}
        #: dialogs a joiner created itself before its hand-over (the mirror's copy may lag)
        self._own_new: dict[str, set[str]] = {}
        #: rule 6: copies of what other hosts handed our workers, by worker, by key, until
        #: that worker's own "c" for the key reaches us; workers whose dialogs went, and when
        self._kept: dict[str, dict[str, tuple[list[Any], float]]] = {}
        self._n_kept = 0
        self._vanished: dict[str, tuple[float, set[str]]] = {}
        #: rule 6: publishes a copy on our PUB for the host that replicates us (set by the
        #: replication adapter when the PUB is a CURVE server); rule 8's refusals
        self.publish_keep: Callable[[str, str, list[list[Any]]], None] | None = None
        self._keep_refused = RefusalLog("host_keep_refused")
        #: workers that resynced since we started: they hold their own dialogs (a restart
        #: of ours alone), so nothing restored from disk goes to them (``_not_resynced``)
        self.resynced: set[str] = set()
        self._started_wall = time.time()
        #: rule 2: every host's workers, and the CURVE pipes to the other hosts' ones
        self.hosts: HostView | None = None
        self.hop: TcpHop | None = None
        self._hosts_seen: dict[str, str] = {}
        #: rule 2: workers of other hosts a ring delta took out of the view since our last
        #: heartbeat (one back by the next is a joiner all the same)
        self._ring_left: set[str] = set()
        if settings.bus.address and settings.bus.ingresses and curve:
            self.hosts = HostView(settings.node.name)
            self.hop = TcpHop(ctx, loop, settings, counters, serve=False)
            adopter.connect_tcp = self._connect_tcp

    # -- restored dialogs (rule 4) -----------------------------------------------------------

    def on_role(self, addr: str, before: State, after: State) -> None:
        """Persistence vs the peer: our dialogs on disk are the newest copy only when we
        activate without taking over (the peer holds nothing newer of ours: it is dead or new);
        going passive means the peer is active and holds our calls, newer than our disk."""
        if self.restoring is None or self.restoring.decided or addr not in self._own:
            return
        if after is State.ACTIVE and before in (State.PRIMARY, State.BACKUP):
            self.restore_decided(True)
        elif after is State.PASSIVE:
            self.restore_decided(False)

    def restore_decided(self, restore: bool) -> None:
        assert self.restoring is not None
        r = self.restoring
        r.decided = True
        if not restore:
            log.info("persistence_discarded", dialogs=len(r.records), reason="peer_active")
            self.restoring = None
            # nothing restored is owed to the workers seen meanwhile (rule 1)
            self.adopter.handed(STATEPLANE, self.workers, self.loop.time())
            return
        now, wall = self.loop.time(), time.time()
        self.mirror.restore(r.records, now, wall)  # what peers snapshot from now

    def restore_tick(self, now: float) -> None:
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
        waiting = self._survivors(live) - self.resynced
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
        if not self.resynced:
            return records
        ring = WorkerSet.fixed(dict.fromkeys(workers, ""))
        return [rec for rec in records
                if ring.owner(str(rec[0]).encode("utf-8", "surrogateescape"))
                not in self.resynced]  # fmt: skip

    # -- workers joining and leaving (rules 1-3) ---------------------------------------------

    def track(self, now: float) -> None:
        """Rule 1."""
        live = sockets.live_endpoints(self.settings.node.run_dir, "worker")
        view = self.workers_view(live)
        new = {i: ep for i, ep in view.items()
               if i not in self._hosts_seen or i in self._ring_left}  # fmt: skip
        self._ring_left.clear()
        for ident in self.workers:
            if ident not in live:
                self._leaving.setdefault(ident, now)
        self.workers, self._hosts_seen = live, view
        if len(live) > self._most_workers:
            self._most_workers = len(live)
            if self._persist_dir is not None:
                _write_count(self._persist_dir, len(live))
        if self.restoring is not None:
            return  # the restore tells them (``restore_tick``) and covers the gone ones
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
        self._expire_kept(now)
        for ident, since in list(self._leaving.items()):
            pid = sockets.ident_pid(ident)
            if pid is not None and sockets.pid_alive(pid) and now - since < LEAVE_WAIT_S:
                continue  # still finishing what it holds: its last deltas are to come
            if self._ended.setdefault(ident, now) == now:
                continue  # rule 7: what it sent last may not have been read yet
            del self._leaving[ident], self._ended[ident]
            self.drain()
            self._adopt_vanished(ident, view, now)
        self.adopter.forget(set(view.values()))

    def created(self, worker: str, key: str) -> None:
        """A ``c`` delta of ``worker``: a joiner's own (and one we have not read joining yet)
        is never handed back to it; a copy kept for it (rule 6) is not needed any more."""
        if worker in self._joining or worker not in self.workers:
            self._own_new.setdefault(worker, set()).add(key)
        kept = self._kept.get(worker)
        if kept is not None and kept.pop(key, None) is not None:
            self._n_kept -= 1

    def note_keep(self, worker: str, delta: Any, now: float) -> None:
        """Rule 6: ``["k", worker, owner, [record, ...]]``, what another host handed our
        worker ``owner``, which ``worker`` was sent to keep; handed on at once if ``owner``
        is gone already (its dialogs went without these)."""
        if not (isinstance(delta, list) and len(delta) == 4 and delta[1] == worker
                and isinstance(delta[2], str) and isinstance(delta[3], list)):  # fmt: skip
            self.counters["bad_delta"] += 1
            return
        owner, records = delta[2], []
        for rec in delta[3]:
            try:
                records.append(up.check_record(rec))
            except up.UpdateError:
                self.counters["bad_delta"] += 1
        self._keep(owner, records, now)

    def note_host_keep(self, peer: str | None, msg: up.Keep, now: float) -> None:
        """Rule 8: ``msg`` from the state plane of host ``peer`` (the name its key proved;
        None: no key proved it)."""
        hosts, n = self.hosts, len(msg.records)
        if host_of(msg.owner) != self.settings.node.name:
            self.counters["keep_not_ours"] += n  # the host that owner is on keeps it
            return
        allowed = peer is not None and self.hop is not None and self.hop.key_of(peer) is not None
        records: list[list[Any]] = []
        if allowed and hosts is not None and peer is not None:
            # our workers now (one may have started since our heartbeat) and as last read
            # (one that died since is not handed yet: what it keeps goes with its dialogs)
            live = sockets.live_endpoints(self.settings.node.run_dir, "worker")
            self.workers_view({**live, **self.workers})
            header = [msg.node, msg.records, True, msg.source, msg.owner]
            # an owner of ours that vanished since is judged as it was: what it took goes on
            gone = msg.owner if msg.owner in self._vanished else ""
            records = hosts.check_adopt(peer, header, now, gone)
        if len(records) < n:
            self.counters["keep_refused"] += n - len(records)
            self._keep_refused.note(now, peer=peer, owner=msg.owner[:120],
                                    source=msg.source[:120], records=n - len(records))  # fmt: skip
        if records:
            self.counters["kept_from_hosts"] += len(records)
            self._keep(msg.owner, records, now)

    def _keep(self, owner: str, records: list[list[Any]], now: float) -> None:
        """Rule 6: ``records`` checked, kept for ``owner`` until its own "c" for each."""
        if owner in self._vanished:
            handed = self._vanished[owner][1]
            late = [r for r in records if r[0] + "\0" + r[1] not in self.mirror
                    and r[0] + "\0" + r[1] not in handed]  # fmt: skip
            if late:  # each once: a copy may come by a worker and by our peer's PUB
                handed.update(r[0] + "\0" + r[1] for r in late)
                self._hand_vanished(owner, late, self.workers_view(self.workers), now, time.time())
            return
        kept = self._kept.setdefault(owner, {})
        for rec in records:
            key = rec[0] + "\0" + rec[1]
            if key in self.mirror or key in kept:
                continue  # the owner's own "c" came first: its deltas are ours already
            if self._n_kept >= MAX_KEPT:
                self.counters["keep_dropped"] += 1
                continue
            kept[key] = (rec, now)
            self._n_kept += 1
        self.counters["kept"] += len(records)

    def _expire_kept(self, now: float) -> None:
        """Rule 6: copies older than ``KEEP_S`` go, and vanished workers are forgotten then."""
        for owner in list(self._kept):
            kept = self._kept[owner]
            for key in [k for k, (_, at) in kept.items() if now - at > KEEP_S]:
                del kept[key]
                self._n_kept -= 1
            if not kept:
                del self._kept[owner]
        for ident in [i for i, (at, _) in self._vanished.items() if now - at > KEEP_S]:
            del self._vanished[ident]

    def note_yield(self, worker: str, delta: Any) -> None:
        """A ``y`` marker: ``worker`` let go of what a joiner takes (rule 1)."""
        if not (isinstance(delta, list) and len(delta) == 3 and isinstance(delta[2], str)
                and delta[1] == worker):  # fmt: skip
            self.counters["bad_delta"] += 1
            return
        if delta[2] not in self._yields and len(self._yields) >= MAX_JOINERS:
            self.counters["yields_dropped"] += 1  # its hand-over waits to its deadline
            return
        self._yields.setdefault(delta[2], set()).add(worker)

    def _hand_joiner(self, ident: str, live: dict[str, str], now: float, own: set[str]) -> None:
        """Rule 1: the mirror's dialogs a joined worker owns go to it, then HANDED; not
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
        # rule 2: a worker of another host hears who hands it over by our node's name
        local = self.hosts is None or self.hosts.is_local(ident)
        source = STATEPLANE if local else host_source(self.settings.node.name)
        if mine:
            _, lost = self.adopter.hand_over(self.settings.node.name, mine, now, True,
                                             workers=live, source=source)  # fmt: skip
            self.counters["worker_dialogs_moved"] += len(mine) - lost
            log.info("worker_dialogs_moved", to=ident, dialogs=len(mine), lost=lost)
            self._moved_away(mine, live, now, wall, source)
        self.adopter.handed(source, {ident: live[ident]}, now)

    def _adopt_vanished(self, ident: str, live: dict[str, str], now: float) -> None:
        """Rule 1: the mirror's dialogs ``ident`` owned go to their owners now."""
        ring = WorkerSet.fixed({**live, ident: ""})
        wall, mine, keys = time.time(), [], self.mirror.keys()
        for key in keys:
            cid = key.partition("\0")[0]
            if ring.owner(cid.encode("utf-8", "surrogateescape")) == ident:
                rec = self.mirror.record(key, now, wall)
                if rec is not None:
                    mine.append(rec)
        # rule 6: what another host handed it whose "c" never reached us
        held = set(keys)
        kept = self._kept.pop(ident, {})
        self._n_kept -= len(kept)
        mine += [rec for key, (rec, _) in kept.items() if key not in held]
        self._vanished[ident] = (now, {str(r[0]) + "\0" + str(r[1]) for r in mine})
        self._hand_vanished(ident, mine, live, now, wall)

    def _hand_vanished(self, ident: str, mine: list[list[Any]], live: dict[str, str],
                       now: float, wall: float) -> None:  # fmt: skip
        mine = self._not_written(ident, mine, now, wall)
        n, lost = self.adopter.hand_over(self.settings.node.name, mine, now, True, workers=live,
                                         source=vanished_source(ident))  # fmt: skip
        self._moved_away(mine, live, now, wall, vanished_source(ident))
        self.adopter.handed(vanished_source(ident), live, now)
        self.counters["worker_dialogs_moved"] += len(mine) - lost
        log.info("worker_dialogs_moved", worker=ident, dialogs=len(mine), workers=n, lost=lost)

    def _moved_away(self, records: list[list[Any]], live: dict[str, str], now: float,
                    wall: float, source: str) -> None:  # fmt: skip
        """Rules 5-6: the records just handed to a worker of another host go to another
        worker of that host too, to keep, and leave our mirror (``t``, cause ``moved``):
        their deltas go to that host's state plane from now on, so ours would be a copy that
        never ends, handed again as a live call (a second CDR) whenever our view next gives
        its Call-ID to a worker of ours."""
        if self.hosts is None:
            return
        ring, hosts = WorkerSet.fixed(live), self.hosts
        gone: list[list[Any]] = []
        by_owner: dict[str, list[list[Any]]] = {}
        for rec in records:
            owner = ring.owner(str(rec[0]).encode("utf-8", "surrogateescape"))
            if owner is not None and not hosts.is_local(owner):
                gone.append(["t", rec[0], rec[1], "moved", "proxy", wall])
                by_owner.setdefault(owner, []).append(rec)
        for owner, recs in by_owner.items():
            host = host_of(owner)
            keepers = sorted(i for i in live if i != owner and host_of(i) == host)
            if keepers:
                self.adopter.keep(self.settings.node.name, recs, now, source, owner,
                                  live[keepers[0]])  # fmt: skip
            if self.publish_keep is not None:  # that host's state plane, if it replicates us
                self.publish_keep(owner, source, recs)
                self.counters["keep_published"] += len(recs)
            elif not keepers:  # nothing keeps them while they travel
                self.counters["keep_none"] += len(recs)
        if gone:
            for delta in gone:
                self.mirror.apply(delta, now, wall)
            self._announce(gone)
            self.counters["moved_to_hosts"] += len(gone)

    def _not_written(self, ident: str, records: list[list[Any]], now: float,
                     wall: float) -> list[list[Any]]:  # fmt: skip
        """Rule 3: ``records`` less those whose CDR our host's file holds, which end here."""
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
            self._announce(ended)
            self.counters["adopt_cdr_written"] += len(ended)
            log.info("dialogs_already_ended", worker=ident, dialogs=len(ended))
        return keep

    # -- every host's workers (rule 2) -------------------------------------------------------

    def on_ring(self, worker: str, delta: list[Any]) -> None:
        """Rule 2: the view's other hosts, entries ``[[peer]]`` does not allow dropped."""
        ring = pairs_ring(delta[2]) if len(delta) == 3 and delta[1] == worker else None
        if ring is None or self.hosts is None or self.hop is None:
            self.counters["bad_delta"] += 1
            return
        hop = self.hop
        allowed = {i: ep for i, ep in ring.items() if hop.worker_key(i, ep) is not None}
        self.counters["ring_refused"] += len(ring) - len(allowed)
        before = self.hosts.remote()
        self.hosts.set_ring(allowed, self.loop.time())
        # out and back between two of our heartbeats: our workers let go of what it takes
        # (their "y" markers follow), so it is handed that, and HANDED, as any joiner
        self._ring_left.update(i for i in before if i not in self.hosts.remote())

    def _connect_tcp(self, ep: str) -> zmq.Socket[bytes] | None:
        """Rule 2: a CURVE pipe to the worker of another host at ``ep``, or None when the
        view has no worker there that ``[[peer]]`` lets us reach."""
        if self.hop is None or self.hosts is None:
            return None
        for ident, at in self.hosts.view().items():
            key = self.hop.worker_key(ident, ep) if at == ep else None
            if key is not None:
                return self.hop.connect_push(ep, key, 1_000)
        return None

    def workers_view(self, live: dict[str, str]) -> dict[str, str]:
        """Rule 2: every host's workers, or this host's (``live``) on a host alone."""
        if self.hosts is None:
            return live
        self.hosts.set_local(live)
        return self.hosts.view()

    def close(self) -> None:
        if self.hop is not None:
            self.hop.close()


def read_count(directory: Path) -> int:
    """How many workers the last run had at most (``RESTORE_WAIT_S``)."""
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
