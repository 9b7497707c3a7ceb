"""The transaction base: states, inputs, the transition rule and the two timer slots.

Rules:
1. Each machine is a table ``TRANSITIONS[(State, Input)] = (effect, next_state)`` (h2
   ``stream.py``). ``_process`` looks the pair up, sets the next state, then runs the effect.
   A pair that is not in the table moves the transaction to Terminated and raises
   ``InvalidTransition``; nothing else may escape (tests/workers/test_transactions_fsm.py).
2. Every input a *peer* can cause (a request, an ACK, a CANCEL, a response, a transport error)
   is defined in every live state, if only as "absorb": a peer can never kill a transaction by
   sending something odd. Undefined pairs are TU or table bugs (e.g. a final response sent
   twice, a timer that was not armed).
3. Time is an argument. A transaction arms at most two timers: one retransmission timer
   (A, E or G, UDP only) and one wait timer (B, D, F, H, I, J, K, L or M). ``next_deadline()``
   is the earlier one; ``handle_timer(now)`` fires each due timer once, the wait timer first on
   a tie (a retransmission at the moment the transaction gives up is useless).
4. A retransmission timer re-arms from its scheduled deadline, not from ``now``, so lag does
   not drift the schedule; if the next tick is already past (the loop stalled), it is re-armed
   from ``now`` instead of firing a burst.
5. A zero-length wait timer (reliable transports) is not armed: its input runs at once, in
   the same call, so the transaction is Terminated when the call returns.
6. Terminated is final: timers are disarmed, buffers dropped, and a ``Terminated`` event is the
   last event queued. The transaction keeps no reference to its table.
7. ``abandon(now)``: the TU gives the transaction up because its messages go to another worker
   now (``workers/stateful.py`` rule 12). It sends nothing. A state with a timer to end it
   runs on to that timer (a request still retransmitted: the peer may not have it yet); a
   state that waits for the TU alone (an INVITE client or server Proceeding, a non-INVITE
   server before its final) would wait forever, so it ends at once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, ClassVar

from mypy_extensions import mypyc_attr

from workers.txn.events import (
    Event,
    InvalidTransition,
    Terminated,
    TimedOut,
    Transmit,
    TransportFailed,
)
from workers.txn.timers import DEFAULT_TIMERS, TimerConfig


# str mixins: the tables are looked up on every input, and a str-based member hashes in C
# (a plain Enum's __hash__ is Python code, ~10 % of a transaction's cost)
class State(str, enum.Enum):
    IDLE = "Idle"  # created, first input not yet given
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"  # RFC 6026
    TERMINATED = "Terminated"


class Input(str, enum.Enum):
    SEND_REQUEST = "send request"  # client: the TU hands over the request
    RECV_REQUEST = "receive request"  # server: the request or a retransmission of it
    RECV_ACK = "receive ACK"  # server INVITE: an ACK matched the transaction
    RECV_CANCEL = "receive CANCEL"  # server INVITE: a CANCEL matched the transaction
    CANCEL = "cancel"  # client INVITE: the TU wants the request cancelled
    RECV_1XX = "receive 1xx"
    RECV_2XX = "receive 2xx"
    RECV_FINAL = "receive 300-699"
    SEND_1XX = "send 1xx"
    SEND_2XX = "send 2xx"
    SEND_FINAL = "send 300-699"
    TRANSPORT_ERROR = "transport error"
    ABANDON = "abandon"  # the TU: the call's messages go to another worker now (rule 7)
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"


TIMER_INPUTS = frozenset(i for i in Input if i.name.startswith("TIMER_"))

Effect = Callable[[Any, float, Any], None]
Table = dict[tuple[State, Input], tuple[Effect | None, State]]

_MAX_FIRES_PER_CALL = 4  # two timers, each at most once, plus margin; a guard, never reached


# compiled by mypyc (conf/compiled.py), a class is closed to interpreted subclasses unless it
# says so here (and so must each of its bases): tests/workers/test_transactions_fsm.py
# subclasses the four machines to trace the inputs they process
@mypyc_attr(allow_interpreted_subclasses=True)
class Transaction:
    """What the four machines share. Subclasses set ``TRANSITIONS`` and ``kind``."""

    TRANSITIONS: ClassVar[Table] = {}
    kind: ClassVar[str] = "transaction"
    is_invite: ClassVar[bool] = False

    __slots__ = (
        "_chain",
        "_events",
        "_heap_at",
        "_retx",
        "_retx_at",
        "_retx_iv",
        "_wait",
        "_wait_at",
        "context",
        "dest",
        "key",
        "reliable",
        "state",
        "timers",
    )

    def __init__(
        self,
        key: tuple[Any, ...],
        *,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        dest: Any = None,
        context: Any = None,
    ) -> None:
        self.key = key
        self.reliable = reliable
        self.timers = timers
        #: opaque to the transaction: where the user sends this transaction's ``Transmit``s
        self.dest = dest
        #: opaque to the transaction: the TU's own state (a proxy's response context)
        self.context = context
        self.state = State.IDLE
        self._retx: Input | None = None
        self._retx_at = 0.0
        self._retx_iv = 0.0
        self._wait: Input | None = None
        self._wait_at = 0.0
        self._chain: Input | None = None
        self._events: list[Event] | None = None  # created on first event: most are short
        #: the deadline the owning table has a heap entry for (table bookkeeping only)
        self._heap_at: float | None = None

    # -- events ------------------------------------------------------------------------------

    def next_event(self) -> Event | None:
        """Pop the oldest queued event, or None."""
        ev = self._events
        if not ev:
            return None
        return ev.pop(0)

    def _emit(self, event: Event) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    # -- timers ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Absolute time of the next timer, or None when none is armed."""
        if self._wait is not None:
            if self._retx is not None and self._retx_at < self._wait_at:
                return self._retx_at
            return self._wait_at
        if self._retx is not None:
            return self._retx_at
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every armed timer whose deadline is at or before ``now``, each once.

        Raises:
            InvalidTransition: the fired timer has no entry for the state (a bug).
        """
        for _ in range(_MAX_FIRES_PER_CALL):
            wait, retx = self._wait, self._retx
            if (
                wait is not None
                and self._wait_at <= now
                and (retx is None or self._wait_at <= self._retx_at)
            ):
                self._wait = None
                self._process(wait, now, None)
            elif retx is not None and self._retx_at <= now:
                self._retx = None  # _retx_at keeps the fired deadline for _arm_retx
                self._process(retx, now, None)
            else:
                return

    def _arm_wait(self, timer: Input, delay: float, now: float) -> None:
        if delay <= 0:
            self._wait = None
            self._chain = timer  # rule 5: runs right after the current effect
        else:
            self._wait, self._wait_at = timer, now + delay

    def _arm_retx(self, timer: Input, interval: float, now: float, *, rearm: bool) -> None:
        """Arm A, E or G ``interval`` after its last deadline (``rearm``) or after ``now``."""
        at = (self._retx_at if rearm else now) + interval
        if at <= now:  # rule 4: stalled loop, skip the missed ticks
            at = now + interval
        self._retx, self._retx_at, self._retx_iv = timer, at, interval

    def _disarm(self) -> None:
        self._retx = self._wait = self._chain = None

    # -- the transition rule -----------------------------------------------------------------

    def _process(self, inp: Input, now: float, arg: Any) -> None:
        """Apply one input through the table (module rule 1)."""
        state = self.state
        try:
            effect, nxt = self.TRANSITIONS[(state, inp)]
        except KeyError:
            if state is not State.TERMINATED:
                self._terminate()
            raise InvalidTransition(
                f"{self.kind}: {inp.value} is not defined in state {state.value}"
            ) from None
        self.state = nxt
        if effect is not None:
            effect(self, now, arg)
        if nxt is State.TERMINATED:
            self._terminate()
        elif self._chain is not None:
            chained, self._chain = self._chain, None
            self._process(chained, now, None)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._disarm()
        self._drop_buffers()
        self._emit(Terminated())

    def _drop_buffers(self) -> None:
        """Release retransmission buffers (subclasses)."""

    # -- effects shared by all machines --------------------------------------------------------

    def _transport_failed(self, now: float, arg: Any) -> None:
        self._emit(TransportFailed())

    def _send(self, data: bytes | None, retransmission: bool) -> None:
        if data is not None:
            self._emit(Transmit(data, retransmission))

    def transport_error(self, now: float) -> None:
        """The transport could not deliver what this transaction sent (§17.1.4, §17.2.4)."""
        self._process(Input.TRANSPORT_ERROR, now, None)

    def abandon(self, now: float) -> None:
        """Rule 7: give the transaction up quietly (the call moved to another worker).

        Raises:
            InvalidTransition: Idle or Terminated (a TU bug).
        """
        self._process(Input.ABANDON, now, None)

    def __repr__(self) -> str:
        return f"<{self.kind} {self.state.value} {self.key!r}>"


def timed_out(letter: str) -> Effect:
    """The effect of a timeout timer: tell the TU which one fired."""

    def effect(txn: Transaction, now: float, arg: Any) -> None:
        txn._emit(TimedOut(letter))

    effect.__name__ = f"timed_out_{letter}"
    return effect
