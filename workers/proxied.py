"""What the stateful core keeps per request it proxies (``Proxied``), and how it keeps that
small: interned strings and shared destinations (``workers/stateful.py`` rule 8).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ingress.sip.message import NameAddr, Request, Uri
from workers.proxy import Inbound, Plan
from workers.routing.dispatcher import Destination, DispatchSet
from workers.transactions import ClientTransaction, ServerTransaction

#: what a failed attempt leaves to answer with when no destination is left (rule 2)
TIMEOUT = (408, "Request Timeout")
UNAVAILABLE = (503, "Service Unavailable")

#: (next hop, Request-URI to set or None, destination of a destination set or None, Route
#: entries to put on top: a registered contact's Path, RFC 3327 §5.3)
Target = tuple[Uri, "Uri | None", "Destination | None", tuple[NameAddr, ...]]
#: where a transaction sends: (ingress id, out meta as in conf.envelope)
Dest = tuple[str, tuple[Any, ...]]
#: destinations kept for sharing at most (rule 8): a node's trunks and gateways, and the
#: user agents of the last few seconds
DESTS_MAX = 4096


@dataclass(slots=True, eq=False)
class Proxied:
    """One request proxied statefully: its server transaction and the attempt in progress."""

    #: these three until the final response goes upstream: then nothing reads them, and the
    #: context lives on as long as its transactions (rule 8)
    inb: Inbound | None
    request: Request | None
    plan: Plan | None
    server: ServerTransaction | None = None
    client: ClientTransaction | None = None  # the attempt in progress
    #: failover targets left, in order (``Target``: next hop, Request-URI to set or None,
    #: destination of a set whose health the outcome reports to or None, Routes to add)
    targets: list[Target] = field(default_factory=list)
    dset: DispatchSet | None = None  # the destination set the targets came from
    current: Destination | None = None  # the destination of the attempt in progress
    aor: str | None = None  # a request for a user of ours: targets come from a lookup
    attempt: int = 0
    cancelled: bool = False
    done: bool = False  # a final response went upstream
    #: what to answer when no destination is left: the best final so far, else a local reply
    best: bytes | None = None
    best_status: int = 0
    fallback: tuple[int, str] = TIMEOUT
    #: the route's failure sets not tried yet, and how the last attempt ended (a final
    #: status; None: no answer), which decides whether the next one takes the call
    next_sets: tuple[DispatchSet, ...] = ()
    outcome: int | None = None
    timer_c_at: float | None = None


#: the context of the transactions of a call another worker owns now (``workers/stateful.py``
#: rule 12): never changed; what they still pass up goes on statelessly
MOVED = Proxied(None, None, None, done=True)


class Dests:
    """``(ingress, meta)`` for a transaction to send through, one object per distinct value
    (rule 8): the transactions of a trunk's calls share it instead of each holding a tuple,
    a list and its strings for 32 s (~160 B)."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[Dest, Dest] = {}

    def share(self, ingress: str, meta: list[Any] | tuple[Any, ...]) -> Dest:
        dest = (ingress, tuple(meta))
        held = self._held.get(dest)
        if held is not None:
            return held
        if len(self._held) >= DESTS_MAX:
            self._held.clear()  # start over: what is held stays shared
        self._held[dest] = dest
        return dest


def held(inb: Inbound) -> Inbound:
    """``inb`` with its strings interned, for a context that keeps it while its transactions
    live: each message's come fresh from msgpack (~290 B per call otherwise, rule 8)."""
    inb.ingress, inb.transport = sys.intern(inb.ingress), sys.intern(inb.transport)
    inb.src_ip, inb.local_ip = sys.intern(inb.src_ip), sys.intern(inb.local_ip)
    return inb
