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
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

#: rebuild the heap when it holds this many more entries than live timers (rule 3); the
#: constant keeps a small schedule from rebuilding on every refresh
COMPACT_SLACK = 1024


@dataclass(slots=True, eq=False)
class Timer:
    """One armed timer. ``armer``/``gen``/``epoch``/``since`` are the service's bookkeeping
    (docs/timers.md): who armed it, the host-wide monotonic ns of the arm, the armer's sync
    epoch, and when the service got it (a timer re-armed after a restart may be overdue)."""

    key: str
    deadline: float
    kind: str
    payload: bytes
    armer: str = ""
    gen: int = 0
    epoch: int = 0
    since: float = 0.0


class Schedule:
    __slots__ = ("_heap", "_seq", "_timers")

    def __init__(self) -> None:
        self._timers: dict[str, Timer] = {}
        # (deadline, arming sequence, timer): the sequence orders equal deadlines and keeps
        # heapq from ever comparing two Timers
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: str) -> bool:
        return key in self._timers

    def get(self, key: str) -> Timer | None:
        return self._timers.get(key)

    def timers(self) -> Iterator[Timer]:
        """Every armed timer, in no particular order."""
        return iter(list(self._timers.values()))

    def arm(self, key: str, deadline: float, kind: str, payload: bytes = b"", *,
            armer: str = "", gen: int = 0, epoch: int = 0, since: float = 0.0) -> Timer:  # fmt: skip
        """Arm ``key`` to fire at ``deadline``, replacing any timer it had (rule 1)."""
        timer = Timer(key, deadline, kind, payload, armer, gen, epoch, since)
        self._timers[key] = timer
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, timer))
        if len(self._heap) > 2 * len(self._timers) + COMPACT_SLACK:
            self._compact()
        return timer

    def cancel(self, key: str) -> Timer | None:
        """Disarm ``key``; returns the timer it had, or None."""
        return self._timers.pop(key, None)

    def next_deadline(self) -> float | None:
        """The earliest deadline armed, or None when nothing is."""
        heap, timers = self._heap, self._timers
        while heap:
            timer = heap[0][2]
            if timers.get(timer.key) is timer:
                return timer.deadline
            heapq.heappop(heap)  # cancelled or replaced: drop it now that it surfaced
        return None

    def expire(self, now: float, max_batch: int) -> list[Timer]:
        """Remove and return up to ``max_batch`` timers due at ``now``, in deadline order."""
        heap, timers = self._heap, self._timers
        out: list[Timer] = []
        while heap and len(out) < max_batch and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if timers.get(timer.key) is timer:
                del timers[timer.key]
                out.append(timer)
        return out

    def _compact(self) -> None:
        live = self._timers
        self._heap = [e for e in self._heap if live.get(e[2].key) is e[2]]
        heapq.heapify(self._heap)
