"""Failover among N >= 3 nodes in the state plane: the quorum's decisions acted on
(``docs/failover.md`` "Three nodes or more").

Rules:
1. ``stateplane/quorum.py`` decides which members' addresses this node holds; this module
   turns its changes into roles per virtual address (``active`` for a held member's
   addresses, ``passive`` for the rest), published in every ``HUGZ`` with the view
   (``sees``, ``holds``) the other members vote with. A change publishes a ``HUGZ`` at once:
   the ingresses bind or release on it (``ingress/virtual.py``), as in a pair.
2. A take with a dead holder adopts that holder's whole replica (its calls, including those
   it had taken over itself), emptied once: the other addresses it held find it empty. A
   take handed back adopts from the previous holder's replica only that member's
   addresses' dialogs (``failover.py`` rule 7). Adoption goes through the pair's
   ``Adopter`` (owner by Call-ID hash, bounded retries).
3. A release by failback tells the workers to hand back the dialogs reached on those
   addresses (``RELEASE``, no CDR); a release for lack of quorum or a conflict only lets the
   address go (the workers keep their dialogs: the limits in ``docs/failover.md``).
4. Heartbeats reach here only from the ``[[peer]]`` that may send them (``peer.py`` rule 8);
   names not in ``members`` are dropped by the quorum (its rule 9).
5. After a fence (quorum rule 1: cut off, or paused), an address we let go that another node
   now holds was taken over with our calls: once quorate again, every heartbeat for
   ``RECONCILE_WINDOW_S`` the dialogs our workers hold that the holder's replica holds too
   are let go (``RELEASE`` by key, no CDR), as the pair's split-brain loser does
   (``failover.py`` rule 3), so each call ends once, on the holder.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from dialogstate.table import DialogTable
from stateplane.bstar import State, encode_roles
from stateplane.failover import RECONCILE_WINDOW_S, Adopter
from stateplane.quorum import Change, Quorum, Reason, View
from stateplane.updates import Hugz

log = structlog.get_logger()


class ClusterFailover:
    """Our member of the cluster: the quorum fed with every member's ``HUGZ``, and its
    decisions carried out (rules 1-3). Offers what ``Replication`` asks of a ``Failover``."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: str, members: list[str],
                 addresses: dict[str, list[str]], node: str, epoch: int, heartbeat_s: float,
                 now: float, publish_hugz: Callable[[], None],
                 replica_of: Callable[[str], DialogTable | None]) -> None:  # fmt: skip
        self.node = node
        self.quorum = Quorum(members, node, epoch, heartbeat_s=heartbeat_s, now=now)
        #: each member's virtual addresses that we listen on (ours: our own listeners)
        self.addresses = addresses
        self.states = {a: State.PRIMARY if m == node else State.BACKUP
                       for m, addrs in addresses.items() for a in addrs}  # fmt: skip
        self.publish_hugz = publish_hugz
        self.replica_of = replica_of
        self.counters: Counter[str] = Counter()
        self.adopter = Adopter(ctx, run_dir, self.counters)
        self.on_role: Callable[[str, State, State], None] = lambda addr, before, after: None
        #: the pair's first reconcile has no part here (``Replication`` reads it)
        self.reconcile = False
        #: rule 5: until when, against whom, and the keys let go so far
        self.reconcile_until = 0.0
        self.reconcile_with: set[str] = set()
        self._let_go: set[str] = set()

    @property
    def role(self) -> str:
        return encode_roles({a: st.value for a, st in self.states.items()})

    def view(self, now: float) -> View:
        return self.quorum.beat(now)

    def state(self, addr: str) -> State:
        return self.states[addr]

    def peer_hugz(self, msg: Hugz, now: float) -> None:
        if not msg.sees:
            self.counters["hugz_without_view"] += 1  # a pair's node, or an old one
            return
        self._act(self.quorum.receive(msg.node, msg.epoch, msg.sees, msg.holds, msg.knows,
                                       now, msg.claims), now)

    def tick(self, now: float) -> None:
        self._act(self.quorum.handle_timer(now), now)
        self._own_taken(now)
        self._fenced_taken(now)

    def _fenced_taken(self, now: float) -> None:
        """Rule 5: the addresses we fenced that another holds now: reconcile with it."""
        q = self.quorum
        if q.quorate_since is None:
            return
        for x in list(q.fenced):
            claim = q.held_by.get(x)
            holder = q.holder(x, now)  # a live holder: a dead one's replica goes to its taker
            if x in q.holds or claim is None:
                q.fenced.discard(x)  # ours again (regained), or nobody took it
            elif holder is not None and holder != self.node:
                q.fenced.discard(x)
                self.reconcile_with.add(holder)
                if not self.reconcile_until:
                    self._let_go = set()
                self.reconcile_until = now + RECONCILE_WINDOW_S
                log.warning("cluster_fenced_taken", member=x, holder=holder)

    def recheck(self, owned: list[str], holder: str, theirs: DialogTable, now: float) -> int:
        """Rule 5: let go of the dialogs ``holder`` holds too; past the window, stop."""
        if now >= self.reconcile_until:
            self.reconcile_until, self.reconcile_with, self._let_go = 0.0, set(), set()
            return 0
        keys = [k for k in owned if k in theirs and k not in self._let_go]
        if keys:
            self.adopter.release(self.node, [], now, keys)
            self._let_go.update(keys)
            self.counters["reconciled"] += len(keys)
            log.warning("split_brain_reconciled", dialogs=len(keys), total=len(self._let_go),
                        peer=holder)  # fmt: skip
        return len(keys)

    def failback(self, now: float) -> list[str]:
        """``sipline ctl failback``: quorum rule 7; the addresses handed back."""
        changes = self.quorum.hand_back(now)
        self._act(changes, now)
        return [a for c in changes for a in self.addresses.get(c.member, [])]

    def _own_taken(self, now: float) -> None:
        """Our own address held by another (we restarted): passive, for the restore's sake
        (``Handover.on_role``: our dialogs on disk are older than theirs)."""
        claim = self.quorum.held_by.get(self.node)
        if claim is None or claim.holder == self.node or self.node in self.quorum.holds:
            return
        for addr in self.addresses.get(self.node, []):
            if self.states[addr] is State.PRIMARY:
                self._set(addr, State.PASSIVE)

    def _act(self, changes: list[Change], now: float) -> None:
        if not changes:
            return
        released = []
        for c in changes:
            log.warning("cluster_role", member=c.member, take=c.take, reason=c.reason.value,
                        source=c.source, whole=c.whole, holds=sorted(self.quorum.holds))  # fmt: skip
            for addr in self.addresses.get(c.member, []):
                self._set(addr, State.ACTIVE if c.take else State.PASSIVE)
            if c.take and c.source is not None:
                self._adopt(c, now)
            if c.reason is Reason.FAILBACK:
                released += self.addresses.get(c.member, [])
        self.publish_hugz()  # rule 1: before the workers' "t" deltas of a failback
        if released:
            self.counters["failbacks"] += len(released)
            self.adopter.release(self.node, released, now)

    def _set(self, addr: str, after: State) -> None:
        before = self.states[addr]
        if before is not after:
            self.states[addr] = after
            self.on_role(addr, before, after)

    def _adopt(self, c: Change, now: float) -> None:
        """Rule 2."""
        assert c.source is not None
        table = self.replica_of(c.source)
        if table is None or not len(table):
            log.warning("failover_takeover", member=c.member, source=c.source, dialogs=0)
            return
        wall = time.time()
        if c.whole:
            records = table.snapshot(now, wall)
            table.restore([], now, wall)
        else:
            keys = [k for a in self.addresses.get(c.member, []) for k in table.keys_on(a)]
            records = [r for k in keys if (r := table.record(k, now, wall)) is not None]
            for r in records:
                table.apply(["t", r[0], r[1]], now, wall)
        workers, lost = self.adopter.hand_over(c.source, records, now, not c.whole)
        log.warning("failover_takeover", member=c.member, source=c.source, dialogs=len(records),
                    workers=workers, whole=c.whole, lost=lost)  # fmt: skip

    def stats(self) -> dict[str, Any]:
        q = self.quorum
        now = self.adopter.loop.time()
        sees, holds, knows, _ = q.beat(now)
        return {"roles": {a: st.value for a, st in self.states.items()}, "sees": sees,
                "holds": holds, "knows": knows, "down": sorted(m for m in q.members if q.is_down(m, now)),
                "claims": {x: list(c) for x, c in q.held_by.items()},
                **self.counters, **q.counters}  # fmt: skip

    def close(self) -> None:
        self.adopter.close()
