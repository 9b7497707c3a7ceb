"""What a process refuses from another one: counted always, logged with a bound.

A forged frame can arrive thousands of times a second, so each refusal is counted (the
caller's counter, in ``load_stats`` and ``ctl stats``) but an event is logged at most once
per ``interval_s``: the first at once, then one line carrying how many were refused since
the last (``refused``), with the fields of the latest.
"""

from __future__ import annotations

import math
from typing import Any

from conf.logging import LazyLogger

#: structlog is loaded at the first line: the commands import this module (conf/logging.py)
log = LazyLogger()

#: at most one line per event this often, whatever the rate of forged frames
INTERVAL_S = 10.0


class RefusalLog:
    __slots__ = ("_last", "_since", "event", "interval_s")

    def __init__(self, event: str, interval_s: float = INTERVAL_S) -> None:
        self.event, self.interval_s = event, interval_s
        self._last = -math.inf
        self._since = 0

    def note(self, now: float, **fields: Any) -> None:
        """One more refusal at ``now`` (seconds, any clock): logged if the interval has passed."""
        self._since += 1
        if now - self._last < self.interval_s:
            return
        log.warning(self.event, refused=self._since, **fields)
        self._last, self._since = now, 0


#: the one log of envelopes a process drops as malformed (``conf.pipe.drain_pull``, the
#: timers and the state plane's readers): a local process can send thousands a second
ENVELOPES = RefusalLog("envelope_dropped")
