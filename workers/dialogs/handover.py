"""Dialogs that change worker: what a worker holds back while the dialogs it is owed are on
their way (docs/dialogs.md "Dialogs follow their Call-ID"). Sans-IO: time is an argument.

Rules:
1. A worker *expects* a hand-over from a source until that source's ``HANDED`` arrives or
   the wait ends: from the node's state plane when it starts (restored or adopted dialogs)
   and when another worker vanishes (its dialogs, from the state plane's mirror), and from
   every worker already there when it joins (the dialogs whose Call-IDs it takes). A
   ``HANDED`` heard before it was expected counts: sources race the worker's own view.
   A worker that comes back into the view before its ``HANDED`` was never gone (the edge
   dropped it for late heartbeats, a stall of a second on a loaded box, and took it back):
   it kept its dialogs, its host's state plane says nothing for a live worker, and the wait
   for it ends then (``cancel``), not 15 s later.
   The worker that was out expects, from when it learns it may have been (``owners.py``
   rule 7) and for ``BACK_WAIT_S`` at most, ``stateplane@h`` from every other host ``h``:
   their workers started the calls of its Call-IDs meanwhile, and their state planes hand
   those to it as to a joiner, ``HANDED`` included when there were none.
2. While any hand-over is expected, a message that needs a dialog this worker does not hold
   (an in-dialog request, a CANCEL without its INVITE here, a response to an INVITE) is
   held, not served: served without its dialog it would be forwarded statelessly and the
   call would end without its CDR (the cause of issue 11's lost CDRs after a restart).
3. Held messages are bounded (``MAX_HELD``); past it the oldest is served as it is and
   counted (``held_overflow``). Waits are bounded too (``WAIT_S``): a source that never
   says ``HANDED`` (it died, or the state plane is down) costs a delay, never a message.
4. When nothing is expected any more the held messages are served in arrival order, by the
   worker that owns their Call-ID then (the worker set may have changed meanwhile).
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

#: how long a worker waits for a source's HANDED (a restore waits up to 10 s for the
#: workers of the last run, stateplane/handover.py, plus its own settling)
WAIT_S = 15.0
#: how long a worker back in the edge's ring waits for each other host's HANDED (rule 1):
#: a state plane hands a joiner of another host its dialogs once that host's workers let go
#: of them, 5 s at most after it heard of it (``stateplane/handover.py`` JOIN_WAIT_S), a
#: heartbeat or two after the edge took the worker back; a false alarm costs this, not 15 s
BACK_WAIT_S = 8.0
#: messages held at most (~1 KB each); the oldest is served as it is past it
MAX_HELD = 10_000
#: a HANDED heard before it was expected is remembered this long
REMEMBER_S = 60.0


class Withheld(Exception):
    """The message needs a dialog that is on its way here (rule 2): hold it."""


class Forward(Exception):
    """The message's Call-ID belongs to another worker now: pass it on."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


class HoldGate:
    """Rule 1's expectations and rule 2's held messages."""

    __slots__ = ("_expected", "_handed", "_held", "counters")

    def __init__(self) -> None:
        self._expected: dict[str, float] = {}  # source -> wait ends
        self._handed: dict[str, float] = {}  # source -> heard at (rule 1: early HANDEDs)
        self._held: deque[Any] = deque()
        self.counters: Counter[str] = Counter()

    def expect(self, source: str, now: float, wait_s: float = WAIT_S) -> None:
        if self._handed.pop(source, None) is not None:
            return  # it came first
        self._expected[source] = max(self._expected.get(source, 0.0), now + wait_s)

    def handed(self, source: str, now: float) -> None:
        if self._expected.pop(source, None) is None:
            self._handed[source] = now
            if len(self._handed) > 1024:  # bounded: the oldest are stale
                for s in sorted(self._handed, key=self._handed.__getitem__)[:512]:
                    del self._handed[s]

    def cancel(self, source: str) -> bool:
        """Rule 1: ``source`` will send nothing (its worker is back): no longer expected,
        and not remembered as heard either. True when it was expected."""
        if self._expected.pop(source, None) is None:
            return False
        self.counters["waits_cancelled"] += 1
        return True

    def pending(self) -> bool:
        return bool(self._expected)

    @property
    def expected(self) -> list[str]:
        return sorted(self._expected)

    def hold(self, item: Any) -> Any | None:
        """Keep ``item``; returns the oldest one when the bound is passed (serve it now)."""
        self._held.append(item)
        self.counters["held"] += 1
        if len(self._held) > MAX_HELD:
            self.counters["held_overflow"] += 1
            return self._held.popleft()
        return None

    def expire(self, now: float) -> list[str]:
        """Sources whose wait ended without their HANDED (rule 3); forgets old early ones."""
        gone = [s for s, until in self._expected.items() if until <= now]
        for s in gone:
            del self._expected[s]
        self.counters["waits_expired"] += len(gone)
        for s in [s for s, at in self._handed.items() if now - at > REMEMBER_S]:
            del self._handed[s]
        return gone

    def take_released(self) -> list[Any]:
        """Rule 4: every held message once nothing is expected, oldest first."""
        if self._expected or not self._held:
            return []
        out = list(self._held)
        self._held.clear()
        self.counters["released"] += len(out)
        return out

    def __len__(self) -> int:
        return len(self._held)

    def stats(self) -> dict[str, Any]:
        return {"held": len(self._held), "expected": self.expected, **self.counters}
