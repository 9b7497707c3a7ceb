"""Ingresses of other hosts found through the state plane, not named in ``[bus] ingresses``
(issue #14; ``docs/architecture.md`` "Finding the edge through the state plane"). Sans-IO:
what an edge announces, and what a worker host accepts of an announcement.

Rules:
1. An edge announces: a state plane whose host has ``[bus] address`` and ``ingress_port``
   publishes, every heartbeat, ``INGRESSES [node, endpoints]`` on its PUB: the TCP endpoint
   of every live ingress of its run directory, each derived from the ingress's ident as the
   ingress derives it (``conf.bustcp`` rule 3: ``address:ingress_port + N - 1``).
2. A worker host learns (``[bus] discover``): its state plane takes an announcement only
   from a ``[[peer]]`` it reaches over ``tcp://`` with CURVE (the PUB proved that peer's key)
   and that has a ``bus_address``, and only under that peer's name (``stateplane/peer.py``
   ``_from_peer``). A peer met over ipc, or heard without a configured name, announces
   nothing to us.
3. Every endpoint is checked (``refusal``): a ``tcp://ip:port`` whose ip is the
   ``bus_address`` of the very peer that announced it. A peer can point us only at its own
   address, where the key we expect there is its own: what a frame names opens no pipe to a
   host the configuration did not name. Every ingress of a host listens at its ``[bus]
   address`` (rule 1), so no wider allow-list is needed.
4. Bounded: an announcement of more than ``MAX_ANNOUNCED`` endpoints is refused whole (one
   peer cannot make us open more pipes than any edge has ingresses), and a worker takes at
   most ``MAX_DISCOVERED`` over every peer.
5. Changes are followed: each announcement replaces what that peer announced before, so an
   ingress stopped on the edge leaves it at the next heartbeat. A peer that falls silent
   keeps its last list (its ingresses may live on without their state plane; each pipe's
   own heartbeats say whether an ingress answers, ``workers/bus.py`` rule 7).
6. ``[bus] ingresses`` takes precedence: with it set, workers serve exactly the ingresses it
   lists and nothing is learnt.
7. The state plane hands what it accepted to each worker of its host in an ``INGRESSES``
   envelope every heartbeat, ``[[peer name, [endpoint, ...]], ...]``, one entry per peer
   heard since it started. A peer the envelope does not name keeps what the worker had for
   it: a state plane just restarted, which has not heard every peer yet, takes no pipe
   away. The worker checks every entry again by rules 3 and 4 (a frame from another
   process may be forged) before it connects, with the key of the peer named.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conf import bustcp, sockets

if TYPE_CHECKING:
    from conf.settings import Settings

#: endpoints one peer may announce: an edge runs an ingress or two per core, so 64 is far
#: more than any has, and bounds the pipes a peer can make each worker open (rule 4)
MAX_ANNOUNCED = 64
#: endpoints a worker takes over every peer (rule 4): four edges at the bound above
MAX_DISCOVERED = 256


def learns(settings: Settings) -> bool:
    """Rules 2 and 6: this host's workers learn their ingresses through the state plane."""
    return settings.bus.discover and not settings.bus.ingresses


def announces(settings: Settings) -> bool:
    """Rule 1: this host's state plane announces its ingresses."""
    return bool(settings.bus.address and settings.bus.ingress_port and settings.stateplane.bind)


def ingress_endpoint(settings: Settings, ident: str) -> str | None:
    """Rule 1: the TCP endpoint of the ingress ``ident`` of this host's run directory (as
    ``conf.bustcp.TcpHop.ingress_endpoint`` computes it in that ingress), or None for an
    ident that is not one of this host's ingresses."""
    prefix = settings.node.name + "."
    if not ident.startswith(prefix):
        return None
    proc = ident[len(prefix) :].rpartition("-")[0]
    if proc != "ingress" and not proc.startswith("ingress."):
        return None
    port = bustcp.ingress_port(settings.bus.ingress_port, proc)
    if not 1 <= port <= 65535:
        return None
    return bustcp.endpoint(str(ipaddress.ip_address(settings.bus.address)), port)


def announced(settings: Settings, idents: Iterable[str]) -> list[str]:
    """Rule 1: what this edge announces for its live ingresses ``idents`` (sorted, at most
    ``MAX_ANNOUNCED``)."""
    eps = {ep for i in idents if (ep := ingress_endpoint(settings, i)) is not None}
    return sorted(eps)[:MAX_ANNOUNCED]


def peer_addresses(settings: Settings) -> dict[str, str]:
    """``{peer name: bus_address}`` (canonical) of every ``[[peer]]`` on the hop."""
    return {p.name: str(ipaddress.ip_address(p.bus_address)) for p in settings.peer if p.bus_address}


def refusal(peer: str, ep: object, addresses: Mapping[str, str]) -> str | None:
    """Rule 3: why ``ep`` announced by ``peer`` may not be used, or None when it may."""
    parsed = bustcp.parse_endpoint(ep)
    if parsed is None:
        return "not tcp://ip:port"
    own = addresses.get(peer)
    if own is None:
        return "announcer is not a [[peer]] with bus_address"
    if parsed[0] != own:
        return f"not at the announcer's bus_address {own}"
    return None


@dataclass(slots=True)
class Verdict:
    """What is taken of one announcement (None: it is refused whole, and what the peer
    announced before stands), and what is refused with its reason."""

    accepted: list[str] | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)


def accept(peer: str, endpoints: list[Any], addresses: Mapping[str, str]) -> Verdict:
    """Rules 3 and 4 for one announcement of ``peer``."""
    if len(endpoints) > MAX_ANNOUNCED:
        return Verdict(None, [(f"{len(endpoints)} endpoints", f"more than {MAX_ANNOUNCED}")])
    accepted: list[str] = []
    refused: list[tuple[str, str]] = []
    for ep in endpoints:
        reason = refusal(peer, ep, addresses)
        if reason is not None:
            refused.append((str(ep)[:80], reason))
        elif ep not in accepted:
            accepted.append(ep)
    return Verdict(accepted, refused)


def entries(header: Any, addresses: Mapping[str, str]) -> tuple[dict[str, list[str]] | None,
                                                                 list[tuple[str, str]]]:
    """Rule 7, on a worker: ``({peer name: endpoints}, refused)`` of an ``INGRESSES``
    envelope's header, each peer's list checked as an announcement (``accept``); a peer
    whose list is refused whole is left out (what the worker had for it stands). None
    instead of the dict when the whole is refused (rule 4: over ``MAX_DISCOVERED``
    endpoints), which changes nothing."""
    if not isinstance(header, list):
        return None, [("header", "not a list")]
    total = sum(len(e[1]) for e in header if isinstance(e, list) and len(e) == 2
                and isinstance(e[1], list))  # fmt: skip
    if total > MAX_DISCOVERED:
        return None, [(f"{total} endpoints", f"more than {MAX_DISCOVERED}")]
    taken: dict[str, list[str]] = {}
    refused: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in header:
        if not (isinstance(entry, list) and len(entry) == 2 and sockets.valid_ident(entry[0])
                and isinstance(entry[1], list) and entry[0] not in seen):  # fmt: skip
            refused.append((str(entry)[:80], "not [peer name, [endpoint, ...]], each peer once"))
            continue
        seen.add(entry[0])
        verdict = accept(entry[0], entry[1], addresses)
        refused += verdict.refused
        if verdict.accepted is not None:
            taken[entry[0]] = verdict.accepted
    return taken, refused
