"""Failover among N >= 3 nodes: who holds each node's calls and virtual address, sans-IO.

Every node of a cluster of ``members`` (the same ordered list on every node) replicates the
others and heartbeats to them. Each heartbeat carries, besides the node's epoch, its view:
``sees`` (the members it heard within ``EXPIRY_HEARTBEATS`` intervals, itself included),
``holds`` (the members whose virtual addresses, and so calls, it holds), ``knows`` (the
members it has heard since it started, each with the first epoch it heard of it) and
``claims`` (its record of who last took each address, rule 3). A member's address is
*held* by one node: its own node normally, a survivor after it died.
This module decides, from the heartbeats heard and the clock, which addresses this node
holds; the adapter (``stateplane/cluster.py``) binds them and adopts the calls.

Rules (``docs/failover.md`` "Three nodes or more" states them for operators):
1. Majority. ``maj = n // 2 + 1`` of the ``n`` configured members. A node is *quorate*
   when it hears at least ``maj`` members (itself included). A node that is not quorate
   holds nothing: it releases every address at once (fencing), so a minority partition
   never serves, never takes over, and lets its own calls go to the majority. A node whose
   decisions stalled for ``EXPIRY_HEARTBEATS`` (a paused process: its ingresses fenced on
   its silence, the others may have found it down) releases everything too, then settles
   again (rule 6) before it takes anything.
2. Down by votes. The voters are this node and the members it hears; each votes with its
   view (ours: whom we hear; another's: its last ``sees``). A member is *down* when at
   least ``maj`` voters do not see it. Down needs a majority of the configured nodes, not
   of the live ones: two survivors of five can never declare anyone down.
   A node that finds itself down (the others do not hear it) fences as in rule 1.
3. Holder of record. ``held_by[x]`` is the last claim on ``x``: its holder, the holder's
   epoch and a generation, one more than the claim it replaced. Every heartbeat carries the
   sender's whole record and every node keeps, per address, the claim with the highest
   generation (a tie: the holder nearer ``x`` in the cyclic order, as in rule 8), so the
   nodes that hear one another share one record within a heartbeat, even about a claim
   made while some were cut off by a holder that died before they heard it again (nodes
   that learned holders only from their own heartbeats could disagree for ever: each
   waited for a taker that did not know the claim). A node acts on an address whose holder
   of record another's record just changed only ``EXPIRY_HEARTBEATS`` later: meanwhile its
   own heartbeats pass the news on, and if a cut came with it, it has fenced (rule 1)
   before it could take beside a node on the other side that never heard it. A node that
   still holds ``x`` when it learns another's newer claim on it (a race; rule 8 decides
   between live claimants) claims it again above that generation. A claim is *dead* when
   its holder is down, or came back with a later epoch (restarted: its calls are lost with
   its old process, only the replicas have them); a restarted node learns its old
   process's claims from the others' records while it settles (rule 6), so it waits for
   their taker instead of starting its own address beside it.
4. Takeover. The addresses of a dead claim all go, with the dead holder's whole replica, to
   one taker: the first member after the dead holder in the configured order (cyclic) that
   is not down, is not the dead holder, and heard the holder's process that claimed (per
   its heartbeats' ``knows``, the first epoch it heard of the holder is not after the
   claim's: a node restarted since that process died, or that heard only a later one, has
   not its replica; and a node's own later hearing cannot make it a taker the others did
   not pick). Its calls are one unit (its replica), so every address it held goes with
   them, whoever those addresses belong to. The taker waits ``GRACE_HEARTBEATS`` after it
   first finds the holder down, so a holder cut off in a minority has fenced (rule 1, at
   ``EXPIRY_HEARTBEATS``) before the majority takes over. A dead claim whose holder no node
   up heard (a record passed on by nodes gone since) is void: its calls are in no replica,
   and its address is unclaimed (rule 5).
5. Own address. An address nobody claims (no claim, a void one, or its holder handed it
   back) goes to its own member if that member is up. A holder that is up and does not
   claim the address handed it back (rule 7) or let it go in a cut (rule 1); the member
   takes it only once it has heard that holder, and found it up, for
   ``EXPIRY_HEARTBEATS`` without a break: a holder it does not hear yet (a restarted
   member connecting to the others one by one) may well still hold it, and one just back
   from a cut, still down for the others whose votes lag, may be being taken over. A member that is down and whose address nobody
   held (it never started) keeps it unserved: as the pair's standby address, a node's
   address is taken only over that node, so a cluster started one node at a time does not
   hand the last ones' addresses to the first. A node that let go of an address for lack
   of quorum takes it again once quorate, if the address's member is down (its calls are
   still on this node's workers).
6. Settle. A node takes nothing until it has been quorate for ``SETTLE_HEARTBEATS`` (every
   member it hears has had the time to tell it what it holds).
7. Failback is asked for (``hand_back``), never automatic (Binary Star's rule against
   flapping): the node gives up every address it holds that belongs to another member that
   is up. That member, seeing its address unclaimed, takes it back (rule 5) and adopts from
   its replica of us only that address's dialogs.
8. Conflict. Two up nodes claiming one address (a race, or a partition that heals): the
   one nearer the address's member in the cyclic order keeps it (the member itself is
   nearest); the other releases it at once. Every node computes the same answer. Only
   claims heard within expiry count: a dead process's last heartbeat, kept while its
   restart is seen by others before us, claims nothing.
9. Hostile input. Only configured members are heard (the adapter checks the ``[[peer]]``
   name); names in ``sees``, ``holds`` and ``knows`` that are not members are dropped and
   counted, and so is a claim naming a stranger or with a generation over ``MAX_GEN``, so
   every table here has at most ``n`` entries; a heartbeat with an older epoch than the
   one heard (a dead process's, still queued) is ignored.

Every input takes ``now``; ``next_timer()`` says when ``handle_timer(now)`` must run.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

#: missed heartbeat intervals after which a member is no longer seen (Binary Star's choice)
EXPIRY_HEARTBEATS = 2
#: rule 4: intervals a taker waits once the holder is down (it fenced at expiry meanwhile)
GRACE_HEARTBEATS = 1
#: rule 6: intervals a node must be quorate before taking anything
SETTLE_HEARTBEATS = 2
#: the most members a cluster may have (bounds every table and every heartbeat's sets)
MAX_MEMBERS = 32
#: rule 9: the highest claim generation heard (one take per heartbeat would need 10^17
#: years to reach it; a higher one is a forgery, and would not fit msgpack's 64 bits)
MAX_GEN = 2**62


class Reason(enum.Enum):
    START = "start"  # rule 5: our own address, unclaimed
    TAKEOVER = "takeover"  # rule 4: the holder is down
    RESTART = "restart"  # rule 4: the holder restarted (another epoch)
    REGAINED = "regained"  # rule 5: one we held before we lost quorum
    HANDED_BACK = "handed_back"  # rule 5 after rule 7: the holder gave it back to us
    NO_QUORUM = "no_quorum"  # rule 1: released
    CONFLICT = "conflict"  # rule 8: released
    FAILBACK = "failback"  # rule 7: released


@dataclass(frozen=True, slots=True)
class Change:
    """One address taken or released. ``source``: the node whose replica holds its calls;
    ``whole``: adopt all of that replica (its holder died), else only this address's."""

    take: bool
    member: str
    reason: Reason
    source: str | None = None
    whole: bool = False


