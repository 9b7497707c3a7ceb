"""``[log]``: what every process logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """``[log]``: the JSON lines every process writes to stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    stats_interval_s: float = field(default=5.0, metadata=_range(0.1, 3600))
    """Every process logs ``load_stats`` this often."""
    slow_message_ms: float = field(default=50.0, metadata=_range(0, 60_000))
    """A message a worker takes longer than this to handle is logged as ``slow_message`` with
    its Call-ID, method, handling time and time queued since the ingress got it; 0 turns it
    off. DNS and cacheDB calls have their own thresholds (``[dns] slow_ms``)."""
    rejected_interval_s: float = field(default=10.0, metadata=_range(0.1, 3600))
    """Refused input (malformed messages, TCP connections closed or refused) is counted per
    source address and logged as one ``rejected`` line per source this often, never one line
    per message: a peer must not decide how much we log (``docs/security.md``)."""
