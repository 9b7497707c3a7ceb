"""The routing table: which destination set a request goes to, and which destination in it.

Routes are tried in the order the configuration lists them; the first whose every condition
holds wins (method, Request-URI user and host as full regex matches, source CIDR, a
``[[trusted]]`` source or its absence, the listener and transport it arrived on, headers:
``workers/routing/rules.py``). A route with no condition is a default route. Its action is a
destination set (with failure sets to go on to), the Request-URI (``to_request_uri``) or a
rejection; ``workers/proxy.py`` carries it out. A ``continue_routing`` rule only rewrites the
Request-URI user and edits headers, and the walk goes on (``decide``). Destination sets, their algorithms and their health are the dispatcher's
(``workers/routing/dispatcher.py``); ``lookup`` uses ``DispatchSet.pick``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from conf.load import parse_status_codes
from conf.settings import Route as RouteConfig
from conf.settings import Settings
from ingress.sip.message import Request
from workers.routing.dispatcher import STICKY_MAX, STICKY_S, Destination, Dispatcher, destination
from workers.routing.dispatcher import DispatchSet as DestinationSet
from workers.routing.prefix_route import PrefixTables, load_tables
from workers.routing.rules import HeaderEdit, HeaderTest, UserRewrite
from workers.routing.trusted import TrustedSources

__all__ = ["STICKY_MAX", "STICKY_S", "Decision", "Destination", "DestinationSet", "Route",
           "RoutingTable", "destination"]  # fmt: skip

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
    __slots__ = ("continues", "edits", "failure_codes", "failure_on_timeout", "failure_sets",
                 "headers", "host", "listener", "methods", "name", "prefix_table", "reason", "reject",
                 "rewrite", "source", "to", "to_request_uri", "transport", "trust", "trusted",
                 "untrusted", "user")  # fmt: skip

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
        #: the ``[[prefix_table]]`` that picks the destinations instead (docs/prefix_tables.md)
        self.prefix_table = cfg.prefix_table
        self.reject = cfg.reject
        self.reason = cfg.reason or reason_phrase(cfg.reject)
        #: False, True (any trusted source) or the tag a trusted source must carry
        self.trusted = cfg.trusted
        #: False, True (no trusted source) or the tag the source must not carry
        self.untrusted = cfg.untrusted
        self.trust = trust
        self.listener = _listener(cfg.listener)
        self.transport = cfg.transport or None
        self.headers = tuple(HeaderTest(h) for h in cfg.header)
        has_rewrite = cfg.strip_user or cfg.prefix_user or cfg.user_regex
        self.rewrite = UserRewrite(cfg) if has_rewrite else None
        self.edits = tuple(HeaderEdit(e) for e in cfg.header_edit)
        self.continues = cfg.continue_routing
        #: failure routing (stateful only): sets tried in turn once ``to`` is used up
        self.failure_sets = tuple(sets[n] for n in cfg.failure_sets)
        self.failure_codes = parse_status_codes(cfg.failure_codes)
        self.failure_on_timeout = cfg.failure_on_timeout

    def matches(self, req: Request, src_ip: str, transport: str = "udp", src_port: int = 0,
                ) -> bool:  # fmt: skip
        """Whether every condition holds for ``req`` as received (listener conditions need
        ``holds``, which knows where it arrived)."""
        return self.holds(req, req.uri.user, src_ip, transport, src_port, "", 0)

    def holds(self, req: Request, user: str | None, src_ip: str, transport: str,
              src_port: int, local_ip: str, local_port: int) -> bool:  # fmt: skip
        """Whether every condition holds; ``user`` is the Request-URI user as rewritten so
        far (``docs/routing.md`` rule 2)."""
        if self.methods and req.method not in self.methods:
            return False
        if self.user is not None and not self.user.fullmatch(user or ""):
            return False
        if self.host is not None and not self.host.fullmatch(req.uri.host_plain):
            return False
        if self.source is not None and ipaddress.ip_address(src_ip) not in self.source:
            return False
        if self.transport is not None and transport != self.transport:
            return False
        if self.listener is not None and (local_ip, local_port) not in self.listener:
            return False
        for h in self.headers:
            if not h.holds(req):
                return False
        if self.trusted is not False:
            tags = self.trust.tags(src_ip, transport, src_port)
            if tags is None or not (self.trusted is True or self.trusted in tags):
                return False
        if self.untrusted is not False:
            tags = self.trust.tags(src_ip, transport, src_port)
            if tags is not None and (self.untrusted is True or self.untrusted in tags):
                return False
        return True

    def fails_to_next_set(self, status: int | None) -> bool:
        """Whether a set used up with the final ``status`` (None: no answer) goes on to the
        next of ``failure_sets``."""
        return self.failure_on_timeout if status is None else status in self.failure_codes


def _listener(text: str) -> frozenset[tuple[str, int]] | None:
    """``address:port`` (``[v6]:port``) as the (address, port) pairs the ingress may report
    for it: the address as ``[[listen]]`` writes it (UDP) and in canonical form (TCP reports
    what the socket says)."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    written = host.strip("[]")
    return frozenset({(written, int(port)), (ipaddress.ip_address(written).compressed, int(port))})


