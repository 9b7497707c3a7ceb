"""The routing table: which destination set a request goes to, and which destination in it.

Routes are tried in the order the configuration lists them; the first whose every condition
holds wins (method, Request-URI user and host as full regex matches, source CIDR). A route
with no condition is a default route. Destination sets, their algorithms and their health
are the dispatcher's (``workers/dispatcher.py``); ``lookup`` uses ``DispatchSet.pick``.
"""

from __future__ import annotations

import ipaddress
import re

from conf.settings import Route as RouteConfig
from conf.settings import Settings
from ingress.sip.message import Request
from workers.dispatcher import STICKY_MAX, STICKY_S, Destination, Dispatcher, destination
from workers.dispatcher import DispatchSet as DestinationSet

__all__ = ["STICKY_MAX", "STICKY_S", "Destination", "DestinationSet", "Route", "RoutingTable",
           "destination"]  # fmt: skip


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
    """Routes over destination sets; pass the worker's ``Dispatcher`` so that picks skip
    destinations it knows are down (without one, every destination counts as up)."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None) -> None:
        if dispatcher is None:
            dispatcher = Dispatcher(settings.destination_set, settings.listen)
        self.dispatcher = dispatcher
        self.sets = dispatcher.sets
        self.routes = [Route(c, self.sets) for c in settings.route]

    def lookup(self, req: Request, src_ip: str) -> tuple[str, Destination] | None:
        """(route name, destination) for ``req``, or None when no route matches."""
        for r in self.routes:
            if r.matches(req, src_ip):
                return r.name, r.to.pick(req.call_id)
        return None