class Claim(NamedTuple):
    """Rule 3: ``holder`` (in ``epoch``) took the address, the ``gen``-th take of it."""

    holder: str
    epoch: int
    gen: int


#: a heartbeat's view: (sees, holds, knows as (member, first epoch heard), claims as
#: (member, holder, epoch, gen))
View = tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, int], ...],
             tuple[tuple[str, str, int, int], ...]]  # fmt: skip


@dataclass(slots=True)
class Heard:
    epoch: int
    sees: frozenset[str]
    holds: frozenset[str]
    knows: dict[str, int]
    at: float


class Quorum:
    """One node's view of the cluster. Feed it every member's heartbeat; call
    ``handle_timer(now)`` at ``next_timer()``; send ``beat(now)`` every ``heartbeat_s``."""

    def __init__(self, members: Sequence[str], me: str, epoch: int, *, heartbeat_s: float,
                 now: float) -> None:  # fmt: skip
        if len(set(members)) != len(members) or me not in members:
            raise ValueError("members: distinct names, this node's among them")
        if not 3 <= len(members) <= MAX_MEMBERS:
            raise ValueError(f"members: 3 to {MAX_MEMBERS} nodes, not {len(members)}")
        self.members = tuple(members)
        self.me, self.epoch, self.heartbeat_s = me, epoch, heartbeat_s
        self.maj = len(members) // 2 + 1
        self.heard: dict[str, Heard] = {}
        self.holds: set[str] = set()
        self.held_by: dict[str, Claim] = {}
        #: rule 4: the first epoch we heard of each member (whose replica we can have)
        self.first_heard: dict[str, int] = {}
        #: rule 3: when another's record last changed the holder of an address for us
        self.learned_at: dict[str, float] = {}
        self.quorate_since: float | None = None
        self.down_since: dict[str, float] = {}
        #: rule 5: since when we have heard each member, and found it up, without a break
        self.up_since: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self._index = {m: i for i, m in enumerate(self.members)}
        self._next = now + heartbeat_s
        self._last = now
        #: members whose addresses we let go without quorum (rule 1), for the adapter's
        #: reconcile once another holds them (``cluster.py`` rule 5)
        self.fenced: set[str] = set()

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, node: str, epoch: int, sees: Iterable[str], holds: Iterable[str],
                knows: Iterable[Sequence[Any]], now: float,
                claims: Iterable[Sequence[Any]] = ()) -> list[Change]:  # fmt: skip
        """A member's heartbeat (the adapter checked it comes from ``node``); ``knows``:
        (member, first epoch heard) each; ``claims``: its record of rule 3, (member, holder,
        epoch, gen) each."""
        if node == self.me or node not in self._index:
            self.counters["not_member"] += 1
            return []
        known = self.heard.get(node)
        if known is not None and epoch < known.epoch:  # an older process's, queued: not news
            self.counters["stale_epoch"] += 1
            return []
        h = Heard(epoch, self._members(sees), self._members(holds), self._known(knows), now)
        self.heard[node] = h
        self.first_heard.setdefault(node, epoch)
        for i, entry in enumerate(claims):
            if i >= MAX_MEMBERS:
                self.counters["too_many_names"] += 1
                break
            self._learn(entry, now)
        return self._decide(now)

    def handle_timer(self, now: float) -> list[Change]:
        self._next = now + self.heartbeat_s / 2
        return self._decide(now)

    def next_timer(self) -> float:
        return self._next

    def hand_back(self, now: float) -> list[Change]:
        """Rule 7: give up every other member's address whose member is up."""
        if not self._quorate(now):
            return []
        out = []
        for x in sorted(self.holds - {self.me}):
            if not self.is_down(x, now):
                self.holds.discard(x)
                out.append(Change(False, x, Reason.FAILBACK))
        return out

    def beat(self, now: float) -> View:
        """(sees, holds, knows, claims) for our heartbeat, in the configured order."""
        alive = self.alive(now)
        return (tuple(m for m in self.members if m in alive),
                tuple(m for m in self.members if m in self.holds),
                tuple((m, self.first_heard[m]) for m in self.members if m in self.first_heard),
                tuple((m, *self.held_by[m]) for m in self.members if m in self.held_by))  # fmt: skip

    def holder(self, x: str, now: float) -> str | None:
        """The node we hear claim ``x`` now (ourselves included), if any."""
        if x in self.holds:
            return self.me
        down = {m for m in self.heard if self.is_down(m, now)}
        for m, h in self.heard.items():
            if x in h.holds and m not in down:
                return m
        return None

    # -- the rules ---------------------------------------------------------------------------

    def alive(self, now: float) -> set[str]:
        expiry = EXPIRY_HEARTBEATS * self.heartbeat_s
        return {self.me} | {m for m, h in self.heard.items() if now < h.at + expiry}

    def _quorate(self, now: float) -> bool:
        return len(self.alive(now)) >= self.maj

    def is_down(self, x: str, now: float) -> bool:
        """Rule 2."""
        alive = self.alive(now)
        votes = sum(1 for v in alive
                    if x not in (alive if v == self.me else self.heard[v].sees))  # fmt: skip
        return votes >= self.maj

    def _known(self, entries: Iterable[Sequence[Any]]) -> dict[str, int]:
        """A heartbeat's ``knows``: members and the first epoch heard of each (rule 9)."""
        out: dict[str, int] = {}
        for i, entry in enumerate(entries):
            if i >= MAX_MEMBERS:
                self.counters["too_many_names"] += 1
                break
            try:
                name, epoch = entry
            except (TypeError, ValueError):
                name, epoch = None, None
            if name in self._index and type(epoch) is int:
                out[name] = epoch
            else:
                self.counters["not_member"] += 1
        return out

    def _learn(self, entry: Sequence[Any], now: float) -> None:
        """Rule 3: keep a relayed claim if it is newer than ours."""
        try:
            x, holder, epoch, gen = entry
        except (TypeError, ValueError):
            self.counters["bad_claims"] += 1
            return
        if (x not in self._index or holder not in self._index or type(epoch) is not int
                or type(gen) is not int or not 0 <= gen <= MAX_GEN or epoch < 0):  # fmt: skip
            self.counters["bad_claims"] += 1
            return
        claim = Claim(holder, epoch, gen)
        known = self.held_by.get(x)
        if known is None or self._rank(x, claim) > self._rank(x, known):
            if known is None or known[:2] != claim[:2]:
                self.learned_at[x] = now
            self.held_by[x] = claim

    def _rank(self, x: str, c: Claim) -> tuple[int, int, int]:
        """Rule 3's order: the later take, then the holder nearer ``x`` (rule 8)."""
        return c.gen, -self._dist(x, c.holder), c.epoch

    def _claim(self, x: str) -> None:
        known = self.held_by.get(x)
        self.held_by[x] = Claim(self.me, self.epoch, min(MAX_GEN, (known.gen + 1) if known else 1))

    def _members(self, names: Iterable[str]) -> frozenset[str]:
        out = set()
        for i, name in enumerate(names):
            if i >= MAX_MEMBERS:
                self.counters["too_many_names"] += 1
                break
            if name in self._index:
                out.add(name)
            else:
                self.counters["not_member"] += 1
        return frozenset(out)

    def _taker(self, dead: Claim, down: set[str]) -> str | None:
        """Rule 4: the first member after the dead claim's holder (cyclic) that is up, is not
        it, and heard its process that claimed (only such a node has that one's replica)."""
        i, n = self._index[dead.holder], len(self.members)
        for k in range(1, n + 1):
            m = self.members[(i + k) % n]
            if m in down or m == dead.holder:
                continue
            knows = self.first_heard if m == self.me else (
                self.heard[m].knows if m in self.heard else {})  # fmt: skip
            if knows.get(dead.holder, dead.epoch + 1) <= dead.epoch:
                return m
        return None

    def _dist(self, x: str, m: str) -> int:
        return (self._index[m] - self._index[x]) % len(self.members)

    def _decide(self, now: float) -> list[Change]:
        stalled = now - self._last >= EXPIRY_HEARTBEATS * self.heartbeat_s
        self._last = now
        if stalled:  # rule 1: we may have been found down meanwhile; our ingresses fenced
            self.quorate_since = None
            self.counters["stalls"] += 1
            return self._release_all()
        down = {m for m in self.members if self.is_down(m, now)}
        alive = self.alive(now)
        for m in self.members:
            if m in down:
                self.down_since.setdefault(m, now)
            else:
                self.down_since.pop(m, None)
            if m in down or m not in alive:
                self.up_since.pop(m, None)
            else:
                self.up_since.setdefault(m, now)
        if not self._quorate(now) or self.me in down:
            self.quorate_since = None
            return self._release_all()
        if self.quorate_since is None:
            self.quorate_since = now
        out = self._conflicts(alive - down)
        for x in self.holds:  # rule 3: still ours, whatever newer claim we heard
            if self.held_by.get(x, Claim("", 0, 0))[:2] != (self.me, self.epoch):
                self._claim(x)
        if now < self.quorate_since + SETTLE_HEARTBEATS * self.heartbeat_s:
            return out
        claimed = set(self.holds)
        for m, h in self.heard.items():
            if m not in down:
                claimed |= h.holds
        recent = now - EXPIRY_HEARTBEATS * self.heartbeat_s
        for x in self.members:
            if x not in claimed and self.learned_at.get(x, recent) <= recent:
                change = self._orphan(x, down, now)
                if change is not None:
                    self.holds.add(x)
                    self._claim(x)
                    out.append(change)
        return out

    def _release_all(self) -> list[Change]:
        out = [Change(False, x, Reason.NO_QUORUM) for x in self.members if x in self.holds]
        self.fenced |= self.holds
        self.holds.clear()
        return out

    def _conflicts(self, up: set[str]) -> list[Change]:
        """Rule 8, against claims heard within expiry: a dead process's last heartbeat, kept
        while the others' votes on its successor lag, claims nothing any more."""
        out = []
        for x in [m for m in self.members if m in self.holds]:
            mine = self._dist(x, self.me)
            if any(x in h.holds and self._dist(x, m) < mine
                   for m, h in self.heard.items() if m in up):  # fmt: skip
                self.holds.discard(x)
                self.counters["conflicts"] += 1
                out.append(Change(False, x, Reason.CONFLICT))
        return out

    def _orphan(self, x: str, down: set[str], now: float) -> Change | None:
        """Rules 3-5 for an address nobody up claims: ours to take, or not."""
        claim = self.held_by.get(x)
        mine = claim is not None and claim[:2] == (self.me, self.epoch)
        holder = None if claim is None or mine else claim.holder
        if claim is not None and not mine:
            dead, restarted = claim.holder, True  # ours: our previous process's, died with it
            if dead != self.me:  # a later epoch heard; an earlier one is a beat on its way
                h = self.heard.get(dead)
                restarted = h is not None and h.epoch > claim.epoch
            if dead in down or restarted:  # rule 4: a dead claim
                if dead in down and now < self.down_since[dead] + (
                        GRACE_HEARTBEATS * self.heartbeat_s):  # fmt: skip
                    return None
                taker = self._taker(claim, down)
                if taker is None:  # nobody up heard the holder: no replica, a void claim
                    holder = None
                elif taker != self.me:
                    return None
                else:
                    reason = Reason.RESTART if restarted and dead not in down else Reason.TAKEOVER
                    return Change(True, x, reason, dead, whole=True)
        if x not in down:  # rule 5
            if x != self.me:
                return None
            if holder is None:
                return Change(True, x, Reason.START)
            if now < self.up_since.get(holder, now) + EXPIRY_HEARTBEATS * self.heartbeat_s:
                return None  # not heard (yet), or back from a cut and still down for some
            return Change(True, x, Reason.HANDED_BACK, holder, whole=False)
        if mine:  # we let it go without quorum: its calls are still ours
            return Change(True, x, Reason.REGAINED)
        return None  # rule 5: never held, or handed back to a member now down