@dataclass(slots=True)
class Decision:
    """What the rules decided for one request: the rule that ends routing (None: no rule
    matched, a 404), the Request-URI user as rewritten (``user_changed``) and the header edits
    of every matching rule, in order."""

    route: Route | None
    user: str | None
    user_changed: bool
    edits: tuple[HeaderEdit, ...]


class RoutingTable:
    """Routes over destination sets; pass the worker's ``Dispatcher`` so that picks skip
    destinations it knows are down (without one, every destination counts as up)."""

    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None,
                 prefixes: PrefixTables | None = None) -> None:  # fmt: skip
        if dispatcher is None:
            dispatcher = Dispatcher(settings.destination_set, settings.listen)
        self.dispatcher = dispatcher
        self.sets = dispatcher.sets
        #: the ``[[trusted]]`` sources (routes match them; the proxy lets them relay)
        self.trusted = TrustedSources(settings.trusted)
        self.routes = [Route(c, self.sets, self.trusted) for c in settings.route]
        #: longest-prefix tables, read at start (raises PrefixFileError on a bad file)
        self.prefixes = prefixes if prefixes is not None else load_tables(settings)
        #: (status, reason) a table answers when no prefix matches
        self.no_match = {t.name: (t.no_match_status, t.no_match_reason
                                  or reason_phrase(t.no_match_status))
                         for t in settings.prefix_table}  # fmt: skip

    def lookup(self, req: Request, src_ip: str) -> tuple[str, Destination] | None:
        """(route name, destination) for ``req``, or None when no route matches or the
        route that matches has no destination set."""
        r = self.decide(req, src_ip, "udp", 0, "", 0).route
        return (r.name, r.to.pick(req.call_id)) if r is not None and r.to is not None else None

    def decide(self, req: Request, src_ip: str, transport: str, src_port: int,
               local_ip: str, local_port: int) -> Decision:  # fmt: skip
        """Walk the rules in order: the first that matches without ``continue_routing`` ends
        the walk; those with it apply their rewrites and edits and the walk goes on."""
        user = req.uri.user if req.uri.is_sip else None
        changed = False
        edits: tuple[HeaderEdit, ...] = ()
        for r in self.routes:
            if not r.holds(req, user, src_ip, transport, src_port, local_ip, local_port):
                continue
            if r.rewrite is not None and req.uri.is_sip:
                user, changed = r.rewrite.apply(user or ""), True
            if r.edits:
                edits += r.edits
            if not r.continues:
                return Decision(r, user, changed, edits)
        return Decision(None, user, changed, edits)
