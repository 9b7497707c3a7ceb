"""Failover of an active/backup pair in the state plane: Binary Star on the heartbeats, and
the takeover of the peer's replicated dialogs (``docs/failover.md``).

Rules:
1. Each virtual address has its own Binary Star (``stateplane/bstar.py``): in an
   active/backup pair one address, primary on one node and backup on the other; in
   active/active each node is primary for its own address and backup (``standby``) for the
   peer's. The states travel in every ``HUGZ`` we publish as ``address=state,...``; the
   peer's ``HUGZ`` feed our machine of the same address, and silence expires the peer in
   every one of them (``handle_timer`` every heartbeat). A change of role publishes a ``HUGZ`` at once: our ingresses bind or release
   the virtual listeners on it (``ingress/virtual.py``), so nothing waits for the next beat.
2. Takeover (passive -> active: the peer's heartbeats stopped, or it restarted and says
   primary or backup again, having lost its calls): every dialog of the peer's replica
   is handed to the worker that owns its Call-ID, by the same rendezvous hash the ingresses
   use over the same live workers (``conf/workerset.py``), in ``ADOPT`` envelopes of at most
   ``ADOPT_CHUNK`` records. The worker makes them its own (``DialogTable.adopt``): timers
   re-armed with the time they had left, profiles counted, "c" deltas published as ours.
   The replica is emptied: those dialogs are ours now, and the peer, when it comes back,
   gets them from us by snapshot.
3. Split brain (two actives after a partition heals): logged at error level; the side with
   the lower (epoch, node) yields (goes passive, releases the address) and resnapshots from
   the winner. Once that snapshot is in, the loser's workers let go of every dialog the
   winner holds too (``RELEASE`` by key: the winner took them over while the loser was cut
   off), so each call's lifetime, BYEs and CDR happen once, on the winner; the comparison is
   made again every heartbeat for ``RECONCILE_WINDOW_S``, as the winner's adoptions may
   reach its replica after the snapshot did. Two primaries or
   two backups: ``failover_fault`` is logged, nothing moves.
4. A peer heartbeat with no role (the peer is not configured as a pair) is a fault too:
   logged once, ignored.
5. Nothing blocks: an ``ADOPT`` the worker's pipe cannot take now is retried from the loop
   until ``ADOPT_RETRY_S``; past it the dialogs are lost and counted (a worker that takes no
   input for seconds during a takeover has failed too).
6. A ``standby`` address (the peer's, in active/active) is taken only over the peer: a node
   that starts alone does not serve it (so the peer gets it when it starts). Once taken over,
   the address stays with us until we stop or an operator asks for the failback (Binary
   Star's rule against flapping); the restarted peer waits passive for it.
7. Failback (``sipline ctl failback``, ``bstar.py`` rule 6): every address we hold as its
   configured backup, with the peer alive, goes back to backup: our HUGZ says so first, then
   every worker is told to hand back the dialogs reached on those addresses (``RELEASE``:
   removed without a CDR, a "t" delta each, timers and profile counts with them). The peer
   activates on that HUGZ and, we being alive (the same epoch), adopts from its replica of us
   only the dialogs of that address (rule 2 takes them all when the peer expired or came
   back with a new epoch, its calls lost). Our PUB carries the HUGZ before the workers' "t"
   deltas, so the peer adopts before it hears them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from conf import envelope as env
from conf import sockets
from conf.workerset import WorkerSet
from dialogstate.table import DialogTable
from stateplane.bstar import (
    BinaryStar,
    Effect,
    Input,
    State,
    Transition,
    decode_roles,
    encode_roles,
)
from stateplane.updates import Hugz

log = structlog.get_logger()

#: records per ADOPT envelope (~0.5 KB each)
ADOPT_CHUNK = 500
#: how long a worker pipe that cannot take an ADOPT is retried
ADOPT_RETRY_S = 5.0


def by_owner(records: list[list[Any]], workers: dict[str, str]) -> dict[str, list[list[Any]]]:
    """Rule 2: the records each live worker owns, by the ingresses' hash of the Call-ID."""
    ring = WorkerSet.fixed(workers)
    out: dict[str, list[list[Any]]] = {}
    for rec in records:
        owner = ring.owner(str(rec[0]).encode("utf-8", "surrogateescape"))
        if owner is not None:
            out.setdefault(owner, []).append(rec)
    return out


def opposite(role: str) -> str:
    return "backup" if role == "primary" else "primary"


