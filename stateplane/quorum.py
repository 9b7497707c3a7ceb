"""Failover among N >= 3 nodes: who holds each node's calls and virtual address, sans-IO.

Every node of a cluster of ``members`` (the same ordered list on every node) replicates the
others and heartbeats to them. Each heartbeat carries, besides the node's epoch, three sets
of member names: ``sees`` (the members it heard within ``EXPIRY_HEARTBEATS`` intervals,
itself included), ``holds`` (the members whose virtual addresses, and so calls, it holds)
and ``knows`` (the members it has heard since it started). A member's address is *held* by
one node: its own node normally, a survivor after it died.
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
3. Holder of record. ``held_by[x]`` is the last node heard claiming ``x`` (and its epoch).
   A claim is *dead* when its holder is down, or came back with another epoch (restarted:
   its calls are lost with its old process, only the replicas have them).
4. Takeover. The addresses of a dead claim all go, with the dead holder's whole replica, to
   one taker: the first member after the dead holder in the configured order (cyclic) that
   is not down, is not the dead holder, and has heard it (its heartbeats' ``knows``: a node
   restarted since the holder died has neither its replica nor its claims). Its calls are
   one unit (its replica), so every address it held goes with them, whoever those
   addresses belong to. The taker waits
   ``GRACE_HEARTBEATS`` after it first finds the holder down, so a holder cut off in a
   minority has fenced (rule 1, at ``EXPIRY_HEARTBEATS``) before the majority takes over.
5. Own address. An address nobody claims (no claim, or its holder handed it back) goes to
   its own member if that member is up. A member that is down and whose address nobody
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
   nearest); the other releases it at once. Every node computes the same answer.
9. Hostile input. Only configured members are heard (the adapter checks the ``[[peer]]``
   name); names in ``sees``, ``holds`` and ``knows`` that are not members are dropped and
   counted, so every table here has at most ``n`` entries; a heartbeat with an older epoch
   than the one heard (a dead process's, still queued) is ignored.

Every input takes ``now``; ``next_timer()`` says when ``handle_timer(now)`` must run.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: missed heartbeat intervals after which a member is no longer seen (Binary Star's choice)
EXPIRY_HEARTBEATS = 2
#: rule 4: intervals a taker waits once the holder is down (it fenced at expiry meanwhile)
GRACE_HEARTBEATS = 1
#: rule 6: intervals a node must be quorate before taking anything
SETTLE_HEARTBEATS = 2
#: the most members a cluster may have (bounds every table and every heartbeat's sets)
MAX_MEMBERS = 32


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


@dataclass(slots=True)
class Heard:
    epoch: int
    sees: frozenset[str]
    holds: frozenset[str]
    knows: frozenset[str]
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
        self.held_by: dict[str, tuple[str, int]] = {}
        self.quorate_since: float | None = None
        self.down_since: dict[str, float] = {}
        self.counters: Counter[str] = Counter()
        self._index = {m: i for i, m in enumerate(self.members)}
        self._next = now + heartbeat_s
        self._last = now
        #: members whose addresses we let go without quorum (rule 1), for the adapter's
        #: reconcile once another holds them (``cluster.py`` rule 5)
        self.fenced: set[str] = set()

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, node: str, epoch: int, sees: Iterable[str], holds: Iterable[str],
                knows: Iterable[str], now: float) -> list[Change]:  # fmt: skip
        """A member's heartbeat (the adapter checked it comes from ``node``)."""
        if node == self.me or node not in self._index:
            self.counters["not_member"] += 1
            return []
        known = self.heard.get(node)
        if known is not None and epoch < known.epoch:  # an older process's, queued: not news
            self.counters["stale_epoch"] += 1
            return []
        h = Heard(epoch, self._members(sees), self._members(holds), self._members(knows), now)
        self.heard[node] = h
        for x in h.holds:
            self.held_by[x] = (node, epoch)
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

    def beat(self, now: float) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """(sees, holds, knows) for our heartbeat, in the configured order."""
        alive = self.alive(now)
        return (tuple(m for m in self.members if m in alive),
                tuple(m for m in self.members if m in self.holds),
                tuple(m for m in self.members if m in self.heard))  # fmt: skip

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

    def _after(self, x: str, down: set[str], skip: str) -> str | None:
        """The first member after ``x`` (cyclic) that is up, is not ``skip``, and has heard
        ``skip`` (rule 4: only a node that heard the holder has its replica and its claims)."""
        i, n = self._index[x], len(self.members)
        for k in range(1, n + 1):
            m = self.members[(i + k) % n]
            if m in down or m == skip:
                continue
            if skip in self.heard if m == self.me else (
                    m in self.heard and skip in self.heard[m].knows):  # fmt: skip
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
        for m in self.members:
            if m in down:
                self.down_since.setdefault(m, now)
            else:
                self.down_since.pop(m, None)
        if not self._quorate(now) or self.me in down:
            self.quorate_since = None
            return self._release_all()
        if self.quorate_since is None:
            self.quorate_since = now
        out = self._conflicts(down)
        if now < self.quorate_since + SETTLE_HEARTBEATS * self.heartbeat_s:
            return out
        claimed = set(self.holds)
        for m, h in self.heard.items():
            if m not in down:
                claimed |= h.holds
        for x in self.members:
            if x not in claimed:
                change = self._orphan(x, down, now)
                if change is not None:
                    self.holds.add(x)
                    self.held_by[x] = (self.me, self.epoch)
                    out.append(change)
        return out

    def _release_all(self) -> list[Change]:
        out = [Change(False, x, Reason.NO_QUORUM) for x in self.members if x in self.holds]
        self.fenced |= self.holds
        self.holds.clear()
        return out

    def _conflicts(self, down: set[str]) -> list[Change]:
        """Rule 8."""
        out = []
        for x in [m for m in self.members if m in self.holds]:
            mine = self._dist(x, self.me)
            if any(x in h.holds and self._dist(x, m) < mine
                   for m, h in self.heard.items() if m not in down):  # fmt: skip
                self.holds.discard(x)
                self.counters["conflicts"] += 1
                out.append(Change(False, x, Reason.CONFLICT))
        return out

    def _orphan(self, x: str, down: set[str], now: float) -> Change | None:
        """Rules 3-5 for an address nobody up claims: ours to take, or not."""
        holder, epoch = self.held_by.get(x, (None, 0))
        if holder is not None and holder != self.me:
            h = self.heard.get(holder)
            restarted = h is not None and h.epoch != epoch
            if holder in down or restarted:  # rule 4: a dead claim
                if holder in down and now < self.down_since[holder] + (
                        GRACE_HEARTBEATS * self.heartbeat_s):  # fmt: skip
                    return None
                if self._after(holder, down, holder) != self.me:
                    return None
                reason = Reason.RESTART if restarted and holder not in down else Reason.TAKEOVER
                return Change(True, x, reason, holder, whole=True)
        if x not in down:  # rule 5
            if x != self.me:
                return None
            if holder is None or holder == self.me:
                return Change(True, x, Reason.START)
            return Change(True, x, Reason.HANDED_BACK, holder, whole=False)
        if holder == self.me:  # we let it go without quorum: its calls are still ours
            return Change(True, x, Reason.REGAINED)
        return None  # rule 5: never held, or handed back to a member now down
