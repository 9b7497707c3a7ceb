"""Which targets a statefully proxied request tries, and when it moves on: the serial
failover inside a destination set (``workers/stateful.py`` rule 2), failure routing from
one set to the next (rule 11, ``docs/routing.md``), and the targets a registrar lookup or a
resolver answer becomes. Sans-IO: reads and sets a ``Proxied``.
"""

from __future__ import annotations

from typing import Any

from ingress.sip.grammar import parse_uri
from workers.proxied import UNAVAILABLE, Proxied, Target
from workers.proxy import NAT_CONN_PARAM, PARAMCHARS_RE, SNI_PARAM, Plan
from workers.registrar.register import path_routes
from workers.routing.dispatcher import Destination, DispatchSet


def chain(dset: DispatchSet, first: Destination) -> list[Target]:
    """``first`` and, when the set fails over, the rest of it in failover order (rule 2)."""
    rest = dset.alternatives(first) if dset.fails_over(503) or dset.fails_over(None) else []
    return [(parse_uri(d.uri), None, d, ()) for d in [first, *rest]]


def first_targets(ctx: Proxied, plan: Plan, call_id: str) -> bool:
    """Set the targets a new request of a stateful route tries first: the hop its Route
    names, a prefix table's groups in order (docs/prefix_tables.md), or its set's choice
    and the rest in failover order; the rule's failure sets follow (rule 11). False when
    nothing is usable, and no failure set may have one: the caller answers 503."""
    if plan.hop is not None:
        ctx.targets = [(plan.hop, None, None, ())]
        return True
    route = plan.route
    if plan.choice is not None:
        dset = ctx.dset = plan.choice.dset
        picked = plan.choice.targets if dset.fails_over(503) or dset.fails_over(None) else (
            plan.choice.targets[:1])  # fmt: skip
        ctx.targets = [(parse_uri(d.uri), None, d, ()) for d in picked]
        if route is not None:  # a failure_route continues after the table's groups
            ctx.next_sets = route.failure_sets
        return True
    assert route is not None and route.to is not None and plan.target is not None
    dset = ctx.dset = route.to
    ctx.next_sets = route.failure_sets
    first = dset.select(call_id) if dset.probing else plan.target
    if first is None and not ctx.next_sets:
        return False
    if first is None:  # the failure sets may have one up (``next_set``)
        ctx.outcome, ctx.fallback = UNAVAILABLE[0], UNAVAILABLE
    else:
        ctx.targets = chain(dset, first)
    return True


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


def contact_targets(contacts: list[tuple[str, Any, tuple[str, ...]]]) -> tuple[list[Target], int]:
    """The targets of a lookup's ``contacts`` ((contact URI, source, Path) by q), and how many
    were skipped for a Path that no longer parses (a forged or damaged record).

    A contact registered with a Path is reached through it, as Kamailio's ``lookup()`` does:
    the Path URIs become the top Routes, in order, and the request goes to the first of them
    (loose routing; a host name there is resolved like any next hop); one without goes to
    where its REGISTER came from, through its NAT (docs/registrar.md, docs/nat.md)."""
    targets: list[Target] = []
    bad = 0
    for uri, source, path in contacts:
        contact = parse_uri(uri)
        if path:
            routes = path_routes(path)
            if routes is None:
                bad += 1
            else:
                targets.append((routes[0].uri, contact, None, tuple(routes)))
            continue
        hop = contact
        if source is not None:
            tag = source.conn
            conn = f";{NAT_CONN_PARAM}={tag}" if tag and PARAMCHARS_RE.fullmatch(tag) else ""
            hop = parse_uri(f"sip:{_host(source.ip)}:{source.port};"
                            f"transport={source.transport}{conn}")  # fmt: skip
        targets.append((hop, contact, None, ()))
    return targets, bad


def resolved_targets(target: Target, addresses: list[tuple[str, str, int]]) -> list[Target]:
    """``target``'s host resolved to ``addresses`` ((transport, ip, port), RFC 3263 order):
    one target each, keeping its Request-URI, destination and Routes; a TLS server is
    verified against the name resolved (docs/tls.md)."""
    _, ruri, dest, pre = target
    sni = f";{SNI_PARAM}={target[0].host_plain}"
    return [(parse_uri(f"sip:{_host(ip)}:{port};transport={transport}"
                       f"{sni if transport == 'tls' else ''}"),
             ruri, dest, pre) for transport, ip, port in addresses]  # fmt: skip


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
