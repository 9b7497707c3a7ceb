"""What the stateful core (``workers/stateful.py``) hands the worker through ``next_event``:
work for the cacheDB or DNS, dialog timers for the timer service, CDRs, refusals to log (and
the dispatcher's ``HealthChanged``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from dialogstate.table import DialogTable
from ingress.sip.message import Request
from workers.proxied import Proxied, Target
from workers.proxy import Inbound
from workers.routing.health import HealthChanged
from workers.transactions import ServerTransaction


@dataclass(frozen=True, slots=True)
class Job:
    """Work the core needs from the cacheDB (a REGISTER to answer, an AOR to look up); the
    worker runs it and hands the outcome back (``registered``, ``located``)."""

    kind: str  # "register", "lookup", "resolve" or "auth"
    txn: ServerTransaction | None  # None for "auth" (the request is handled again after it)
    ctx: Proxied | None  # for a lookup
    request: Request
    inb: Inbound
    target: Target | None = None  # for "resolve": the target whose host name to resolve
    #: for "auth": the (realm, algorithm, username) whose HA1 to read (docs/auth.md)
    credentials: tuple[str, str, str] | None = None


@dataclass(frozen=True, slots=True)
class TimerOp:
    """A dialog lifetime to arm (``deadline``) or cancel (None) at the timer service, keyed by
    the dialog's key (Call-ID NUL From-tag, ``timers/wire.py``)."""

    key: str
    deadline: float | None


@dataclass(frozen=True, slots=True)
class Cdr:
    """A finished call's CDR, to write before this iteration's deltas leave (``workers/dialogs/cdr.py``)."""

    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """A call a call limit refused, to log once."""

    fields: dict[str, Any]


#: what ``StatefulProxy.next_event`` hands the worker, like the transactions' ``next_event``
Event = Job | TimerOp | Cdr | Refused | HealthChanged


def collect(ev: deque[Event], jobs: list[Job], dialogs: DialogTable | None,
            refused: list[dict[str, Any]], health_events: list[Any]) -> None:  # fmt: skip
    """Move what the core's outboxes hold into ``ev``, in that order, emptying them."""
    if jobs:
        ev.extend(jobs)
        jobs.clear()
    if dialogs is not None:
        if dialogs.timer_ops:
            ev.extend(TimerOp(op[1], op[2] if op[0] == "arm" else None) for op in dialogs.timer_ops)
            dialogs.timer_ops.clear()
        if dialogs.cdrs:
            ev.extend(Cdr(c) for c in dialogs.take_cdrs())
    if refused:
        ev.extend(Refused(f) for f in refused)
        refused.clear()
    if health_events:
        ev.extend(health_events)
        health_events.clear()
