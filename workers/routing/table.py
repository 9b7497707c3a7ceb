"""The routing table: which destination set a request goes to, and which destination in it.

Routes are tried in the order the configuration lists them; the first whose every condition
holds wins (method, Request-URI user and host as full regex matches, source CIDR, a
``[[trusted]]`` source). A route with no condition is a default route. Its action is a
destination set, the Request-URI (``to_request_uri``) or a rejection; ``workers/proxy.py``
carries it out. Destination sets, their algorithms and their health are the dispatcher's
(``workers/routing/dispatcher.py``); ``lookup`` uses ``DispatchSet.pick``.
"""

from __future__ import annotations

import ipaddress
import re

from conf.settings import Route as RouteConfig
from conf.settings import Settings
from ingress.sip.message import Request
from workers.routing.dispatcher import STICKY_MAX, STICKY_S, Destination, Dispatcher, destination
from workers.routing.dispatcher import DispatchSet as DestinationSet
from workers.routing.trusted import TrustedSources

__all__ = ["STICKY_MAX", "STICKY_S", "Destination", "DestinationSet", "Route", "RoutingTable",
           "destination"]  # fmt: skip

#: RFC 3261 §21 (and RFC 3262, 3265, 3329, 3891, 4028, 4412, 5079, 6665) phrases of the
#: statuses a ``reject`` route may answer with, when it names no ``reason`` of its own
REASONS = {
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    433: "Anonymity Disallowed", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip
_CLASS_REASONS = {4: "Request Failure", 5: "Server Failure", 6: "Global Failure"}


def reason_phrase(status: int) -> str:
    """The standard phrase of ``status``, else its class's name (RFC 3261 §21)."""
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Rejected")


class Route:
    __slots__ = ("host", "methods", "name", "reason", "reject", "source", "to",
                 "to_request_uri", "trust", "trusted", "user")  # fmt: skip

    def __init__(self, cfg: RouteConfig, sets: dict[str, DestinationSet],
                 trust: TrustedSources) -> None:  # fmt: skip
        self.name = cfg.name
        self.methods = frozenset(m.upper() for m in cfg.methods)
        self.user = re.compile(cfg.ruri_user) if cfg.ruri_user else None
        self.host = re.compile(cfg.ruri_host, re.IGNORECASE) if cfg.ruri_host else None
        self.source = ipaddress.ip_network(cfg.source, strict=False) if cfg.source else None
        #: the destination set; None for a rule that relays (``to_request_uri``) or rejects
        self.to = sets[cfg.to] if cfg.to else None
        self.to_request_uri = cfg.to_request_uri
        self.reject = cfg.reject
        self.reason = cfg.reason or reason_phrase(cfg.reject)
        #: False, True (any trusted source) or the tag a trusted source must carry
        self.trusted = cfg.trusted
        self.trust = trust

    def matches(self, req: Request, src_ip: str, transport: str = "udp", src_port: int = 0,
                ) -> bool:  # fmt: skip
        if self.methods and req.method not in self.methods:
            return False
        if self.user is not None and not self.user.fullmatch(req.uri.user or ""):
            return False
        if self.host is not None and not self.host.fullmatch(req.uri.host_plain):
            return False
        if self.source is not None and ipaddress.ip_address(src_ip) not in self.source:
            return False
        if self.trusted is False:
            return True
        tags = self.trust.tags(src_ip, transport, src_port)
        return tags is not None and (self.trusted is True or self.trusted in tags)


class RoutingTable:
    """Routes over destination sets; pass the worker's ``Dispatcher`` so that picks skip
    destinations it knows are down (without one, every destination counts as up)."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None) -> None:
        if dispatcher is None:
            dispatcher = Dispatcher(settings.destination_set, settings.listen)
        self.dispatcher = dispatcher
        self.sets = dispatcher.sets
        #: the ``[[trusted]]`` sources (routes match them; the proxy lets them relay)
        self.trusted = TrustedSources(settings.trusted)
        self.routes = [Route(c, self.sets, self.trusted) for c in settings.route]

    def lookup(self, req: Request, src_ip: str) -> tuple[str, Destination] | None:
        """(route name, destination) for ``req``, or None when no route matches or the
        route that matches has no destination set."""
        for r in self.routes:
            if r.matches(req, src_ip):
                return (r.name, r.to.pick(req.call_id)) if r.to is not None else None
        return None
