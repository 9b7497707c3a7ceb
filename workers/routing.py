"""The routing table: which destination set a request goes to, and which destination in it.

Routes are tried in the order the configuration lists them; the first whose every condition
holds wins (method, Request-URI user and host as full regex matches, source CIDR). A route
with no condition is a default route.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import zlib
from dataclasses import dataclass

from cachetools import TTLCache

from conf.settings import DestinationSet as DestinationSetConfig
from conf.settings import Route as RouteConfig
from conf.settings import Settings
from ingress.sip.grammar import parse_uri
from ingress.sip.message import Request

#: a stateless proxy must send a call's CANCEL and ACK where its INVITE went (RFC 3261
#: §16.11); round-robin remembers its choice per Call-ID for longer than Timer B/F (32 s)
STICKY_S = 64.0
STICKY_MAX = 200_000


@dataclass(frozen=True, slots=True)
class Destination:
    uri: str
    host: str
    port: int
    transport: str | None  # "udp", "tcp", or None: the transport the request came on


def destination(uri: str) -> Destination:
    u = parse_uri(uri)
    transport = u.param("transport")
    return Destination(uri, u.host_plain, u.port or 5060, transport.lower() if transport else None)


class DestinationSet:
    __slots__ = ("_rr", "_sticky", "_weights", "algorithm", "destinations", "name")

    def __init__(self, cfg: DestinationSetConfig) -> None:
        self.name = cfg.name
        self.algorithm = cfg.algorithm
        self.destinations = [destination(u) for u in cfg.destinations]
        self._weights = cfg.weights or [1] * len(self.destinations)
        self._rr = itertools.cycle(range(len(self.destinations)))
        self._sticky: TTLCache[str, Destination] = TTLCache(STICKY_MAX, STICKY_S)

    def pick(self, call_id: str) -> Destination:
        """The destination for a request of ``call_id``; the same one for the whole call."""
        if len(self.destinations) == 1:
            return self.destinations[0]
        if self.algorithm == "round_robin":
            d = self._sticky.get(call_id)
            if d is None:
                d = self._sticky[call_id] = self.destinations[next(self._rr)]
            return d
        h = zlib.crc32(call_id.encode("latin-1"))
        if self.algorithm == "hash_call_id":
            return self.destinations[h % len(self.destinations)]
        # weighted: a deterministic point on the cumulative weights
        point = h % sum(self._weights)
        for d, w in zip(self.destinations, self._weights):
            if point < w:
                return d
            point -= w
        return self.destinations[-1]


class Route:
    __slots__ = ("host", "methods", "name", "source", "to", "user")

    def __init__(self, cfg: RouteConfig, sets: dict[str, DestinationSet]) -> None:
        self.name = cfg.name
        self.methods = frozenset(m.upper() for m in cfg.methods)
        self.user = re.compile(cfg.ruri_user) if cfg.ruri_user else None
        self.host = re.compile(cfg.ruri_host, re.IGNORECASE) if cfg.ruri_host else None
        self.source = ipaddress.ip_network(cfg.source, strict=False) if cfg.source else None
        self.to = sets[cfg.to]

    def matches(self, req: Request, src_ip: str) -> bool:
        if self.methods and req.method not in self.methods:
            return False
        if self.user is not None and not self.user.fullmatch(req.uri.user or ""):
            return False
        if self.host is not None and not self.host.fullmatch(req.uri.host_plain):
            return False
        return self.source is None or ipaddress.ip_address(src_ip) in self.source


class RoutingTable:
    def __init__(self, settings: Settings) -> None:
        self.sets = {c.name: DestinationSet(c) for c in settings.destination_set}
        self.routes = [Route(c, self.sets) for c in settings.route]

    def lookup(self, req: Request, src_ip: str) -> tuple[str, Destination] | None:
        """(route name, destination) for ``req``, or None when no route matches."""
        for r in self.routes:
            if r.matches(req, src_ip):
                return r.name, r.to.pick(req.call_id)
        return None
