"""Who may ask the state plane for a snapshot, and how often: sans-IO, ``now`` passed in
(``docs/security.md`` "Network peers of the state plane").

Rules:
1. One answer per asker at a time. An asker is the node its CURVE key authenticated (the
   ZAP User-Id) or, without CURVE, its ZeroMQ routing id (one connection). A new ``ICANHAZ``
   from an asker whose answer is in progress replaces that answer: the asker gave up on it
   (a replica asks again after 5 s without progress and ignores chunks of an older request).
2. At most ``MAX_ANSWERS`` answers are in progress, and asks are admitted at most
   ``ASK_BURST`` at once, refilled at ``ASKS_PER_S`` (a token bucket); over either, the ask
   is refused and counted, never queued: a real replica asks again after its sync timeout.
   A replacing ask needs a token but no new place.
3. An answer whose next message the asker's pipe has not taken for ``STALL_S`` is dropped
   and counted: an asker that stops reading holds one pipe's HWM of messages for that long
   and never delays anyone else's answer (the adapter sends each answer on its own, NOBLOCK).
   When every place is taken, an answer whose pipe has taken nothing for ``IDLE_S`` gives
   its place to the new ask (``idle``): a peer reading its answer takes a message every few
   milliseconds, so askers that stop reading cannot keep it out.
4. Without CURVE (ipc) an asker is anyone who may open the socket file: these rules keep the
   process whole and bounded, and serve a reading peer before askers that do not read, but
   many askers can still use up the rate; with CURVE only ``[[peer]]`` nodes ask at all.
"""

from __future__ import annotations

#: answers built at once: a full answer holds the table's key list while it runs
MAX_ANSWERS = 4
#: asks admitted at once (a pair's replica asks once per gap, restart or ``ctl sync``)
ASK_BURST = 8
#: asks admitted per second after a burst
ASKS_PER_S = 2.0
#: how long an asker may leave its pipe full before its answer is dropped
STALL_S = 5.0
#: how long a full pipe may keep an answer's place when a new asker needs one
IDLE_S = 0.5


class AskGate:
    """Rules 1 and 2: admit or refuse an ask."""

    __slots__ = ("_at", "_tokens", "burst", "max_answers", "rate")

    def __init__(self, now: float, *, rate_per_s: float = ASKS_PER_S, burst: int = ASK_BURST,
                 max_answers: int = MAX_ANSWERS) -> None:  # fmt: skip
        self.rate, self.burst, self.max_answers = rate_per_s, burst, max_answers
        self._tokens = float(burst)
        self._at = now

    def admit(self, now: float, in_progress: int, replaces: bool) -> str:
        """"" to admit the ask, else why it is refused (``busy`` or ``rate``)."""
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if not replaces and in_progress >= self.max_answers:
            return "busy"
        if self._tokens < 1.0:
            return "rate"
        self._tokens -= 1.0
        return ""


def stalled(last_sent: float, now: float) -> bool:
    """Rule 3: the asker's pipe has been full too long."""
    return now - last_sent > STALL_S


def idle(last_sent: float, now: float) -> bool:
    """Rule 3: the answer may give its place to a new asker."""
    return now - last_sent > IDLE_S