#: how long after a lost split brain's first reconcile the winner's replica is compared again
#: (rule 3): its workers' adoptions reach it within a few heartbeats even on a loaded box
RECONCILE_WINDOW_S = 10.0

class Failover:
    """Our end of the pair: one Binary Star per virtual address (rule 1); their states go
    into our heartbeats, and the peer's heartbeats feed them, address by address."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: str,
                 roles: dict[str, str], node: str, epoch: int, heartbeat_s: float, now: float,
                 publish_hugz: Callable[[], None], standby: frozenset[str] = frozenset()) -> None:  # fmt: skip
        self.ctx, self.run_dir, self.node = ctx, run_dir, node
        self.standby = standby
        self.stars = {addr: BinaryStar(State(role), node, epoch, heartbeat_s=heartbeat_s,
                                       now=now) for addr, role in roles.items()}  # fmt: skip
        self.publish_hugz = publish_hugz
        self.counters: Counter[str] = Counter()
        self.last_peer_hugz = now
        #: the peer's node name and replica table once heard (set by the replication adapter)
        self.peer_table: Callable[[], tuple[str, DialogTable] | None] = lambda: None
        #: split brain lost (rule 3): resnapshot from the winner
        self.on_yield: Callable[[], None] = lambda: None
        #: every change of role: (address, before, after)
        self.on_role: Callable[[str, State, State], None] = lambda addr, before, after: None
        self.adopter = Adopter(ctx, run_dir, self.counters)
        self._faulted = False
        #: a split brain was lost: once the winner's replica is whole, let go of what it owns
        self.reconcile = False
        #: rule 3's window after that first sync, and the keys let go in it
        self.reconcile_until = 0.0
        self._let_go: set[str] = set()

    @property
    def role(self) -> str:
        return encode_roles({addr: star.state.value for addr, star in self.stars.items()})

    def state(self, addr: str) -> State:
        return self.stars[addr].state

    def _fault(self, reason: str, **fields: Any) -> None:
        if not self._faulted:  # rule 4: once
            self._faulted = True
            log.error("failover_fault", reason=reason, **fields)

    def peer_hugz(self, msg: Hugz, now: float) -> None:
        peer = decode_roles(msg.role)
        if not peer:
            self._fault("peer heartbeat has no pair role", peer=msg.node, role=msg.role)
            return
        self.last_peer_hugz = now
        for addr, star in self.stars.items():
            try:
                peer_state = State(peer.get(addr, ""))
            except ValueError:
                self._fault("the peer does not pair this virtual address", peer=msg.node,
                            address=addr, role=msg.role)  # fmt: skip
                continue
            known = star.peer
            t = star.receive_heartbeat(peer_state, msg.epoch, msg.node, now)
            # a new epoch is a restarted peer, its calls lost: a takeover then adopts them all
            self._act(addr, t, now, whole=known is not None and known[0] != msg.epoch)

    def tick(self, now: float) -> None:
        for addr, star in self.stars.items():
            if addr in self.standby and star.state is State.BACKUP and star.peer is None:
                continue  # rule 6: never the peer's address alone, only by a takeover
            t = star.handle_timer(now)
            if t is not None:
                self._act(addr, t, now)

    def _act(self, addr: str, t: Transition, now: float, whole: bool = True) -> None:
        if t.effect is Effect.NONE and t.before is t.state:
            return
        fields = {"address": addr, "before": t.before.value, "role": t.state.value,
                  "input": t.input.value, "effect": t.effect.value}  # fmt: skip
        if t.effect is Effect.SPLIT_BRAIN:
            log.error("split_brain", yields=t.yields, peer=self.stars[addr].peer, **fields)
            if t.yields:
                self.reconcile = True
                self.on_yield()
        elif t.effect is Effect.FAULT:
            log.error("failover_fault", reason="both nodes have the same role", **fields)
        elif t.before is not t.state:
            log.warning("failover_role", **fields)
        if t.before is State.PASSIVE and t.state is State.ACTIVE:
            alive = t.input is not Input.PEER_EXPIRED and not whole
            self._take_over(now, addr if alive else None)
        if t.before is not t.state:
            self.on_role(addr, t.before, t.state)
            self.publish_hugz()  # rule 1

    def reconciled(self, owned: list[str], theirs: DialogTable, now: float) -> int:
        """Rule 3, once the winner's replica is in sync: the dialogs our workers hold that the
        winner holds too (it took them over while we were cut off) are let go here, so their
        lifetimes, BYEs and CDRs happen once, on the winner. The winner's workers may still
        be reporting what they adopted when its snapshot is taken (seconds on a loaded box),
        so the comparison is made again every heartbeat for ``RECONCILE_WINDOW_S``
        (``recheck``). Returns how many were let go now."""
        first = self.reconcile
        self.reconcile = False
        if first:
            self.reconcile_until, self._let_go = now + RECONCILE_WINDOW_S, set()
        keys = [k for k in owned if k in theirs and k not in self._let_go]
        if keys:
            self.adopter.release(self.node, [], now, keys)
            self._let_go.update(keys)
        if first or keys:
            log.warning("split_brain_reconciled", dialogs=len(keys), total=len(self._let_go),
                        peer=self._peer())  # fmt: skip
        return len(keys)

    def recheck(self, owned: list[str], theirs: DialogTable, now: float) -> int:
        """Within the window after a reconcile, let go of what the winner has come to hold
        since (rule 3); past it, forget the keys let go."""
        if not self.reconcile_until:
            return 0
        if now >= self.reconcile_until:
            self.reconcile_until, self._let_go = 0.0, set()
            return 0
        return self.reconciled(owned, theirs, now)

    def _peer(self) -> tuple[int, str] | None:
        """The peer's (epoch, node) as last heard, or None."""
        return next((st.peer for st in self.stars.values() if st.peer), None)

    def failback(self, now: float) -> list[str]:
        """Rule 7: hand back what we hold as backup; the addresses handed back."""
        handed = []
        for addr, star in self.stars.items():
            t = star.hand_back()
            if t.effect is Effect.HAND_BACK:
                handed.append(addr)
                self._act(addr, t, now)  # publishes our HUGZ before the workers' deltas
        if handed:
            self.counters["failbacks"] += len(handed)
            self.adopter.release(self.node, handed, now)
            log.warning("failover_failback", addresses=handed, peer=self._peer())
        return handed

    # -- takeover ----------------------------------------------------------------------------

    def _take_over(self, now: float, address: str | None) -> None:
        """Rule 2; ``address`` set: the peer is alive and hands that one back (rule 7)."""
        peer = self.peer_table()
        silent_s = now - self.last_peer_hugz
        if peer is None or not len(peer[1]):
            log.warning("failover_takeover", dialogs=0, silent_ms=round(silent_s * 1000))
            return
        node, table = peer
        wall = time.time()
        if address is None:
            records = table.snapshot(now, wall)
            table.restore([], now, wall)
        else:  # records only for that address's dialogs: the replica may hold a million
            records = [r for k in table.keys_on(address)
                       if (r := table.record(k, now, wall)) is not None]  # fmt: skip
            for r in records:
                table.apply(["t", r[0], r[1]], now, wall)
        workers, lost = self.adopter.hand_over(node, records, now, address is not None)
        log.warning("failover_takeover", dialogs=len(records), workers=workers, address=address,
                    silent_ms=round(silent_s * 1000), lost=lost)  # fmt: skip

    def stats(self) -> dict[str, Any]:
        peer = self._peer()
        return {"roles": {a: st.state.value for a, st in self.stars.items()}, "peer": peer,
                **self.counters}  # fmt: skip

    def close(self) -> None:
        self.adopter.close()


