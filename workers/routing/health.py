"""Health of one destination: a total transition table over what the network and the
operator report (rules 1 and 2 of ``workers/routing/dispatcher.py``).

Sans-IO and clock-free: ``step`` feeds one ``Input`` to a ``Health``; the dispatcher turns
each change into a ``HealthChanged`` event.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class InvalidTransition(Exception):
    """A (state, input) pair missing from ``TRANSITIONS``: a bug in the table."""


class State(str, enum.Enum):
    UP = "up"
    SUSPECT = "suspect"  # failed lately, fewer than probe_threshold times: used, tried last
    DOWN = "down"  # not used; probed until it answers
    RECOVERING = "recovering"  # answered, fewer than probe_up_threshold times: not used yet
    DISABLED = "disabled"  # by the operator: not used, not probed


class Input(str, enum.Enum):
    PROBE_ALIVE = "probe answered"  # a final status in alive_codes
    PROBE_REFUSED = "probe refused"  # a final status not in alive_codes (503 by default)
    PROBE_TIMEOUT = "probe timed out"
    REQUEST_ANSWERED = "request answered"  # the proxy got a response in alive_codes (or 1xx)
    REQUEST_FAILED = "request failed"  # no response (Timer B/F, transport error), or 503
    DISABLE = "disable"
    ENABLE = "enable"


class Health:
    """What is known of one destination (mutable, owned by its ``DispatchSet``)."""

    __slots__ = ("fails", "held_until", "last_probe_at", "last_status", "next_probe_at",
                 "oks", "pending", "state")  # fmt: skip

    def __init__(self) -> None:
        self.state = State.UP
        self.fails = 0  # consecutive failures
        self.oks = 0  # consecutive successes
        self.last_probe_at: float | None = None  # when the last probe was answered or expired
        self.last_status: int | None = None  # of the last probe answer or report; None: none
        self.next_probe_at = 0.0  # 0: at the first due_probes call
        self.pending: str | None = None  # branch of the probe in flight
        self.held_until = 0.0  # 503 with Retry-After: not used before this


@dataclass(frozen=True, slots=True)
class Thresholds:
    down: int
    up: int


def _failure(h: Health, t: Thresholds) -> bool:
    h.fails += 1
    h.oks = 0
    return h.fails >= t.down


def _success(h: Health, t: Thresholds) -> bool:
    h.oks += 1
    h.fails = 0
    return h.oks >= t.up


def _reset(h: Health, t: Thresholds) -> bool:
    h.fails = h.oks = 0
    return False


Effect = Callable[[Health, Thresholds], bool] | None
S, I = State, Input
_OK = (I.PROBE_ALIVE, I.REQUEST_ANSWERED)
_BAD = (I.PROBE_REFUSED, I.PROBE_TIMEOUT, I.REQUEST_FAILED)


def _rows(state: State, ok: tuple[Effect, State, State], bad: tuple[Effect, State, State],
          disable: tuple[Effect, State, State], enable: tuple[Effect, State, State]
          ) -> dict[tuple[State, Input], tuple[Effect, State, State]]:  # fmt: skip
    rows = {(state, i): ok for i in _OK} | {(state, i): bad for i in _BAD}
    return rows | {(state, I.DISABLE): disable, (state, I.ENABLE): enable}


# fmt: off
TRANSITIONS: dict[tuple[State, Input], tuple[Effect, State, State]] = {
    # a suspect destination needs no proof of recovery: it never left service
    **_rows(S.UP, (_success, S.UP, S.UP), (_failure, S.SUSPECT, S.DOWN),
            (_reset, S.DISABLED, S.DISABLED), (None, S.UP, S.UP)),
    **_rows(S.SUSPECT, (_success, S.UP, S.UP), (_failure, S.SUSPECT, S.DOWN),
            (_reset, S.DISABLED, S.DISABLED), (None, S.SUSPECT, S.SUSPECT)),
    **_rows(S.DOWN, (_success, S.RECOVERING, S.UP), (_failure, S.DOWN, S.DOWN),
            (_reset, S.DISABLED, S.DISABLED), (None, S.DOWN, S.DOWN)),
    **_rows(S.RECOVERING, (_success, S.RECOVERING, S.UP), (_failure, S.DOWN, S.DOWN),
            (_reset, S.DISABLED, S.DISABLED), (None, S.RECOVERING, S.RECOVERING)),
    # the operator's word stands: late probe answers and reports change nothing; enabling
    # trusts the operator (Kamailio's "set_state a"), and failures take it down again
    **_rows(S.DISABLED, (None, S.DISABLED, S.DISABLED), (None, S.DISABLED, S.DISABLED),
            (None, S.DISABLED, S.DISABLED), (_reset, S.UP, S.UP)),
}
# fmt: on
USABLE = frozenset({State.UP, State.SUSPECT})


def step(h: Health, inp: Input, t: Thresholds) -> State:
    """Feed ``inp`` to ``h``; returns the state it was in (``h.state`` is the new one).

    Raises:
        InvalidTransition: the pair is not in the table (a table bug).
    """
    old = h.state
    try:
        effect, nxt, at_threshold = TRANSITIONS[(old, inp)]
    except KeyError:
        raise InvalidTransition(f"{inp.value} in {old.value}") from None
    reached = effect(h, t) if effect is not None else False
    h.state = at_threshold if reached else nxt
    return old


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """A destination changed state; ``cause`` is the input that moved it."""

    set_name: str
    uri: str
    old: State
    new: State
    cause: Input | None  # None: taken from another process's snapshot
    fails: int
    status: int | None  # the status that caused it, when one did
    remote: bool = False
