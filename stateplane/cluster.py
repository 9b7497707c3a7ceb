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
from stateplane.failover import Adopter
from stateplane.quorum import Change, Quorum, Reason
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
        #: the pair's split-brain reconcile has no part here (``Replication`` reads these)
        self.reconcile = False
        self.reconcile_until = 0.0

    @property
    def role(self) -> str:
        return encode_roles({a: st.value for a, st in self.states.items()})

    def view(self, now: float) -> tuple[tuple[str, ...], ...]:
        return self.quorum.beat(now)

    def state(self, addr: str) -> State:
        return self.states[addr]

    def peer_hugz(self, msg: Hugz, now: float) -> None:
        if not msg.sees:
            self.counters["hugz_without_view"] += 1  # a pair's node, or an old one
            return
        self._act(self.quorum.receive(msg.node, msg.epoch, msg.sees, msg.holds, msg.knows,
                                       now), now)

    def tick(self, now: float) -> None:
        self._act(self.quorum.handle_timer(now), now)
        self._own_taken(now)

    def failback(self, now: float) -> list[str]:
        """``sipline ctl failback``: quorum rule 7; the addresses handed back."""
        changes = self.quorum.hand_back(now)
        self._act(changes, now)
        return [a for c in changes for a in self.addresses.get(c.member, [])]

    def _own_taken(self, now: float) -> None:
        """Our own address held by another (we restarted): passive, for the restore's sake
        (``Replication._on_role``: our dialogs on disk are older than theirs)."""
        holder = self.quorum.held_by.get(self.node)
        if holder is None or holder[0] == self.node or self.node in self.quorum.holds:
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
        sees, holds, knows = q.beat(now)
        return {"roles": {a: st.value for a, st in self.states.items()}, "sees": sees,
                "holds": holds, "knows": knows, "down": sorted(m for m in q.members if q.is_down(m, now)),
                **self.counters, **q.counters}  # fmt: skip

    def close(self) -> None:
        self.adopter.close()
