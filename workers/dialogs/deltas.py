"""A worker's dialog deltas to the node's state plane, and their repair after a loss.

Rules:
1. After every loop iteration the deltas it produced join the pipe's batch
   (``stateplane-deltas.ipc``, a bounded ``PushPipe``), which leaves at once or, with
   ``defer`` (the worker's ``[bus] flush_ms``), at the worker's next bus flush, just before
   the output of the messages that made them (``workers/bus.py`` rule 3): one send per flush
   instead of one per loop iteration. A batch the pipe cannot take (the state plane is
   stopped or far behind) is lost: counted ``drop_deltas``, and the worker now owes the
   state plane a **resync**; so does a batch the table itself dropped (``deltas_dropped``).
2. A resync starts at a heartbeat once the pipe has drained: ``["s+", worker, ""]`` (or
   ``"fresh"`` when no state plane has handed this worker its dialogs yet: it holds none from
   before, so a restore still owes it those it owns), then
   every live dialog of the table as a "c" delta in batches of ``RESYNC_CHUNK``, one batch
   per loop turn, then ``["s-", worker, ""]``, all through the same pipe, in order with the
   live deltas. The state plane replaces each dialog it hears and, at ``s-``, removes the
   dialogs it holds for this worker that the resync did not name (their ends were lost).
   Deltas of calls that change meanwhile follow the record they change, in the same FIFO,
   so nothing is applied out of order.
3. A resync whose batch the pipe refuses is abandoned and started again at a later heartbeat.
4. A state plane restarted alone (docs/operations.md) starts with an empty mirror, or one
   from its disk that misses what changed while it was down: the worker owes it a resync as
   soon as it sees a new state plane, i.e. the socket file of ``stateplane-deltas.ipc`` is
   another file than the one it saw at the previous heartbeat (inode and change time). The
   first file a worker sees owes nothing: the state plane started with it or before it.
5. A worker that let go of the dialogs a joining worker takes says so with
   ``["y", worker, joiner]`` after its live deltas, so the state plane hands the joiner
   those dialogs from its mirror only once it holds their last state (``workers/dialogs/handover.py``).
6. On a host of several (``dialogstate/hosts.py``) the worker tells the state plane the other
   hosts' workers it sees, ``["ring", worker, [[ident, endpoint], ...]]``, whenever that
   changes, before the ``y`` markers that follow from it; a send the pipe refuses is tried
   again at each heartbeat, and a resync starts with the last one.
7. Records another host handed to a worker of ours, sent to this one to keep
   (``workers/dialogs/owners.py`` rule 6), go to the state plane as
   ``["k", worker, owner, [record, ...]]`` (``stateplane/handover.py`` rule 6).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from conf.pipe import PushPipe
from dialogstate.table import DialogTable

#: records per resync message (~0.5 KB each)
RESYNC_CHUNK = 500


class DeltaLink:
    def __init__(self, pipe: PushPipe, table: DialogTable, worker_id: str,
                 counters: Counter[str], path: str = "") -> None:  # fmt: skip
        self.pipe, self.table, self.worker_id, self.counters = pipe, table, worker_id, counters
        #: the state plane's socket file, and which file it was at the last heartbeat (rule 4)
        self.path = path
        self._file: tuple[int, int] | None = None
        self.loop = asyncio.get_running_loop()
        self.owed = False
        self._dropped_seen = 0
        self._resync: Iterator[list[list[Any]]] | None = None
        #: whether no state plane has handed this worker anything yet (rule 2's ``fresh``)
        self.fresh: Callable[[], bool] = lambda: False
        #: rule 6: the last ring told, and whether the pipe refused it
        self._ring: list[list[str]] | None = None
        self._ring_owed = False
        #: rule 1: asks for a flush of the pipe soon; None sends each iteration's batch at once
        self.defer: Callable[[], None] | None = None

    def after_iteration(self) -> None:
        """Rule 1."""
        t = self.table
        if t.counters["deltas_dropped"] != self._dropped_seen:
            self._dropped_seen = t.counters["deltas_dropped"]
            self.owed = True
        if not t.deltas:
            return
        if not self.pipe.add(t.take_deltas(), b""):
            self.counters["drop_deltas"] += 1
            self.owed = True
        elif self.defer is None:
            self.pipe.flush()
        else:
            self.defer()

    def yielded(self, joiner: str) -> None:
        """Rule 5."""
        self.after_iteration()  # what changed before is older than the marker
        if not self.pipe.add([["y", self.worker_id, joiner]], b""):
            self.counters["drop_deltas"] += 1  # the joiner's hand-over waits to its deadline
            return
        self.pipe.flush()

    def keep(self, owner: str, records: list[list[Any]]) -> None:
        """Rule 7."""
        if not self.pipe.add([["k", self.worker_id, owner, records]], b""):
            self.counters["drop_deltas"] += 1  # what it carried depends on the owner alone
            return
        self.pipe.flush()

    def ring(self, pairs: list[list[str]]) -> None:
        """Rule 6."""
        self._ring = pairs
        self.after_iteration()  # what changed before is older than the ring
        self._ring_owed = not self.pipe.add([["ring", self.worker_id, pairs]], b"")
        if self._ring_owed:
            self.counters["drop_deltas"] += 1
            return
        self.pipe.flush()

    def heartbeat(self) -> None:
        """Rule 2: start a resync when one is owed and the pipe has room again."""
        if self._ring_owed and self._ring is not None:
            self.ring(self._ring)
        if self._state_plane_restarted():
            self.owed = True
            self.counters["stateplane_restarts_seen"] += 1
        if self.owed and self._resync is None and not self.pipe.backlog_msgs:
            self.owed = False
            self._resync = self._batches()
            self.counters["delta_resyncs"] += 1
            self.loop.call_soon(self._step)

    def _state_plane_restarted(self) -> bool:
        """Rule 4."""
        if not self.path:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False  # none now: whichever comes next is compared with the last one
        seen, self._file = self._file, (st.st_ino, st.st_ctime_ns)
        return seen is not None and seen != self._file

    def _batches(self) -> Iterator[list[list[Any]]]:
        if self._ring is not None:  # rule 6: a restarted state plane knows no other host
            yield [["ring", self.worker_id, self._ring]]
        yield [["s+", self.worker_id, "fresh" if self.fresh() else ""]]
        keys = self.table.keys()
        for start in range(0, len(keys), RESYNC_CHUNK):
            now, wall = self.loop.time(), time.time()
            recs = (self.table.record(k, now, wall) for k in keys[start : start + RESYNC_CHUNK])
            yield [["c", *r] for r in recs if r is not None]
        yield [["s-", self.worker_id, ""]]

    def _step(self) -> None:
        step = self._resync
        if step is None:
            return
        batch = next(step, None)
        if batch is None:
            self._resync = None
            return
        self.after_iteration()  # live deltas first: they are older than this batch
        if not self.pipe.add(batch, b""):  # rule 3
            self.counters["drop_deltas"] += 1
            self.owed, self._resync = True, None
            return
        self.pipe.flush()
        self.loop.call_soon(self._step)
