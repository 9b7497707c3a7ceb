"""Replication of dialog state between nodes: the publisher and the replica, sans-IO.

``Publisher`` is the owner node's end: it numbers the deltas its workers emit and keeps a
bounded backlog. ``Replica`` is a receiving node's end, one per peer node: it holds that
peer's dialogs in a ``DialogTable`` of its own, kept in step by updates and, when it falls
out of step, by the snapshot exchange (``stateplane/snapshot.py``). Neither does I/O or reads
a clock: every call that depends on time takes ``now`` (monotonic seconds), and ``wall``
(epoch seconds) where dialog deadlines are converted (``docs/dialogs.md`` "Replication").

Rules:
1. Sequence: a publisher's updates carry ``seq`` 1, 2, 3 ... within an ``epoch``. An epoch
   rises every time the publisher restarts (``next_epoch``: the previous one plus one, and
   never below the start time in ms, so it rises without persistence too).
2. A replica applies an update only when it is the next one, ``seq == held seq + 1`` in the
   held epoch: so no update is ever applied twice, and none is skipped.
   - ``seq <= held``: a duplicate, ignored (counted).
   - ``seq > held + 1``, or a heartbeat saying the publisher is past us: a **gap**; the
     replica asks for a resnapshot (a ``Resnapshot`` action carrying the ``Icanhaz``) and
     queues what it hears until the answer ends.
   - a higher epoch: the publisher restarted; its state may have changed in between, so
     the same as a gap.
   - a lower epoch: a **stale** owner (an old incarnation that came back, or a split-brain
     loser still talking): refused and reported (``StaleRefused``); it changes nothing.
3. Liveness (Clone's HUGZ): any message from the peer proves it alive; a publisher that has
   nothing to say still sends ``Hugz`` every ``heartbeat_s``. After ``liveness`` heartbeat
   intervals of silence the replica reports ``PeerSilent`` once (and ``PeerBack`` when it
   hears the peer again): silence is a dead or cut-off publisher, idleness is not.
4. A snapshot that makes no progress for ``sync_timeout_s`` (no chunk, no end) is asked for
   again with a new request id; the replica keeps serving what it held until then.
5. A delta the table cannot apply is a broken stream: the replica resnapshots (counted).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dialogstate.table import DialogTable
from stateplane.quorum import View
from stateplane.snapshot import SnapshotClient, Synced
from stateplane.updates import KIND_DIALOG, Chunk, Hugz, Kthxbai, Update

#: updates a publisher keeps for replay (snapshot.py rule 1): seconds of traffic at full load
DEFAULT_BACKLOG = 16_384
#: Clone's HUGZ interval; Binary Star expires a peer after two of them
DEFAULT_HEARTBEAT_S = 0.25
DEFAULT_LIVENESS = 2
#: a sync that makes no progress this long is asked for again (rule 4)
DEFAULT_SYNC_TIMEOUT_S = 5.0


def next_epoch(previous: int, wall: float) -> int:
    """The epoch of a publisher starting now (rule 1)."""
    return max(previous + 1, int(wall * 1000))


class Publisher:
    """The owner's end: numbers updates, keeps the backlog, says when to send a heartbeat."""

    def __init__(self, node: str, epoch: int, *, backlog: int = DEFAULT_BACKLOG,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, now: float = 0.0) -> None:  # fmt: skip
        self.node = node
        self.epoch = epoch
        self.seq = 0
        self.heartbeat_s = heartbeat_s
        #: the payloads of the last updates, the newest numbered ``seq``; an ``Update`` is
        #: built only for one that is replayed (``since``), not for each one numbered
        self._backlog: deque[list[Any]] = deque(maxlen=backlog)
        self._next_hugz = now

    def number(self, payloads: list[list[Any]]) -> int:
        """Number ``payloads`` (dialog deltas, the only kind) in order and keep them for
        replay; returns the first one's ``seq``. Builds no ``Update``: the caller makes the
        frames only if someone will read them (``stateplane/replication.py`` rule 1a)."""
        first = self.seq + 1
        self.seq += len(payloads)
        self._backlog.extend(payloads)
        return first

    def publish(self, payloads: Iterable[list[Any]]) -> list[Update]:
        """One update per payload (e.g. ``DialogTable.take_deltas()``), numbered in order."""
        payloads = list(payloads)
        first, node, epoch = self.number(payloads), self.node, self.epoch
        return [Update(node, epoch, first + i, KIND_DIALOG, p) for i, p in enumerate(payloads)]

    def hugz(self, role: str = "", view: View | tuple[()] = ()) -> Hugz:
        """``view``: a cluster member's (sees, holds, knows, claims), ``stateplane/quorum.py``."""
        return Hugz(self.node, self.epoch, self.seq, role, *view)

    def next_timer(self) -> float:
        return self._next_hugz

    def handle_timer(self, now: float, role: str = "",
                     view: View | tuple[()] = ()) -> Hugz | None:  # fmt: skip
        """A heartbeat to publish if one is due (on the schedule, so it never drifts)."""
        if now < self._next_hugz:
            return None
        self._next_hugz += self.heartbeat_s
        if self._next_hugz <= now:  # the loop stalled: skip the missed ones
            self._next_hugz = now + self.heartbeat_s
        return self.hugz(role, view)

    def since(self, epoch: int, seq: int) -> list[Update] | None:
        """The updates after ``seq`` of ``epoch`` if the backlog holds all of them, else None."""
        if epoch != self.epoch or seq > self.seq:
            return None
        if seq == self.seq:
            return []
        backlog = self._backlog
        oldest = self.seq - len(backlog) + 1  # the seq of backlog[0]
        if not backlog or oldest > seq + 1:
            return None
        node, epoch = self.node, self.epoch
        return [Update(node, epoch, s, KIND_DIALOG, backlog[s - oldest])
                for s in range(seq + 1, self.seq + 1)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Resnapshot:
    """Action: send ``ask`` (an ``Icanhaz``) to the peer's snapshot endpoint."""

    node: str
    reason: str
    ask: Any  # updates.Icanhaz


@dataclass(frozen=True, slots=True)
class StaleRefused:
    """An update or heartbeat of an epoch older than the one held: refused (rule 2)."""

    node: str
    epoch: int
    seq: int
    held_epoch: int


@dataclass(frozen=True, slots=True)
class Resynced:
    """A snapshot exchange ended: the replica holds ``(epoch, seq)`` of the peer."""

    node: str
    epoch: int
    seq: int
    full: bool
    records: int


@dataclass(frozen=True, slots=True)
class PeerSilent:
    """No message from the peer for ``liveness`` heartbeats (rule 3)."""

    node: str
    last_heard: float


@dataclass(frozen=True, slots=True)
class PeerBack:
    """The peer is heard again after ``PeerSilent``."""

    node: str


Event = Resnapshot | StaleRefused | Resynced | PeerSilent | PeerBack


class Replica:
    """One peer node's dialogs, as this node holds them (rules 2 to 5).

    Start with ``start(now)`` (subscribe first, then send the ``Resnapshot`` it returns);
    feed PUB messages to ``receive`` and snapshot answers to ``receive_snapshot``; call
    ``handle_timer`` at ``next_timer()``. Each returns the events and actions for the caller.
    """

    def __init__(self, node: str, make_table: Callable[[], DialogTable], *,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, liveness: int = DEFAULT_LIVENESS,
                 sync_timeout_s: float = DEFAULT_SYNC_TIMEOUT_S, now: float = 0.0) -> None:  # fmt: skip
        self.node = node
        self.make_table = make_table
        self.table = make_table()
        self.epoch = 0
        self.seq = 0
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.sync_timeout_s = sync_timeout_s
        self.last_heard = now
        self.alive = True
        self.counters: Counter[str] = Counter()
        self._sync: SnapshotClient | None = None
        self._sync_deadline = 0.0
        self._req = 0

    @property
    def syncing(self) -> bool:
        return self._sync is not None

    def start(self, now: float) -> list[Event]:
        """Ask for the first snapshot (the caller has subscribed already)."""
        return [self._resync("join", now)]

    # -- inputs ------------------------------------------------------------------------------

    def receive(self, msg: Update | Hugz, now: float, wall: float) -> list[Event]:
        """A message heard on the peer's PUB channel."""
        if msg.node != self.node:
            self.counters["other_node"] += 1
            return []
        events = self._heard(now)
        if msg.epoch < self.epoch:
            self.counters["stale"] += 1
            return [*events, StaleRefused(msg.node, msg.epoch, msg.seq, self.epoch)]
        if isinstance(msg, Hugz):
            self.counters["hugz"] += 1
            if self._sync is None and (msg.epoch > self.epoch or msg.seq > self.seq):
                events.append(self._resync("behind", now))
            return events
        if self._sync is not None:
            self._sync.queue(msg)
            if self._sync.overflowed:
                events.append(self._resync("queue_overflow", now))
            return events
        return events + self._take([msg], now, wall)

    def receive_snapshot(self, msg: Update | Chunk | Kthxbai, now: float,
                         wall: float) -> list[Event]:  # fmt: skip
        """A message of the answer to our ``Icanhaz``."""
        sync = self._sync
        if sync is None or msg.node != self.node:
            self.counters["snapshot_unexpected"] += 1
            return []
        events = self._heard(now)
        self._sync_deadline = now + self.sync_timeout_s
        done = sync.receive(msg, now, wall)
        if done is None:
            return events
        self._sync = None
        return events + self._finish(done, now, wall)

    def handle_timer(self, now: float) -> list[Event]:
        """Liveness (rule 3) and a stalled sync (rule 4)."""
        events: list[Event] = []
        if self.alive and now >= self.last_heard + self.liveness * self.heartbeat_s:
            self.alive = False
            events.append(PeerSilent(self.node, self.last_heard))
        if self._sync is not None and now >= self._sync_deadline:
            self.counters["sync_timeout"] += 1
            events.append(self._resync("sync_timeout", now))
        return events

    def next_timer(self) -> float:
        """When ``handle_timer`` next has something to do."""
        at = self.last_heard + self.liveness * self.heartbeat_s if self.alive else float("inf")
        return min(at, self._sync_deadline) if self._sync is not None else at

    # -- internals ---------------------------------------------------------------------------

    def _heard(self, now: float) -> list[Event]:
        self.last_heard = now
        if self.alive:
            return []
        self.alive = True
        return [PeerBack(self.node)]

    def _resync(self, reason: str, now: float, keep: list[Update] | None = None) -> Resnapshot:
        self._req += 1
        self.counters["resnapshot"] += 1
        self._sync = SnapshotClient(self.node, self._req, self.epoch, self.seq, self.make_table)
        for upd in keep or ():
            self._sync.queue(upd)
        self._sync_deadline = now + self.sync_timeout_s
        return Resnapshot(self.node, reason, self._sync.request())

    def _take(self, updates: list[Update], now: float, wall: float) -> list[Event]:
        """Rule 2 over ``updates`` in order; a gap queues the rest behind a resnapshot."""
        for i, upd in enumerate(updates):
            if upd.epoch < self.epoch:
                self.counters["stale"] += 1
                continue
            if upd.epoch == self.epoch and upd.seq <= self.seq:
                self.counters["duplicate"] += 1
                continue
            if upd.epoch > self.epoch or upd.seq > self.seq + 1:
                reason = "new_epoch" if upd.epoch > self.epoch else "gap"
                return [self._resync(reason, now, updates[i:])]
            try:
                self.table.apply(upd.payload, now, wall)
            except (ValueError, TypeError, KeyError, IndexError):
                self.counters["bad_delta"] += 1
                return [self._resync("bad_delta", now, updates[i + 1 :])]
            self.seq = upd.seq
            self.counters["applied"] += 1
        return []

    def _finish(self, done: Synced, now: float, wall: float) -> list[Event]:
        """Swap a full snapshot in, then replay every queued update above its seq (snapshot.py
        rule 3); after a backlog replay the replayed updates are in the queue as well."""
        if done.table is not None:
            self.table, self.epoch, self.seq = done.table, done.epoch, done.seq
        elif done.epoch != self.epoch:  # a replay of an epoch we do not hold: start over
            return [self._resync("bad_replay", now, done.updates)]
        self.counters["resynced"] += 1
        event = Resynced(self.node, done.epoch, done.seq, done.table is not None, done.records)
        ordered = sorted(done.updates, key=lambda u: (u.epoch, u.seq))
        events: list[Event] = [event, *self._take(ordered, now, wall)]
        if self._sync is None and self.seq < done.seq:  # the replay itself had a hole
            events.append(self._resync("gap", now))
        return events
