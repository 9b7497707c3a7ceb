"""How the timer service adapts to load: a plain class fed numbers (STYLE.md 3.5).

Rules:
1. Once per window (a second) the service reports the window's p99 lateness and its
   overruns (wake-ups that left due timers behind because the batch was full).
2. Late (p99 above the threshold) or overrun: widen. The batch doubles up to its cap, so a
   backlog drains in fewer loop iterations, and wake-ups coalesce: the next wake-up waits up
   to ``coalesce_s`` past the next deadline (doubling up to its maximum), so timers that are
   close together fire in one batch and one send per worker instead of one wake-up each.
   Timers are never fired early to coalesce them; they fire a little later, together.
3. Calm (p99 under a quarter of the threshold, no overrun) for ``CALM_WINDOWS`` windows in
   a row: narrow one step back towards the base, so lateness returns to the minimum.
4. ``observe`` returns an ``Adaptation`` only when something changed: the service logs that
   as one ``timers_adapted`` event.
"""

from __future__ import annotations

from dataclasses import dataclass

#: calm windows in a row before narrowing: one quiet second after a burst proves little
CALM_WINDOWS = 3
#: the first coalescing step; below a millisecond the loop's timer resolution decides anyway
COALESCE_STEP_S = 0.001


@dataclass(frozen=True, slots=True)
class Adaptation:
    max_batch: int
    coalesce_s: float
    reason: str  # "late", "overrun" or "calm"


class BatchPolicy:
    __slots__ = ("_calm", "base_batch", "coalesce_s", "late_s", "max_batch", "max_cap",
                 "max_coalesce_s")  # fmt: skip

    def __init__(self, base_batch: int, max_cap: int, late_s: float, max_coalesce_s: float):
        self.base_batch = base_batch
        self.max_cap = max(base_batch, max_cap)
        self.late_s = late_s
        self.max_coalesce_s = max_coalesce_s
        #: what the service uses now
        self.max_batch = base_batch
        self.coalesce_s = 0.0
        self._calm = 0

    def observe(self, p99_s: float, overruns: int) -> Adaptation | None:
        """Feed one window's figures; returns the new setting when it changed."""
        if overruns or p99_s > self.late_s:
            self._calm = 0
            return self._set(min(self.max_cap, self.max_batch * 2), self._wider_coalesce(),
                             "overrun" if overruns else "late")  # fmt: skip
        if p99_s < self.late_s / 4:
            self._calm += 1
            if self._calm >= CALM_WINDOWS:
                self._calm = 0
                return self._set(max(self.base_batch, self.max_batch // 2),
                                 self._narrower_coalesce(), "calm")  # fmt: skip
        else:
            self._calm = 0
        return None

    def _wider_coalesce(self) -> float:
        return min(self.max_coalesce_s, max(COALESCE_STEP_S, self.coalesce_s * 2))

    def _narrower_coalesce(self) -> float:
        half = self.coalesce_s / 2
        return half if half >= COALESCE_STEP_S else 0.0

    def _set(self, batch: int, coalesce_s: float, reason: str) -> Adaptation | None:
        if batch == self.max_batch and coalesce_s == self.coalesce_s:
            return None
        self.max_batch, self.coalesce_s = batch, coalesce_s
        return Adaptation(batch, coalesce_s, reason)