class Adopter:
    """Hands dialogs to the workers that own their Call-IDs (rules 2 and 5); used by the
    takeover and by a restart that restores the node's own dialogs from disk."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: str,
                 counters: Counter[str]) -> None:  # fmt: skip
        self.ctx, self.run_dir, self.counters = ctx, run_dir, counters
        self.loop = asyncio.get_running_loop()
        self._pushes: dict[str, zmq.Socket[bytes]] = {}
        self._queue: deque[tuple[str, list[bytes], int, float]] = deque()
        #: a CURVE pipe to a worker of another host at a tcp:// endpoint, or None when
        #: ``[[peer]]`` allows none there (``dialogstate/hosts.py``); unset on one host
        self.connect_tcp: Callable[[str], zmq.Socket[bytes] | None] | None = None

    def hand_over(self, node: str, records: list[list[Any]], now: float,
                  handed_back: bool = False, workers: dict[str, str] | None = None,
                  source: str = "") -> tuple[int, int]:  # fmt: skip
        """Queue ``records`` (from ``node``; ``handed_back``: by a live node, rule 7) for their
        owners among ``workers`` (this host's live ones by default; every host's, tcp://
        endpoints for the others', when dialogs move between hosts, whose ``ADOPT`` names
        ``source``); (workers, records without one)."""
        if workers is None:
            workers = sockets.live_endpoints(self.run_dir, "worker")
        groups = by_owner(records, workers)
        for ident, recs in groups.items():
            for i in range(0, len(recs), ADOPT_CHUNK):
                chunk = recs[i : i + ADOPT_CHUNK]
                header = [node, chunk, handed_back, source] if source else [node, chunk, handed_back]
                frames = env.pack(env.KIND_ADOPT, header)
                self._queue.append((workers[ident], frames, len(chunk), now + ADOPT_RETRY_S))
        lost = len(records) - sum(len(r) for r in groups.values())
        self.counters["adopt_sent"] += len(records) - lost
        self.counters["adopt_lost"] += lost
        self._send_queue()
        return len(groups), lost

    def keep(self, node: str, records: list[list[Any]], now: float, source: str, owner: str,
             keeper_ep: str) -> None:  # fmt: skip
        """Send ``records`` handed to ``owner`` (a worker of another host) to the worker at
        ``keeper_ep``, another of that host, for its state plane to keep until ``owner``'s own deltas
        reach it (``stateplane/handover.py`` rule 6)."""
        for i in range(0, len(records), ADOPT_CHUNK):
            chunk = records[i : i + ADOPT_CHUNK]
            frames = env.pack(env.KIND_ADOPT, [node, chunk, True, source, owner])
            self._queue.append((keeper_ep, frames, 0, now + ADOPT_RETRY_S))
        self._send_queue()

    def handed(self, source: str, workers: dict[str, str], now: float) -> None:
        """Tell each of ``workers`` that ``source`` sent every dialog it owed it: queued after
        the ADOPTs on the same pipe, so a worker hears it once it holds them
        (``workers/dialogs/handover.py``)."""
        for ident, ep in workers.items():
            frames = env.pack(env.KIND_HANDED, [source, ident])
            self._queue.append((ep, frames, 0, now + ADOPT_RETRY_S))
        self._send_queue()

    def forget(self, endpoints: set[str]) -> None:
        """Close the pipes of workers that are gone."""
        for ep in [e for e in self._pushes if e not in endpoints]:
            self._pushes.pop(ep).close(linger=0)

    def release(self, node: str, addresses: list[str], now: float,
                keys: list[str] | None = None) -> int:  # fmt: skip
        """Tell every live worker to let go of the dialogs reached on ``addresses`` (rule 7)
        and of ``keys`` (rule 3)."""
        workers = sockets.live_endpoints(self.run_dir, "worker")
        frames = env.pack(env.KIND_RELEASE, [node, addresses, keys or []])
        for ep in workers.values():
            self._queue.append((ep, frames, 0, now + ADOPT_RETRY_S))
        self._send_queue()
        return len(workers)

    def _send_queue(self) -> None:
        """Rule 5."""
        now = self.loop.time()
        while self._queue:
            ep, frames, count, give_up = self._queue[0]
            sock = self._pushes.get(ep)
            if sock is None and ep.startswith("tcp://"):
                sock = self.connect_tcp(ep) if self.connect_tcp is not None else None
                if sock is None:  # no [[peer]] lets us reach it: lost as to a full pipe
                    self._lost(ep, frames, count)
                    self._queue.popleft()
                    continue
                self._pushes[ep] = sock
            if sock is None:
                sock = self._pushes[ep] = self.ctx.socket(zmq.PUSH)
                sock.linger = sockets.LINGER_MS
                sock.sndhwm = 1_000
                sock.setsockopt(zmq.MAXMSGSIZE, sockets.MAX_SEND_ONLY_BYTES)
                sock.connect(ep)
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                if now < give_up:
                    self.loop.call_later(0.01, self._send_queue)
                    return
                self._lost(ep, frames, count)
            self._queue.popleft()

    def _lost(self, ep: str, frames: list[bytes], count: int) -> None:
        if frames[0] == env.KIND_RELEASE:  # that worker keeps calls the peer adopts
            self.counters["release_lost"] += 1
            log.error("failover_release_lost", worker=ep)
        elif frames[0] == env.KIND_HANDED:  # that worker waits to its own deadline
            self.counters["handed_lost"] += 1
        elif count == 0:  # a copy to keep (handover.py rule 6): the ADOPT itself may arrive
            self.counters["keep_lost"] += 1
        else:
            self.counters["adopt_lost"] += count
            log.error("failover_adopt_lost", worker=ep, dialogs=count)

    def close(self) -> None:
        for sock in self._pushes.values():
            sock.close(linger=0)
