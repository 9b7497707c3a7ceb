"""Stateless proxying (RFC 3261 §16.11), sans-IO: a parsed message in, messages to send out.

Rules:
1. Requests: validate (§16.3: scheme, Max-Forwards, loop, Proxy-Require), process the route
   information (§16.4: strict-router Request-URI, our own Route entries), pick the next hop
   (the top Route, else the routing table), then forward with the edits of §16.6: Max-Forwards
   decremented, Record-Route on dialog-creating requests, our Via on top, ``received``/``rport``
   on the previous one (RFC 3581). Edits are splices of the received bytes.
2. The branch is a hash of the request's transaction key, so a retransmission, its CANCEL and a
   non-2xx ACK all get the same branch (§16.11). A second component hashes what loop detection
   compares (§16.6 step 8): if a Via of ours already holds it, the request has looped (482).
3. Responses: the top Via must be ours, else it is stray and dropped (§16.7 step 3 for a
   stateless proxy). It is removed and the response goes where the next Via says: ``received``
   and ``rport`` first (RFC 3581 §4), the sent-by otherwise (§18.2.2). Over TCP, our Via's
   ``sl-c`` parameter names the connection the request came on (TCP or TLS), so the response takes it back.
   A response writes that parameter itself: it is authenticated (``workers/conntag.py``), a
   tag that fails is forged and the response dropped (``forged_tag``), and one naming an
   ingress that is not among ``ingresses`` (the live ones) goes out through the ingress it
   came in by, to the address the Via names, on a new connection if need be (§18.2.2).
4. ACKs and responses are never answered; what cannot be forwarded is dropped and counted.
5. §16.3 checks: scheme (416), Max-Forwards (483; an OPTIONS for us is answered 200 as its
   final recipient instead), Proxy-Require (420), then loops (482) as the branch is computed.
6. In-dialog requests (To-tag) go to their Request-URI, the remote target, once our Route is
   popped; initial requests, and ACKs that name no route set (sipp's built-in UAC, a non-2xx
   ACK), use the routing table, whose choice is sticky per Call-ID, so a non-2xx ACK and a
   CANCEL go where their INVITE went (§16.11). A request no route matches gets 404; a route
   relays to the Request-URI only with ``to_request_uri`` (rule 10), or answers with its
   ``reject`` status.
7. A next hop we cannot reach (a host name: no DNS yet; a transport or address family we do
   not listen on) gets 503. A response is never relayed to a broadcast, multicast or
   unspecified address (RFC 4475 ``bcast``).
8. Local replies over UDP go to the source address and the top Via's sent-by port, or the
   source port when the Via has ``rport`` (§18.2.2, RFC 3581); over TCP, back on the
   connection the request came on.
9. Initial requests (no To-tag; never ACK, CANCEL or BYE) pass the ``[[ratelimit]]`` pipes
   they match (workers/ratelimit/pipes.py) after the §16.3 checks: over a pipe's rate they get 503
   with a jittered Retry-After, in both modes.
10. No open relay (docs/security.md "Relaying"), after the §16.3 checks and before the
   pipes: a next hop the request names itself (a Route that is not ours, or the Request-URI
   of an in-dialog request) is taken only from a ``[[trusted]]`` source, or for an in-dialog
   request that carries our Record-Route (our Route popped, or the strict-router form) or
   that the stateful core matched to a dialog it holds (``known``). Otherwise an initial
   request with a pre-loaded Route gets 403 and an in-dialog request 404; an ACK is dropped
   (``relay_ack``). Every refusal counts ``relay_refused``. An in-dialog request addressed
   to us (sipp's UAC when we do not Record-Route) and an ACK without a Route are routed by
   the table to configured destinations: no relay.
11. Digest authentication (``docs/auth.md``, ``workers/auth/admit.py``), after the relay check
   and before the pipes, when ``[auth] enabled``: a request that must authenticate and does
   not gets 401/407 with the challenges (or 400 for credentials it cannot read), so neither
   a pipe nor a destination sees it; a verified one leaves without our credentials when
   ``consume_credentials``. ``plan`` runs once per request, as it spends nonce-counts. The
   ACK of a challenge carries the challenge's HMAC To-tag and is dropped (``ack_challenge``).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import Counter
from collections.abc import Container, Sequence
from typing import Any

from conf.settings import Listener, Settings
from ingress.sip.errors import (
    BadExtension,
    LoopDetected,
    SipError,
    TooManyHops,
    UnsupportedUriScheme,
)
from ingress.sip.grammar import parse_name_addr, parse_uri
from ingress.sip.headers import split_commas
from ingress.sip.message import NameAddr, Request, Response, Uri, Via
from ingress.sip.parser import parse_message
from ingress.sip.serialize import Edit, build_response, splice
from workers import nat
from workers.auth.admit import Authenticator
from workers.conntag import ConnTags
from workers.listeners import Listeners, hostport, is_ip, is_unicast, strip_brackets
from workers.proxytypes import Inbound, Out, Plan
from workers.ratelimit.pipes import RateLimiter
from workers.refusals import (
    Drop,
    Malformed,
    NotFound,
    PreloadedRoute,
    RateLimited,
    RelayRefused,
    Unreachable,
    rejection,
)
from workers.routing.prefix_route import PrefixChoice
from workers.routing.rules import header_edits, with_user
from workers.routing.table import Decision, Destination, Route, RoutingTable

__all__ = ["BRANCH_PREFIX", "CONN_PARAM", "NAT_CONN_PARAM", "PARAMCHARS_RE", "SNI_PARAM",
           "STREAMS", "Inbound", "Out", "Plan", "StatelessProxy"]  # fmt: skip

CRLF = b"\r\n"
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
ROUTABLE_SCHEMES = frozenset({"sip", "sips", "tel"})
ALLOW = b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, SUBSCRIBE, NOTIFY, " \
        b"PUBLISH, INFO, REFER, MESSAGE, UPDATE"  # fmt: skip
CONN_PARAM = "sl-c"
#: never rate limited: they end or complete calls already admitted (docs/design.md §3 "Protection")
UNLIMITED = frozenset({"ACK", "CANCEL", "BYE"})
#: connection transports: a response goes back on the connection (rule 3, docs/tls.md)
STREAMS = frozenset({"tcp", "tls"})
#: on a next hop the stateful proxy resolved from a host name: that name, which a TLS
#: server's certificate must carry; it goes to the ingress as the meta transport ``tls:<name>``
SNI_PARAM = "sl-sni"
#: on a next hop the stateful proxy took from a binding: the tag of the TCP/TLS connection its
#: REGISTER came on (docs/nat.md); checked as the Via's ``sl-c``
NAT_CONN_PARAM = "sl-nc"
#: what a URI parameter value may hold (RFC 3261 §25.1 paramchar, unescaped): a tag that does
#: not fit is left off the hop, which then reaches the UA by its address only
PARAMCHARS_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+")
SERVER_NAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?:\.(?!-)[A-Za-z0-9-]{1,63})*\.?")
#: the Record-Route parameter naming a listener's transport (UDP is the default)
RR_TRANSPORT = {"udp": "", "tcp": "transport=tcp;", "tls": "transport=tls;"}
#: every branch we generate starts so; a response whose top Via lacks it is not ours
BRANCH_PREFIX = "z9hG4bK-sl"


def _hash(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=size).hexdigest()


class StatelessProxy:
    def __init__(self, settings: Settings, routing: RoutingTable, key: bytes | None = None,
                 ) -> None:  # fmt: skip
        """``key``: the node key of the ``sl-c`` tags (rule 3); a random one by default."""
        self.cfg = settings.proxy
        self.routing = routing
        self.listeners = Listeners(settings.listen)
        self._supported = frozenset(t.lower() for t in settings.proxy.proxy_require_supported)
        #: Record-Route lines by (inbound transport, local address, outbound listener): few
        self._rr_cache: dict[tuple[str, str, int, int], bytes] = {}
        #: ``[[ratelimit]]`` pipes (rule 9); the worker sets ``now`` (monotonic) and ``load``
        #: (its busy ratio) before each batch, as they are the same for all its messages
        self.ratelimit = RateLimiter(settings.ratelimit) if settings.ratelimit else None
        self.now = 0.0
        self.load = 0.0
        self.trusted = routing.trusted
        #: digest authentication (rule 11); the worker sets it when ``[auth] enabled``
        self.auth: Authenticator | None = None
        #: ``relay_refused`` (rule 10); the worker hands in its load counters
        self.counters: Counter[str] = Counter()
        self.tags = ConnTags(key if key is not None else secrets.token_bytes(32))
        #: [nat] fix_contact: the tests that mark a sender as behind NAT (workers/nat.py)
        self.nat_tests = frozenset(settings.nat.detect) if settings.nat.fix_contact else None
        #: the ingresses a response may name (rule 3); the worker sets its live set, None
        #: trusts any ingress an authentic tag names
        self.ingresses: Container[str] | None = None

    def handle(self, raw: bytes, inb: Inbound) -> list[Out]:
        """Process one message. Raises ``Drop`` for what is neither forwarded nor answered,
        ``Malformed`` for what the parse refused (the ingress checked only the start line and
        the Call-ID)."""
        msg = self.parse(raw, inb)
        if isinstance(msg, Response):
            return [self._forward_response(msg, inb)]
        return [self.request_out(msg, inb)]

    def parse(self, raw: bytes, inb: Inbound) -> Request | Response:
        """The full parse; ``Malformed`` carries the answer when one is allowed."""
        try:
            return parse_message(raw)
        except SipError as exc:
            reply = None
            if exc.answerable and exc.salvage is not None:
                data = build_response(exc.salvage, exc.status, exc.reason,
                                      extra_headers=exc.extra_headers)  # fmt: skip
                reply = (inb.ingress, self.reply_meta(inb, None), data)
            raise Malformed(exc, reply) from exc

    def request_out(self, req: Request, inb: Inbound, known: bool = False,
                    plan: Plan | None = None) -> Out:  # fmt: skip
        """``req`` forwarded statelessly, or the error reply that refuses it; ``known`` as
        ``plan``. A ``plan`` already made is used as is (``plan`` spends nonce-counts and
        rate-limit tokens: it runs once per request)."""
        try:
            return self._forward_request(req, inb, known, plan)
        except SipError as exc:
            if req.method == "ACK":
                reason = "relay_ack" if isinstance(exc, RelayRefused) else f"ack_{exc.status}"
                raise Drop(reason) from exc
            return self._reply(req, inb, exc.status, exc.reason, exc.extra_headers)

    def response_out(self, resp: Response, inb: Inbound) -> Out:
        """``resp`` forwarded statelessly by its Via (rule 3)."""
        return self._forward_response(resp, inb)

    # -- requests ----------------------------------------------------------------------------

    def _forward_request(self, req: Request, inb: Inbound, known: bool = False,
                         plan: Plan | None = None) -> Out:  # fmt: skip
        if plan is None:
            plan = self.plan(req, inb, known)
        if plan.local is not None:
            return self._reply(req, inb, 200, "OK", plan.local)
        if plan.hop is not None:
            return self.forward(req, inb, plan, plan.hop)[0]
        assert plan.target is not None  # plan() gives a hop or a routed target
        return self.forward(req, inb, plan, parse_uri(plan.target.uri))[0]

    def plan(self, req: Request, inb: Inbound, known: bool = False) -> Plan:
        """§16.3 checks and §16.4-16.5 route processing: where ``req`` goes next. ``known``:
        the stateful core matched ``req`` to a dialog it holds (rule 10).

        Raises:
            SipError: the request is refused (416, 420, 483, 404, 403, a route's reject ...).
        """
        if req.uri.scheme not in ROUTABLE_SCHEMES:
            raise UnsupportedUriScheme(f"scheme {req.uri.scheme}")
        if req.method == "ACK" and self.auth is not None and self.auth.acks_challenge(req):
            raise Drop("ack_challenge")  # the ACK of our 401/407 ends here (rule 11)
        routes, changed, uri, uri_changed = self._preprocess_routes(req)
        if req.method == "OPTIONS" and not routes and self._for_us(uri):
            return Plan(routes, changed, uri, uri_changed, None, None, None, (ALLOW,))
        if req.max_forwards == 0:
            raise TooManyHops("Max-Forwards is 0")
        self._check_proxy_require(req)
        if routes or req.to.tag is not None:
            self._check_relay(req, inb, routes, changed, uri, known)
        strip = None
        if self.auth is not None:
            trusted = self.trusted.tags(inb.src_ip, inb.transport, inb.src_port) is not None
            strip = self.auth.admit(req, trusted, changed or known, self.now)
        route: Route | None = None
        target: Destination | None = None
        if self.ratelimit is not None and req.to.tag is None and req.method not in UNLIMITED:
            self._check_rate(req, inb, routes, uri)
        if routes:
            top = routes[0].uri
            if not top.has_param("lr"):  # strict next hop (§16.6 step 7)
                routes = routes[1:] + [_name_addr(f"<{uri.raw}>")]
                uri, uri_changed, changed = top, True, True
            hop: Uri | None = top
        else:
            hop, route, uri, uri_changed, edits = self._route(req, uri, uri_changed, inb, changed)
            if hop is None and route is not None and route.to is not None:
                target = route.to.pick(req.call_id)
            elif hop is None and route is not None and route.prefix_table:
                # after the rules' user rewrite: the table sees the number they made
                choice = self._by_prefix(req, uri, route)
                return Plan(routes, changed, uri, uri_changed, hop, route, choice.targets[0],
                            None, strip, edits, choice)  # fmt: skip
            return Plan(routes, changed, uri, uri_changed, hop, route, target, None, strip, edits)
        return Plan(routes, changed, uri, uri_changed, hop, route, target, None, strip)

    def _by_prefix(self, req: Request, uri: Uri, route: Route) -> PrefixChoice:
        """The destinations of ``route``'s prefix table for the Request-URI user.

        Raises:
            SipError: no prefix matches, or none of its groups has a usable destination:
                the table's ``no_match_status``.
        """
        user = uri.user if uri.is_sip else None
        routing = self.routing
        choice = routing.prefixes.choose(route.prefix_table, user, req.call_id, routing.sets)
        if choice is None:
            status, reason = routing.no_match[route.prefix_table]
            raise rejection(status, reason)(f"route {route.name}: no prefix of the user")
        return choice

    def forward(self, req: Request, inb: Inbound, plan: Plan, hop: Uri, attempt: int = 0,
                ) -> tuple[Out, str]:  # fmt: skip
        """The request as it leaves for ``hop`` (§16.6), and the branch of our Via. Each
        ``attempt`` of one request (serial failover) gets its own branch.

        Raises:
            SipError: ``hop`` cannot be reached from here (503), or the request looped (482).
        """
        if not is_ip(hop.host_plain):
            raise Unreachable(f"next hop {hop.host_plain!r} is not an IP address")
        # no transport on the next hop: keep the one the request came on, as Kamailio does;
        # a sips: hop is TLS whatever it says (RFC 3261 §26.2.1)
        transport = "tls" if hop.scheme == "sips" else (hop.param("transport") or inb.transport).lower()
        if transport not in STREAMS and transport != "udp":
            raise Unreachable(f"no {transport} transport")
        dst_ip, dst_port = hop.host_plain, hop.port or (5061 if transport == "tls" else 5060)
        out_lst = self.listeners.pick(transport, dst_ip)
        if out_lst is None:
            raise Unreachable(f"no {transport} listener for {dst_ip}")
        routes, uri = plan.routes, plan.uri
        branch = self._branch(req, uri, routes, attempt)  # raises LoopDetected
        edits: list[Edit] = []
        via = self.listeners.via_prefixes[id(out_lst)] + branch.encode()
        if inb.transport in STREAMS:
            via += f";{CONN_PARAM}={self.tags.mint(inb.ingress, inb.conn)}".encode()
        edits.append((req.line_end, req.line_end, via + CRLF))
        if self.cfg.record_route and req.method in DIALOG_CREATING and req.to.tag is None:
            edits.append((req.line_end, req.line_end, self._record_route(inb, out_lst)))
        edits.append(self._max_forwards_edit(req))
        received = self._received_edit(req, inb)
        if received is not None:
            edits.append(received)
        if plan.changed:
            edits.extend(self._route_edits(req, routes))
        if plan.strip is not None:
            edits.append(plan.strip)
        if plan.edits:
            edits.extend(plan.edits)
        if plan.uri_changed:
            start = req.raw.find(req.method.encode())
            line = f"{req.method} {uri.raw} SIP/2.0".encode("utf-8", "surrogateescape") + CRLF
            edits.append((start, req.line_end, line))
        if self.nat_tests is not None and req.method != "REGISTER":
            _add_nat_edit(edits, req, inb, self.nat_tests)
        if transport in STREAMS and not req.has_header("content-length"):
            cl = b"Content-Length: %d" % (req.body_end - req.body_start) + CRLF
            edits.append((req.line_end, req.line_end, cl))
        data = splice(req.raw, edits, req.body_end)
        meta = [transport, dst_ip, dst_port, 0, out_lst.address, out_lst.port]
        ingress = inb.ingress
        if transport in STREAMS and (tag := hop.param(NAT_CONN_PARAM)):
            named = self.tags.verify(tag)  # another node's, or forged: any connection will do
            if named is not None and (self.ingresses is None or named[0] in self.ingresses):
                ingress, meta[3] = named
        if transport == "tls":  # the name the server's certificate must carry (docs/tls.md)
            name = hop.param(SNI_PARAM)
            if name and SERVER_NAME_RE.fullmatch(name):
                meta[0] = f"tls:{name.lower()}"
        return (ingress, meta, data), branch

    def _check_rate(self, req: Request, inb: Inbound, routes: list[NameAddr], uri: Uri) -> None:
        """Rule 9: an initial request over a pipe's rate gets 503 with a jittered Retry-After."""
        assert self.ratelimit is not None
        route = ""
        if not routes:  # the rule a routed request would take, for pipes bound to a route
            r = self._decide(req, inb).route
            route = r.name if r is not None else ""
        name = self.ratelimit.admit(req.method, inb.src_ip, route, self.now, self.load)
        if name is not None:
            err = RateLimited(f"over the rate of pipe {name}")
            err.extra_headers = (b"Retry-After: %d" % self.ratelimit.retry_after(name),)
            raise err

    def _check_proxy_require(self, req: Request) -> None:
        """RFC 3261 §16.3 check 5: every Proxy-Require tag must be one we support (else 420)."""
        required = [t for t in req.header_values("proxy-require") if t]
        unsupported = [t for t in required if t.lower().decode("latin-1") not in self._supported]
        if unsupported:
            err = BadExtension("unsupported Proxy-Require")
            err.extra_headers = (b"Unsupported: " + b", ".join(unsupported),)
            raise err

    def _for_us(self, uri: Uri) -> bool:
        return self.listeners.uri_is_us(uri) and uri.user is None

    def _preprocess_routes(self, req: Request) -> tuple[list[NameAddr], bool, Uri, bool]:
        """§16.4: returns (routes left, routes changed, Request-URI, Request-URI changed)."""
        routes = [parse_name_addr(v) for v in req.header_values("route")]
        uri, uri_changed, changed = req.uri, False, False
        if routes and self.listeners.uri_is_us(uri) and uri.user is None:
            # the previous hop was a strict router: the real target is the last Route
            uri, routes, uri_changed, changed = routes[-1].uri, routes[:-1], True, True
        ours = 0  # our own entries on top, popped in one slice (one per entry was quadratic)
        while ours < len(routes) and self.listeners.uri_is_us(routes[ours].uri):
            ours += 1
        if ours:
            routes, changed = routes[ours:], True
        return routes, changed, uri, uri_changed

    def _check_relay(self, req: Request, inb: Inbound, routes: list[NameAddr], ours: bool,
                     uri: Uri, known: bool) -> None:  # fmt: skip
        """Rule 10: refuse a next hop the request names itself unless its source may.
        ``ours``: our own Route entry was popped, or the Request-URI was ours (strict
        router): the request follows a route set we Record-Routed."""
        error: type[RelayRefused] = RelayRefused
        if req.to.tag is None:
            relay, error = bool(routes), PreloadedRoute
        elif ours or known:
            return
        else:  # in-dialog, not through us: only a Route or a remote target would take it on
            relay = bool(routes) or (req.method != "ACK" and not self.listeners.uri_is_us(uri))
        if relay and self.trusted.tags(inb.src_ip, inb.transport, inb.src_port) is None:
            self.counters["relay_refused"] += 1
            raise error("the request names its next hop and its source is not trusted")

    def _route(self, req: Request, uri: Uri, uri_changed: bool, inb: Inbound, routed: bool,
               ) -> tuple[Uri | None, Route | None, Uri, bool, Sequence[Edit]]:  # fmt: skip
        """(next hop, route, Request-URI, Request-URI changed, header edits). The next hop
        when the request names it (a remote target, or its Request-URI by a
        ``to_request_uri`` route), else None and the rule that ends the routing walk, with
        the rules' rewrites (docs/routing.md). ``routed``: our own Route entry was popped,
        so the request follows a route set."""
        if (
            (req.method != "ACK" or routed)
            and req.to.tag is not None
            and uri.is_sip
            and is_ip(uri.host_plain)
            and not self.listeners.uri_is_us(uri)
        ):
            # in-dialog: the Request-URI is the remote target (§12.2.1.1)
            return uri, None, uri, uri_changed, ()
        d = self._decide(req, inb)
        route = d.route
        if route is None:
            raise NotFound("no route")
        if route.reject:
            raise rejection(route.reject, route.reason)(f"route {route.name}")
        if d.user_changed and uri.is_sip:
            uri = parse_uri(with_user(uri.raw, uri.scheme, uri.user, d.user or ""))
            uri_changed = True
        edits = header_edits(req, d.edits, d.user, inb.src_ip) if d.edits else ()
        if not route.to_request_uri:
            return None, route, uri, uri_changed, edits
        if uri.is_sip and is_ip(uri.host_plain) and not self.listeners.uri_is_us(uri):
            return uri, route, uri, uri_changed, edits
        raise NotFound(f"route {route.name}: the Request-URI names no address to relay to")

    def _decide(self, req: Request, inb: Inbound) -> Decision:
        return self.routing.decide(req, inb.src_ip, inb.transport, inb.src_port, inb.local_ip,
                                   inb.local_port)  # fmt: skip

    def _branch(self, req: Request, uri: Uri, routes: list[NameAddr], attempt: int = 0) -> str:
        top = req.vias[0]
        b = top.branch or ""
        if b.startswith("z9hG4bK"):
            txn = f"{b}|{top.host}:{top.port}"
        else:  # RFC 2543 peer: build the key from the request itself (§16.11)
            txn = f"{req.call_id}|{req.from_.tag}|{req.cseq}|{req.uri.raw}|{top.raw!r}"
        if attempt:
            txn = f"{txn}|{attempt}"
        route_text = ",".join(r.uri.raw for r in routes)
        loop = _hash(f"{uri.raw}|{req.from_.tag}|{req.call_id}|{req.cseq}|{route_text}", 4)
        for v in req.vias:
            if self.listeners.is_us(v.host_plain, v.port, v.transport) and (
                v.branch or ""
            ).endswith("." + loop):
                raise LoopDetected("request looped back")
        return f"{BRANCH_PREFIX}{_hash(txn, 8)}.{loop}"

    def _record_route(self, inb: Inbound, out_lst: Listener) -> bytes:
        key = (inb.transport, inb.local_ip, inb.local_port, id(out_lst))  # as via_prefixes
        rr = self._rr_cache.get(key)
        if rr is None:
            rr = self._rr_cache[key] = self._build_record_route(inb, out_lst)
        return rr

    def _build_record_route(self, inb: Inbound, out_lst: Listener) -> bytes:
        in_lst = next(
            (x for x in self.listeners.listen
             if x.address == inb.local_ip and x.port == inb.local_port
             and x.transport == inb.transport),
            out_lst,
        )  # fmt: skip
        rr = [out_lst] if in_lst is out_lst else [out_lst, in_lst]
        return b"".join(
            f"Record-Route: <sip:{hostport(x)};{RR_TRANSPORT[x.transport]}lr>".encode()
            + CRLF
            for x in rr
        )

    def _max_forwards_edit(self, req: Request) -> Edit:
        for name, _, start, end in req.headers:
            if name == "max-forwards":
                mf = min(req.max_forwards or 0, 256)
                return (start, end, b"Max-Forwards: %d" % (mf - 1) + CRLF)
        return (
            req.line_end,
            req.line_end,
            b"Max-Forwards: %d" % self.cfg.default_max_forwards + CRLF,
        )

    def _received_edit(self, req: Request, inb: Inbound) -> Edit | None:
        """Add ``received`` (and fill ``rport``) on the top Via (§18.2.1, RFC 3581 §4)."""
        top = req.vias[0]
        has_rport = "rport" in top.params
        if top.host_plain == inb.src_ip and not has_rport:
            return None
        params = dict(top.params)
        params["received"] = inb.src_ip
        if has_rport:
            params["rport"] = str(inb.src_port)
        new = _via_text(top, params)
        for name, value, start, end in req.headers:
            if name != "via":
                continue
            pos = req.raw.find(top.raw, start, end)
            if pos >= 0:
                return (pos, pos + len(top.raw), new)
            rest = split_commas(value)[1:]
            return (start, end, b"Via: " + b", ".join([new, *rest]) + CRLF)
        return None

    def _route_edits(self, req: Request, routes: list[NameAddr]) -> list[Edit]:
        lines = [(start, end) for name, _, start, end in req.headers if name == "route"]
        edits: list[Edit] = [(s, e, b"") for s, e in lines]
        if routes:
            at = lines[0][0] if lines else req.line_end
            edits.append((at, at, b"Route: " + b", ".join(r.raw for r in routes) + CRLF))
        return edits

    # -- responses ---------------------------------------------------------------------------

    def _forward_response(self, resp: Response, inb: Inbound) -> Out:
        ours, *rest = resp.vias
        if not self.listeners.is_us(ours.host_plain, ours.port, ours.transport) or not (
            ours.branch or ""
        ).startswith(BRANCH_PREFIX):
            raise Drop("stray_response")
        if not rest:
            raise Drop("response_for_us")
        nxt = rest[0]
        transport = nxt.transport.lower()
        if transport not in STREAMS and transport != "udp":
            raise Drop("unsupported_transport")
        dst_ip = strip_brackets(nxt.received) if nxt.received else nxt.host_plain
        if not is_ip(dst_ip):
            raise Drop("via_needs_dns")
        if not is_unicast(dst_ip):
            raise Drop("via_not_unicast")
        rport = nxt.params.get("rport")
        dst_port = int(rport) if rport and rport.isdigit() else (
            nxt.port or (5061 if transport == "tls" else 5060))  # fmt: skip
        ingress, conn = inb.ingress, 0
        if CONN_PARAM in ours.params:
            named = self.tags.verify(ours.params[CONN_PARAM] or "")
            if named is None:
                raise Drop("forged_tag")
            if transport in STREAMS and (self.ingresses is None or named[0] in self.ingresses):
                ingress, conn = named
        lst = self.listeners.pick(transport, dst_ip)
        if lst is None:
            raise Drop("no_listener")
        edits = [self._pop_via(resp)]
        if self.nat_tests is not None:
            _add_nat_edit(edits, resp, inb, self.nat_tests)
        data = splice(resp.raw, edits, resp.body_end)
        return (ingress, [transport, dst_ip, dst_port, conn, lst.address, lst.port], data)

    def _pop_via(self, resp: Response) -> Edit:
        for name, value, start, end in resp.headers:
            if name == "via":
                rest = split_commas(value)[1:]
                if not rest:
                    return (start, end, b"")
                return (start, end, b"Via: " + b", ".join(rest) + CRLF)
        raise Drop("no_via")  # the parser guarantees one; kept for the type checker

    # -- local replies -----------------------------------------------------------------------

    def _reply(
        self, req: Request, inb: Inbound, status: int, reason: str, extra: tuple[bytes, ...] = ()
    ) -> Out:
        # a challenge's To-tag lets its ACK be recognised and absorbed (rule 11)
        tag = self.auth.reply_tag(req) if self.auth is not None and status in (401, 407) else None
        data = build_response(req, status, reason, extra_headers=extra, to_tag=tag)
        return (inb.ingress, self.reply_meta(inb, req), data)

    def reply_meta(self, inb: Inbound, req: Request | None) -> list[Any]:
        """Where a reply to a request from ``inb`` goes (rule 8)."""
        port = inb.src_port
        if req is not None and inb.transport == "udp":
            top = req.vias[0]
            if "rport" not in top.params:
                port = top.port or 5060
        return [inb.transport, inb.src_ip, port, inb.conn, inb.local_ip, inb.local_port]

    def pop_via(self, resp: Response, inb: Inbound | None = None) -> bytes:
        """``resp`` without our Via, as it goes upstream; with ``inb`` (where it came from)
        its Contact is fixed when ``[nat] fix_contact`` says so."""
        edits = [self._pop_via(resp)]
        if inb is not None and self.nat_tests is not None:
            _add_nat_edit(edits, resp, inb, self.nat_tests)
        return splice(resp.raw, edits, resp.body_end)


def _name_addr(text: str) -> NameAddr:
    return parse_name_addr(text.encode("utf-8", "surrogateescape"))


def _via_text(via: Via, params: dict[str, str | None]) -> bytes:
    host = via.host + (f":{via.port}" if via.port else "")
    p = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
    return f"SIP/2.0/{via.transport} {host}{p}".encode("utf-8", "surrogateescape")


def _add_nat_edit(edits: list[Edit], msg: Request | Response, inb: Inbound,
                  tests: frozenset[str]) -> None:  # fmt: skip
    """fix_nated_contact (workers/nat.py rules 2 and 3), unless a route's edit already
    touches the Contact line (edits must not overlap)."""
    if isinstance(msg, Request):
        if len(msg.vias) != 1:
            return  # not straight from the UA: its Contact is not where it came from
    else:
        tests = tests & nat.RESPONSE_TESTS
    src = nat.Seen(inb.transport, inb.src_ip, inb.src_port)
    if not nat.behind_nat(msg, src, tests):
        return
    edit = nat.contact_edit(msg, src)
    if edit is not None and not any(s < edit[1] and edit[0] < e for s, e, _ in edits):
        edits.append(edit)
