"""RFC 3263 §4 decisions for a SIP URI target, without I/O.

Rules of this module:

1. Pure functions over plain values: no sockets, no clock, no dnspython. The resolver feeds
   them the records it got and sends the queries they name. Randomness is an injected
   ``random.Random`` so tests can fix the seed.
2. Transports are lower-case ``"udp"``, ``"tcp"`` and ``"tls"`` (TLS over TCP); a SIPS URI
   always means TLS (RFC 3261 §26.2.1), whatever its ``transport`` parameter says, except
   that a SIPS URI cannot go over UDP.
3. Host names are compared and cached lower-case without the final dot.

The steps (RFC 3263 §4.1 transport, §4.2 port and address):

- numeric IP: no DNS at all; transport from the URI, else UDP (``sip``) or TLS (``sips``);
  port from the URI, else 5060 (UDP/TCP) or 5061 (TLS).
- a port in the URI: A/AAAA only, transport as for a numeric IP.
- otherwise NAPTR when enabled and no transport was given (§4.1; optional, off by default);
  then SRV: ``_sip._udp``, ``_sip._tcp`` (``_sips._tcp`` for TLS) for the transports the
  caller supports, or only for the transport the URI names; each SRV answer ordered by
  priority then weighted random (RFC 2782); then A/AAAA of each SRV target.
- no SRV at all: A/AAAA of the host at the default port of the default transport.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from workers.dns.errors import DnsError

#: RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}

#: RFC 3263 §4.1 / RFC 3263 §7 registered NAPTR services and the transport each one means
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}

#: SRV service labels per transport (RFC 3263 §4.1: "_sips" for TLS)
SRV_LABELS = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}


class Target(NamedTuple):
    """Where to send: one transport, one IP address, one port."""

    transport: str
    ip: str
    port: int


class Srv(NamedTuple):
    """One SRV record (RFC 2782); ``target`` is ``"."`` when the service is not offered."""

    priority: int
    weight: int
    port: int
    target: str


class Naptr(NamedTuple):
    """The parts of a NAPTR record (RFC 3403) that RFC 3263 uses."""

    order: int
    preference: int
    flags: str
    service: str
    replacement: str


def normalise(host: str) -> str:
    """``host`` lower-case, without IPv6 brackets or the final dot of a fully qualified name."""
    h = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
    return h.rstrip(".").lower()


def numeric_ip(host: str) -> str | None:
    """The IP address ``host`` spells, or None for a host name."""
    try:
        return str(ipaddress.ip_address(normalise(host)))
    except ValueError:
        return None


def uri_transport(transport: str | None, secure: bool) -> str | None:
    """The transport a URI forces (§4.1 "transport parameter"), or None to look it up.

    Raises:
        DnsError: ``unsupported_transport`` for a transport other than udp/tcp/tls, or UDP
            for a SIPS URI.
    """
    if transport is None:
        return "tls" if secure else None
    t = transport.lower()
    if t not in DEFAULT_PORTS:
        raise DnsError("unsupported_transport", transport)
    if secure:
        if t == "udp":
            raise DnsError("unsupported_transport", "sips over udp")
        return "tls"
    return t


def default_transport(secure: bool) -> str:
    """§4.1: with nothing else to go on, UDP for SIP and TCP (TLS) for SIPS."""
    return "tls" if secure else "udp"


def check_supported(transport: str, supported: Sequence[str]) -> None:
    """Raises DnsError ``unsupported_transport`` when the caller cannot send on ``transport``."""
    if transport not in supported:
        raise DnsError("unsupported_transport", transport)


def srv_queries(
    host: str, transport: str | None, secure: bool, supported: Sequence[str]
) -> list[tuple[str, str]]:
    """The ``(transport, SRV name)`` pairs to ask, in the caller's order of preference.

    A forced transport (§4.2 "a transport was specified explicitly") asks only for it;
    otherwise every supported transport a URI of this scheme may use (SIPS: TLS only).
    """
    if transport is not None:
        wanted = [transport]
    else:
        wanted = [t for t in supported if t == "tls" or not secure]
    return [(t, f"{SRV_LABELS[t]}.{host}") for t in wanted]


def naptr_queries(
    records: Iterable[Naptr], secure: bool, supported: Sequence[str]
) -> list[tuple[str, str]]:
    """The ``(transport, SRV name)`` pairs a NAPTR answer points to (RFC 3263 §4.1).

    Records are taken by order then preference; those whose service we do not support, that
    are not terminal "S" records, or that offer plain SIP for a SIPS URI, are discarded.
    """
    out: list[tuple[str, str]] = []
    for r in sorted(records, key=lambda r: (r.order, r.preference)):
        t = NAPTR_SERVICES.get(r.service.upper())
        if t is None or t not in supported or r.flags.lower() != "s":
            continue
        if secure and t != "tls":
            continue
        pair = (t, normalise(r.replacement))
        if pair not in out:
            out.append(pair)
    return out


def order_srv(records: Iterable[Srv], rng: random.Random) -> list[Srv]:
    """RFC 2782 order: ascending priority; within one priority, a weighted random draw.

    Each draw sums the weights of the records not yet chosen (zero weights first, so they
    are only chosen when they are all that is left or the draw lands on 0) and picks the
    first whose running sum reaches a uniform number in [0, sum].
    """
    by_priority: dict[int, list[Srv]] = {}
    for r in records:
        by_priority.setdefault(r.priority, []).append(r)
    ordered: list[Srv] = []
    for priority in sorted(by_priority):
        ordered.extend(_weighted_draws(by_priority[priority], rng))
    return ordered


def _weighted_draws(group: list[Srv], rng: random.Random) -> list[Srv]:
    left = sorted(group, key=lambda r: r.weight != 0)  # stable: zero weights first
    out: list[Srv] = []
    while left:
        total = sum(r.weight for r in left)
        pick = rng.randint(0, total)
        running = 0
        for i, r in enumerate(left):
            running += r.weight
            if running >= pick:
                out.append(left.pop(i))
                break
    return out


def srv_targets(records: Sequence[Srv]) -> list[Srv]:
    """The records that name a host: a ``"."`` target says "decidedly not available here"
    (RFC 2782), so an SRV answer of only "." yields no target and no A/AAAA fallback."""
    return [r for r in records if r.target != "."]
