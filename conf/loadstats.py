"""Load statistics every process logs as ``load_stats``.

Busy ratio follows OpenSIPS's definition of load: the share of time a process spends doing
work rather than waiting for events. The event loop does not tell us how long it waited, so
each handler adds the time it ran (``add_busy``); over an interval busy = worked / elapsed.
Ratios are kept per second for 10 minutes to give 1 s, 1 min and 10 min averages.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

from conf import compiled
from conf.guard import GUARD


class LoadMeter:
    """Busy time and counters of one process; the adapter feeds it, ``snapshot`` reads it."""

    __slots__ = ("_busy", "_history", "_last_busy", "_last_counts", "_last_sent", "_since",
                 "counters")  # fmt: skip

    def __init__(self, now: float) -> None:
        self._busy = 0.0
        self._since = now
        self._last_busy = 0.0
        self._history: deque[float] = deque(maxlen=600)  # one busy ratio per tick, ≤ 10 min
        #: monotonically increasing counts (msgs_in, msgs_out, drops by reason ...)
        self.counters: Counter[str] = Counter()
        self._last_counts: Counter[str] = Counter()
        self._last_sent: dict[str, float] = {}

    def add_busy(self, seconds: float) -> None:
        self._busy += seconds

    @property
    def busy_1s(self) -> float:
        """The last closed sample's busy ratio (0 before the first tick)."""
        return self._history[-1] if self._history else 0.0

    def control(self, role: str) -> dict[str, Any]:
        """The common part of a process's ``stats`` answer on its control socket."""
        return {"role": role, "counters": dict(self.counters), "busy_1s": round(self.busy_1s, 3),
                "errors": GUARD.totals(),
                "compiled": compiled.active()}  # which build of the codec runs: conf/compiled.py

    def tick(self, now: float) -> None:
        """Close the current sample; call about once a second."""
        elapsed = now - self._since
        if elapsed <= 0:
            return
        self._history.append(min(1.0, (self._busy - self._last_busy) / elapsed))
        self._last_busy = self._busy
        self._since = now

    def snapshot(self, interval_s: float) -> dict[str, object]:
        """Fields for a ``load_stats`` line: busy ratios and per-second rates of counters."""
        h = self._history
        rates = {
            f"{k}_per_s": round((v - self._last_counts[k]) / interval_s, 1)
            for k, v in self.counters.items()
            if not k.startswith("drop_")
        }
        drops = {k: v for k, v in self.counters.items() if k.startswith("drop_")}
        self._last_counts = Counter(self.counters)
        return {
            "busy_1s": round(h[-1], 3) if h else 0.0,
            "busy_1m": round(_mean(h, 60), 3),
            "busy_10m": round(_mean(h, 600), 3),
            **rates,
            "drops": drops,
            "errors": GUARD.totals(),  # exceptions caught, by kind (conf/guard.py)
        }


    def hop_rates(self, hops: dict[str, dict[str, float]],
                  interval_s: float) -> dict[str, dict[str, float]]:  # fmt: skip
        """Per-hop ``load_stats`` fields: each hop's ``sent`` total becomes ``sent_per_s``
        since the last call (a hop seen for the first time counts from 0)."""
        out: dict[str, dict[str, float]] = {}
        last = self._last_sent
        for peer, h in hops.items():
            rate = (h["sent"] - last.get(peer, 0)) / interval_s
            out[peer] = {"queued": h["queued"], "oldest_ms": h["oldest_ms"],
                         "sent_per_s": round(max(0.0, rate), 1)}  # fmt: skip
        self._last_sent = {peer: h["sent"] for peer, h in hops.items()}
        return out


def _mean(h: deque[float], n: int) -> float:
    if not h:
        return 0.0
    items = list(h)[-n:]
    return sum(items) / len(items)
