"""Which targets a statefully proxied request tries, and when it moves on: the serial
failover inside a destination set (``workers/stateful.py`` rule 2) and failure routing from
one set to the next (rule 11, ``docs/routing.md``). Sans-IO: reads and sets a ``Proxied``.
"""

from __future__ import annotations

from ingress.sip.grammar import parse_uri
from workers.proxied import UNAVAILABLE, Proxied, Target
from workers.routing.dispatcher import Destination, DispatchSet


def chain(dset: DispatchSet, first: Destination) -> list[Target]:
    """``first`` and, when the set fails over, the rest of it in failover order (rule 2)."""
    rest = dset.alternatives(first) if dset.fails_over(503) or dset.fails_over(None) else []
    return [(parse_uri(d.uri), None, d, ()) for d in [first, *rest]]


def fails_over(ctx: Proxied, status: int | None) -> bool:
    """Whether a final ``status`` (None: no answer) moves on to the next target of the set."""
    if ctx.dset is not None:
        return ctx.dset.fails_over(status)
    return status is None or status == 408 or 500 <= status < 600  # registered contacts


def next_set(ctx: Proxied) -> int:
    """Rule 11: hand the call to the next failure set when the set used up ended on an
    outcome its rule routes on (``ctx.outcome``). Returns how many sets were taken up (a
    set with nothing usable is skipped as a 503); 0 when none took the call, whose caller
    then gets the best final."""
    route = ctx.plan.route if ctx.plan is not None else None
    taken = 0
    while ctx.next_sets and route is not None and route.fails_to_next_set(ctx.outcome):
        dset, ctx.next_sets = ctx.next_sets[0], ctx.next_sets[1:]
        taken += 1
        assert ctx.request is not None
        call_id = ctx.request.call_id
        first = dset.select(call_id) if dset.probing else dset.pick(call_id)
        if first is not None:
            ctx.dset, ctx.targets = dset, chain(dset, first)
            return taken
        ctx.outcome, ctx.fallback = UNAVAILABLE[0], UNAVAILABLE  # all of that set is down
    return 0
