"""Lateness of fired timers over a window: p50, p99, max and count. Sans-IO.

Every fire adds one sample (seconds past its deadline). A window keeps at most
``MAX_SAMPLES``; past that it keeps a uniform sample (reservoir sampling, Vitter's algorithm
R), so percentiles stay honest at any rate while memory stays bounded. ``max`` and ``count``
are exact.
"""

from __future__ import annotations

import random
from array import array

#: 5 000 fires/s over a 5 s stats interval is 25 000: exact percentiles at the target rate
MAX_SAMPLES = 65_536


class LatenessWindow:
    __slots__ = ("_rng", "_samples", "count", "max_s")

    def __init__(self, seed: int = 0) -> None:
        self._samples = array("d")
        self._rng = random.Random(seed)
        self.count = 0
        self.max_s = 0.0

    def add(self, late_s: float) -> None:
        self.count += 1
        self.max_s = max(self.max_s, late_s)
        if len(self._samples) < MAX_SAMPLES:
            self._samples.append(late_s)
            return
        i = self._rng.randrange(self.count)
        if i < MAX_SAMPLES:
            self._samples[i] = late_s

    def percentile(self, q: float) -> float:
        """The ``q`` quantile (0..1) of the window's samples; 0.0 when empty."""
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def summary_ms(self) -> dict[str, float | int]:
        """``load_stats`` fields, then a fresh window."""
        ordered = sorted(self._samples)
        n = len(ordered)

        def at(q: float) -> float:
            return round(ordered[min(n - 1, int(q * n))] * 1000, 2) if n else 0.0

        out = {"fired": self.count, "late_p50_ms": at(0.5), "late_p99_ms": at(0.99),
               "late_max_ms": round(self.max_s * 1000, 2)}  # fmt: skip
        self.reset()
        return out

    def reset(self) -> None:
        self._samples = array("d")
        self.count = 0
        self.max_s = 0.0
