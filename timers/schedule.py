"""The timer schedule: one timer per key, absolute deadlines, a heap with lazy deletion.

Sans-IO (STYLE.md 3.5, cachetools ``TLRUCache.expire(time)``): time is an argument, nothing
here reads a clock, sleeps or logs.

Rules:
1. A key holds at most one timer. Arming a key that is armed replaces its timer (a refresh);
   the old heap entry stays behind and is skipped when it surfaces (lazy deletion), because
   removing from the middle of a heap is O(n).
2. ``expire(now, max_batch)`` returns at most ``max_batch`` timers whose deadline is ``<= now``,
   in deadline order (arming order among equal deadlines). A timer is never returned before
   its deadline and never twice: it leaves the table when it is returned.
3. Dead heap entries are bounded: when they outnumber live timers the heap is rebuilt from
   the table, so memory tracks what is armed, not how often it was refreshed.
4. The table and the heap hold plain tuples of atomic values (str, bytes, float, int), which
   the cyclic garbage collector untracks (it untracks exact tuples only, so not a NamedTuple):
   a million armed timers cost it nothing; ``Timer`` is built only for what leaves. As slotted
   objects they were a million tracked objects, and each full collection paused the loop for
   tens of milliseconds (measured: p99 lateness ~100 ms at 1 000 000 armed).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Final, NamedTuple

#: rebuild the heap when it holds this many more entries than live timers (rule 3); the
#: constant keeps a small schedule from rebuilding on every refresh
COMPACT_SLACK = 1024


class Timer(NamedTuple):
    """One armed timer. ``armer``/``gen``/``epoch``/``since`` are the service's bookkeeping
    (docs/timers.md): who armed it, the host-wide monotonic ns of the arm, the armer's sync
    epoch, and when the service got it (a timer re-armed after a restart may be overdue).
    ``seq`` names its heap entry (rule 1)."""

    key: str
    deadline: float
    kind: str
    payload: bytes
    armer: str = ""
    gen: int = 0
    epoch: int = 0
    since: float = 0.0
    seq: int = 0


#: what the table stores: a Timer's fields as a plain tuple (rule 4; ``SEQ`` is its last)
_Row = tuple[str, float, str, bytes, str, int, int, float, int]
SEQ: Final = 8


class Schedule:
    __slots__ = ("_heap", "_seq", "_timers")

    def __init__(self) -> None:
        self._timers: dict[str, _Row] = {}
        # (deadline, arming sequence, key): the sequence orders equal deadlines, and an entry
        # is live while its key's row carries the same sequence
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: str) -> bool:
        return key in self._timers

    def get(self, key: str) -> Timer | None:
        row = self._timers.get(key)
        return None if row is None else Timer._make(row)

    def timers(self) -> Iterator[Timer]:
        """Every armed timer, in no particular order."""
        return map(Timer._make, list(self._timers.values()))

    def arm(self, key: str, deadline: float, kind: str, payload: bytes = b"", *,
            armer: str = "", gen: int = 0, epoch: int = 0, since: float = 0.0) -> None:  # fmt: skip
        """Arm ``key`` to fire at ``deadline``, replacing any timer it had (rule 1)."""
        self._seq += 1
        self._timers[key] = (key, deadline, kind, payload, armer, gen, epoch, since, self._seq)
        heapq.heappush(self._heap, (deadline, self._seq, key))
        if len(self._heap) > 2 * len(self._timers) + COMPACT_SLACK:
            self._compact()

    def set_epoch(self, key: str, epoch: int) -> None:
        """Re-stamp an armed timer with its armer's sync epoch (same heap entry)."""
        r = self._timers[key]
        self._timers[key] = (r[0], r[1], r[2], r[3], r[4], r[5], epoch, r[7], r[8])

    def cancel(self, key: str) -> Timer | None:
        """Disarm ``key``; returns the timer it had, or None."""
        row = self._timers.pop(key, None)
        return None if row is None else Timer._make(row)

    def next_deadline(self) -> float | None:
        """The earliest deadline armed, or None when nothing is."""
        heap, timers = self._heap, self._timers
        while heap:
            deadline, seq, key = heap[0]
            row = timers.get(key)
            if row is not None and row[SEQ] == seq:
                return deadline
            heapq.heappop(heap)  # cancelled or replaced: drop it now that it surfaced
        return None

    def expire(self, now: float, max_batch: int) -> list[Timer]:
        """Remove and return up to ``max_batch`` timers due at ``now``, in deadline order."""
        heap, timers = self._heap, self._timers
        out: list[Timer] = []
        while heap and len(out) < max_batch and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            row = timers.get(key)
            if row is not None and row[SEQ] == seq:
                del timers[key]
                out.append(Timer._make(row))
        return out

    def _compact(self) -> None:
        live = self._timers
        self._heap = [e for e in self._heap if (r := live.get(e[2])) is not None and r[SEQ] == e[1]]
        heapq.heapify(self._heap)
