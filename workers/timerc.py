"""Timer C (RFC 3261 §16.6 step 11) of every INVITE branch the stateful core forwards, and
the 64*T1 a cancelled branch gets to answer (``workers/stateful.py`` rule 6).

One heap of (deadline, seq, context) for all of them; a context holds its own deadline
(``Proxied.timer_c_at``), and an entry is live while its context still has that deadline:
re-arming pushes a new entry instead of searching the heap (lazy deletion), and the heap is
compacted when dead entries outnumber live ones, as the transaction table's is.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from workers.proxied import Proxied


class TimerC:
    __slots__ = ("_heap", "_live", "_seq")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Proxied]] = []
        self._live = 0
        self._seq = itertools.count()

    def arm(self, ctx: Proxied, at: float | None) -> None:
        """(Re)arm or, with None, disarm the context's one long timer."""
        if (ctx.timer_c_at is None) != (at is None):
            self._live += 1 if at is not None else -1
        ctx.timer_c_at = at
        if at is None:
            return
        heap = self._heap
        heapq.heappush(heap, (at, next(self._seq), ctx))
        if len(heap) > 2 * self._live + 64:
            heap[:] = [e for e in heap if e[2].timer_c_at == e[0]]
            heapq.heapify(heap)

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> Iterator[Proxied]:
        """The contexts whose timer is due at ``now``; those the caller re-arms meanwhile are
        seen again only once their new deadline is due."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, ctx = heapq.heappop(heap)
            if ctx.timer_c_at == at:
                yield ctx
