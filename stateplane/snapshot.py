"""The Clone snapshot exchange (ZeroMQ Guide ch. 5, CHP) as sans-IO state machines.

A late joiner, or a replica that saw a gap, subscribes first and queues the updates it
hears, then asks the publisher's state plane for its state (``Icanhaz``, with what it
already holds); the answer is a stream of ``Chunk`` records ending with ``Kthxbai``, which
carries the (epoch, seq) the answer covers. The joiner then applies only queued updates
newer than that (``stateplane/replica.py``).

Rules:
1. The server answers from its backlog when it can: the asker's epoch is the publisher's and
   the backlog still holds every update after the asker's seq. It then replays those updates
   (``Update`` messages) and ends with ``Kthxbai(full=False)``: a gap costs a few updates,
   not the whole table.
2. Otherwise it sends a full snapshot: the keys of the table at the moment of the request, the
   publisher's (epoch, seq) read at that same moment, then records in chunks of at most
   ``chunk_records``, lazily. ``serve`` is an iterator: the caller sends one chunk per loop
   turn (or a few), so a 1 000 000-dialog snapshot never blocks the loop, and heartbeats go
   on between chunks.
3. A lazy snapshot is *fuzzy*: a record built after the request may already hold changes
   that came after its seq, and a dialog ended since is simply missing. That is safe because
   every dialog delta sets absolute values (fields, state, deadline as wall time; ``c``
   replaces the record, ``t`` removes it, an op on an absent dialog does nothing): replaying
   every update after the snapshot's seq over such records ends in the publisher's state
   (a database's fuzzy checkpoint plus redo log). The joiner therefore replays *every*
   queued update above the seq, never fewer.
4. The joiner builds the snapshot in a fresh table and swaps it in only at ``Kthxbai``: a
   snapshot cut short (publisher died, chunk lost) leaves the previous replica intact, which
   is what a takeover then serves. Chunks and the end of another request (``req``) are
   ignored.
5. The joiner queues at most ``max_queued`` updates during a sync; past that it starts over
   (``overflowed``): memory stays bounded under any update rate.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from dialogstate.table import DialogTable
from stateplane.updates import Chunk, Icanhaz, Kthxbai, Update

#: records per chunk: ~0.4 MB of msgpack, ~2 ms to build and pack
CHUNK_RECORDS = 1_000
#: updates a joiner queues during a sync at most (rule 5): two minutes at 2 000 calls/s
MAX_QUEUED = 262_144


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run one bulk step (build, unpack or apply a chunk) with the cyclic collector off.

    A chunk allocates ~10 000 containers (lists from msgpack, dialogs, tuples), so it would
    trigger collections whose oldest generation rescans every dialog already held: measured,
    the sync then grows worse than linearly (1 000 000 dialogs in 80 s). Snapshot records hold
    no cycles, so nothing is lost by not looking for any during the step; reference counting
    still frees everything. The caller ``gc.freeze()``s after a full swap, so the replica's
    million dialogs stay out of every later scan too.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # what the step built is long-lived state (a chunk of records): out of the scans, or
        # the next full collection rescans every dialog built so far (quadratic over a sync)
        gc.freeze()
        if was:
            gc.enable()


class SnapshotSource(Protocol):
    """What a server snapshots: a point-in-time key list, then records built lazily."""

    def keys(self) -> list[str]: ...

    def record(self, key: str, now: float, wall: float) -> list[Any] | None: ...


class TableSource:
    """A ``DialogTable`` as a ``SnapshotSource`` (the table has ``keys``/``record`` itself;
    this wrapper stays so a source can be swapped without touching the table)."""

    def __init__(self, table: DialogTable) -> None:
        self.table = table

    def keys(self) -> list[str]:
        return self.table.keys()

    def record(self, key: str, now: float, wall: float) -> list[Any] | None:
        return self.table.record(key, now, wall)


class Backlog(Protocol):
    """The publisher's side of rule 1 (``stateplane.replica.Publisher``)."""

    node: str
    epoch: int
    seq: int

    def since(self, epoch: int, seq: int) -> list[Update] | None: ...


def serve(ask: Icanhaz, publisher: Backlog, source: SnapshotSource, now: float, wall: float,
          chunk_records: int = CHUNK_RECORDS) -> Iterator[Update | Chunk | Kthxbai]:  # fmt: skip
    """The answer to ``ask``, one message at a time (rules 1 and 2).

    The (epoch, seq) the answer covers and the key list are read when the first message is
    taken: call ``next()`` on the iterator in the same loop turn as the publisher's last
    ``publish``.
    """
    node, epoch, seq = publisher.node, publisher.epoch, publisher.seq
    replay = publisher.since(ask.epoch, ask.seq) if ask.epoch == epoch else None
    if replay is not None:
        yield from replay
        yield Kthxbai(node, ask.req, epoch, seq, False, len(replay))
        return
    keys, count = source.keys(), 0
    for start in range(0, len(keys), chunk_records):
        records = []
        for key in keys[start : start + chunk_records]:
            rec = source.record(key, now, wall)
            if rec is not None:
                records.append(rec)
        count += len(records)
        yield Chunk(node, ask.req, records)
    yield Kthxbai(node, ask.req, epoch, seq, True, count)


@dataclass(slots=True)
class Synced:
    """A finished exchange: the table to swap in (None after a backlog replay), the
    (epoch, seq) it covers, and every update queued or replayed, in arrival order."""

    epoch: int
    seq: int
    table: DialogTable | None
    updates: list[Update]
    records: int


@dataclass(slots=True)
class SnapshotClient:
    """The joiner's side of one exchange (rules 3 to 5)."""

    node: str
    req: int
    have_epoch: int
    have_seq: int
    make_table: Callable[[], DialogTable]
    max_queued: int = MAX_QUEUED
    queued: list[Update] = field(default_factory=list)
    overflowed: bool = False
    records: int = 0
    _staging: DialogTable | None = None

    def request(self) -> Icanhaz:
        """What to send to the publisher's snapshot endpoint."""
        return Icanhaz(self.node, self.req, self.have_epoch, self.have_seq)

    def queue(self, update: Update) -> None:
        """An update heard on the PUB channel (or replayed) while the exchange runs."""
        if len(self.queued) >= self.max_queued:
            self.overflowed = True
            return
        self.queued.append(update)

    def receive(self, msg: Update | Chunk | Kthxbai, now: float, wall: float) -> Synced | None:
        """One message of the answer; a ``Synced`` when it is complete."""
        if isinstance(msg, Update):
            self.queue(msg)
            return None
        if msg.req != self.req or msg.node != self.node:
            return None  # rule 4: another exchange's
        if isinstance(msg, Chunk):
            if self._staging is None:
                self._staging = self.make_table()
            apply = self._staging.apply
            for rec in msg.records:
                apply(["c", *rec], now, wall)
            self.records += len(msg.records)
            return None
        table = None
        if msg.full:
            table = self._staging if self._staging is not None else self.make_table()
        self._staging = None
        return Synced(msg.epoch, msg.seq, table, self.queued, self.records)
