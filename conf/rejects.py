"""Refused input, counted per source and logged in aggregate.

A peer decides how many of its messages we refuse and how many of its connections we close;
it must not decide how many lines we log. ``RejectTally`` is sans-IO (the caller passes
``now``); ``log_rejects`` writes what it returns.

Rules:
1. ``add`` counts one refusal (a malformed message, a connection closed or refused) under its
   source address and a reason; nothing is logged per refusal. Reasons are names from a fixed,
   small set (``SipError.key``, ``tcp_<close reason>``), never text the peer wrote.
2. Every ``interval_s``, ``take`` returns one summary per source seen since the last one, with
   its counts by reason, how many were answered and one ``sample`` detail: the ``rejected``
   log line. A source that sent nothing bad in an interval costs no line.
3. At most ``max_sources`` sources are held per interval; refusals from further sources are
   counted in one ``others`` summary (with the number of refusals, not of sources), so memory
   and lines per interval stay bounded whatever the number of addresses a flood uses.
4. ``totals`` counts every refusal by reason since start, for ``load_stats`` and
   ``sipline ctl stats``: the counters survive the aggregation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import structlog

log = structlog.get_logger()

#: the summary of the sources past ``max_sources``
OTHERS = "others"
#: Sources summarised per interval, each a few hundred bytes: pike's own table defaults to
#: thousands of sources, but a summary line each would be the log flood this module prevents.
DEFAULT_MAX_SOURCES = 256
#: the sample detail is the parser's message, which may quote what the peer sent
SAMPLE_CHARS = 120


class _Source:
    __slots__ = ("answered", "count", "reasons", "sample")

    def __init__(self, sample: str) -> None:
        self.count = 0
        self.answered = 0
        self.reasons: Counter[str] = Counter()
        self.sample = sample[:SAMPLE_CHARS]


class RejectTally:
    """Refusals per source for the current interval, and in total by reason."""

    __slots__ = ("_next", "_others", "_since", "_sources", "interval_s", "max_sources", "totals")

    def __init__(
        self, interval_s: float, now: float, max_sources: int = DEFAULT_MAX_SOURCES
    ) -> None:
        self.interval_s = interval_s
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}
        self._others: _Source | None = None
        self._since = now
        self._next = now + interval_s
        #: refusals by reason since start (rule 4)
        self.totals: Counter[str] = Counter()

    def add(self, src: str, reason: str, detail: str = "", answered: bool = False) -> None:
        """Count one refusal of input from ``src`` (an address, no port: a flood varies it)."""
        self.totals[reason] += 1
        entry = self._sources.get(src)
        if entry is None:
            if len(self._sources) < self.max_sources:
                entry = self._sources[src] = _Source(detail)
            else:
                entry = self._others
                if entry is None:
                    entry = self._others = _Source(detail)
        entry.count += 1
        entry.answered += answered
        entry.reasons[reason] += 1

    def due(self, now: float) -> bool:
        """True once the interval is over (whether or not anything was refused)."""
        return now >= self._next

    def take(self, now: float) -> list[dict[str, Any]]:
        """The summaries of the interval ending now (rule 2), and start the next one."""
        took = round(now - self._since, 1)
        out = [_summary(src, e, took) for src, e in self._sources.items()]
        if self._others is not None:
            out.append(_summary(OTHERS, self._others, took))
        self._sources = {}
        self._others = None
        self._since = now
        self._next = now + self.interval_s
        return out


def _summary(src: str, e: _Source, interval_s: float) -> dict[str, Any]:
    return {"src": src, "count": e.count, "answered": e.answered, "reasons": dict(e.reasons),
            "sample": e.sample, "interval_s": interval_s}  # fmt: skip


def log_rejects(tally: RejectTally, now: float) -> None:
    """One ``rejected`` line per source of the interval ending now (rule 2)."""
    for line in tally.take(now):
        log.info("rejected", **line)
