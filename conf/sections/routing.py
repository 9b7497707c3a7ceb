"""``[[destination_set]]``, ``[[route]]`` (with ``[[route.header]]`` and
``[[route.header_edit]]``), ``[[trusted]]`` and ``[[prefix_table]]``: where requests go.
Checked beyond their types in ``conf/checks/routing.py``, ``conf/checks/route_rules.py`` (what
a route may say beyond where it sends) and ``conf/checks/prefix_tables.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationSet:
    """``[[destination_set]]``: a named group of next hops that routes send to."""

    name: str
    """Name that routes refer to; unique. Required."""
    destinations: list[str]
    """SIP URIs of the next hops, e.g. ``sip:10.0.0.1:5060;transport=tcp``: an IP address
    (IPv6 in brackets) or a host name, an optional port (default 5060; a host name without
    one is looked up by SRV) and parameters. Host names are resolved per RFC 3263 (see
    ``[dns]``) and need stateful routes. ``transport`` is ``udp``, ``tcp`` or ``tls`` (a ``sips:`` URI means ``tls``); without it a request leaves on the
    transport it came in on. Some ``[[listen]]`` must match its transport and address family.
    At least one. Required."""
    algorithm: Literal["round_robin", "weighted", "hash_call_id"] = "hash_call_id"
    """How a destination is picked: in turn, by weight, or by a hash of the Call-ID."""
    weights: list[int] = field(default_factory=list)
    """Weights for ``weighted``, one per destination, each from 1 to 1000000 (default: all
    1). Only with ``algorithm = "weighted"``."""
    probe_interval_s: float = field(default=0.0, metadata=_range(0, 86_400))
    """Send an OPTIONS probe to each destination this often; 0 turns probing off, and with it
    health tracking (nothing could bring a destination back up). Off by default: a UAS that
    does not expect OPTIONS (``sipp -sn uas``) would count them as unexpected messages. When
    on, at least 0.1."""
    probe_timeout_s: float = field(default=2.0, metadata=_range(0.01, 60))
    """A probe unanswered for this long counts as a failure. At most ``probe_interval_s``,
    so a destination has one probe in flight at a time."""
    probe_threshold: int = field(default=3, metadata=_range(1, 100))
    """Consecutive failures (probes unanswered or refused, requests unanswered or 503) that
    mark a destination down. Three, so one lost UDP datagram or one probe answered after a
    change of worker never takes a destination out of service."""
    probe_up_threshold: int = field(default=1, metadata=_range(1, 100))
    """Consecutive successes that bring a down destination back up. One: an answer proves a
    live SIP stack, and every probe interval out of service is capacity lost."""
    probe_mode: Literal["always", "when_down"] = "always"
    """``always`` probes every destination (failures are seen before calls meet them);
    ``when_down`` probes only destinations that failed (OpenSIPS ``ds_probing_mode`` 0), so
    only calls find that a destination died."""
    probe_from: str = ""
    """From URI of the probes, e.g. ``sip:probe@192.0.2.10``; empty for ``sip:sipline@`` the
    address of the listener a probe leaves from."""
    alive_codes: list[str] = field(default_factory=lambda: ["200-502", "504-699"])
    """Final statuses that prove a destination alive, as codes (``"200"``), classes (``"4xx"``)
    or ranges (``"200-299"``), from 200 to 699. Default: every final but 503, which says the
    server is unavailable (RFC 3261 §21.5.4); a 404 or 405 to OPTIONS still proves a live
    SIP stack (OpenSIPS ``options_reply_codes``)."""
    failover: bool = True
    """Try the next destination of the set when one fails (no response, or a status in
    ``failover_codes``): serial failover, needs stateful proxying."""
    failover_codes: list[str] = field(default_factory=lambda: ["408", "5xx"])
    """Final statuses that make the proxy try the next destination, written like
    ``alive_codes``, from 300 to 599 (a 6xx is a global failure that ends the search, RFC
    3261 §16.7 step 5). Default 408 and every 5xx, 503 included (§21.5.4 says to try an
    alternate server), as Kamailio's ``t_check_status("(408)|(5[0-9][0-9])")``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    """``[[route.header]]``: a condition on a request header (``docs/routing.md``)."""

    name: str
    """Header name, any case; a compact form (``f``, ``m`` ...) means its long form. Required."""
    regex: str = ""
    """Regular expression some value of the header must match in full (each header line
    counts as one value); empty: only ``present`` is checked."""
    present: bool = True
    """``true``: the header must be there (and match ``regex`` when set); ``false``: no line
    of it may be there (then ``regex`` must be empty)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderEdit:
    """``[[route.header_edit]]``: an edit of the forwarded request's headers
    (``docs/routing.md``). Edits run in the order listed, after every earlier matching rule's."""

    name: str
    """Header name: a token; not one the proxy owns (Via, Route, Record-Route, Max-Forwards,
    From, To, Call-ID, CSeq, Contact, Content-Length, Content-Type, Content-Encoding).
    Required."""
    action: Literal["set", "append", "remove"]
    """``set`` removes every line of the header and appends one with ``value``; ``append``
    adds one at the end of the header section; ``remove`` removes every line. Required."""
    value: str = ""
    """Value for ``set`` and ``append`` (not for ``remove``): printable text without
    control characters, where ``{from_user}``, ``{from_host}``, ``{to_user}``, ``{to_host}``,
    ``{ruri_user}`` (after rewrites), ``{ruri_host}`` and ``{source_ip}`` stand for the
    request's; ``{{`` and ``}}`` are literal braces."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """``[[route]]``: one routing rule. Rules are tried in order and the first whose every
    condition holds wins; a rule with no condition is a default route. Each rule has one
    action: ``to`` a destination set, ``to_request_uri``, or ``reject``. A request no rule
    matches gets 404: the proxy never relays to a next hop the request names unless a rule
    says so (``docs/security.md`` "Relaying")."""

    name: str
    """Name shown in logs; unique. Required."""
    to: str = ""
    """Name of the ``[[destination_set]]`` the matching requests go to. One action per rule:
    this, ``to_request_uri`` or ``reject``."""
    to_request_uri: bool = False
    """Send the matching requests to their Request-URI when it names an IP address other
    than this proxy's (404 otherwise): a relay, so give the rule a ``source`` or
    ``trusted`` condition."""
    reject: int = field(default=0, metadata=_range(0, 699))
    """Answer the matching requests with this status (400 to 699) instead of forwarding
    them; an ACK is dropped. 0: no rejection."""
    reason: str = ""
    """Reason phrase of the ``reject`` answer; empty for the standard phrase of the status.
    Only with ``reject``."""
    prefix_table: str = ""
    """Name of the ``[[prefix_table]]`` that picks the destinations of the matching requests
    by the longest prefix of their Request-URI user (``docs/prefix_tables.md``). One action
    per rule: this, ``to``, ``to_request_uri`` or ``reject``."""
    methods: list[str] = field(default_factory=list)
    """Methods matched, upper case (``["INVITE", "BYE"]``); empty matches every method."""
    ruri_user: str = ""
    """Regular expression the Request-URI user must match in full; empty matches all."""
    ruri_host: str = ""
    """Regular expression the Request-URI host must match in full, ignoring case; empty
    matches all."""
    source: str = ""
    """Address or CIDR (``10.0.0.0/8``, ``2001:db8::/32``) the source address must be in;
    empty matches every source."""
    trusted: bool | str = False
    """``true``: the source must match a ``[[trusted]]`` table; a tag (``"pbx"``): a
    ``[[trusted]]`` table with that tag; ``false`` matches every source."""
    mode: Literal["", "stateless", "stateful"] = ""
    """``stateless`` or ``stateful`` for the requests this rule routes; empty uses
    ``[proxy] mode``."""
    dialog_lifetime_s: float = field(default=0.0, metadata=_range(0, 604_800))
    """Lifetime of the dialogs of calls this rule routes (see ``[dialogs]
    default_lifetime_s``); 0 uses the default. Only on a stateful rule, with ``[dialogs]
    enabled``."""
    untrusted: bool | str = False
    """``true``: the source must match no ``[[trusted]]`` table (OpenSIPS
    ``!check_source_address``); a tag: no ``[[trusted]]`` table with that tag; ``false``
    matches every source."""
    listener: str = ""
    """The ``[[listen]]`` the request arrived on, as ``address:port`` (``[::1]:5060`` for
    IPv6); empty matches all."""
    transport: Literal["", "udp", "tcp", "tls"] = ""
    """Transport the request arrived on; empty matches all."""
    header: list[HeaderMatch] = field(default_factory=list)
    """Conditions on headers (``[[route.header]]``), all of which must hold."""
    strip_user: int = field(default=0, metadata=_range(0, 64))
    """Action: remove this many leading characters of the Request-URI user (OpenSIPS
    ``strip``). Rewrites run strip, then ``prefix_user``, then ``user_regex``."""
    prefix_user: str = ""
    """Action: put this before the Request-URI user (OpenSIPS ``prefix``): user characters
    of RFC 3261 §25.1 only."""
    user_regex: str = ""
    """Action: regular expression searched in the Request-URI user; the first match is
    replaced with ``user_replace`` (OpenSIPS ``subst_user``). Needs ``user_replace``."""
    user_replace: str = ""
    """Replacement for ``user_regex``: user characters and group references (``\\1``,
    ``\\g<name>``)."""
    header_edit: list[HeaderEdit] = field(default_factory=list)
    """Edits of the forwarded request's headers (``[[route.header_edit]]``)."""
    continue_routing: bool = False
    """Apply this rule's rewrites and header edits, then go on with the next rules (later
    rules see the rewritten Request-URI user). Such a rule has no ``to``,
    ``to_request_uri``, ``reject`` or ``prefix_table``."""
    failure_sets: list[str] = field(default_factory=list)
    """Failure routing (OpenSIPS ``failure_route``): destination sets tried in turn, each
    once the previous one (``to``, or the ``prefix_table`` groups, first) is used up and
    its last outcome is in ``failure_codes`` (or a timeout, with ``failure_on_timeout``).
    Stateful rules only."""
    failure_codes: list[str] = field(default_factory=lambda: ["408", "5xx"])
    """Final statuses that send the call on to the next of ``failure_sets``, written like
    ``failover_codes`` of ``[[destination_set]]``, from 300 to 599."""
    failure_on_timeout: bool = True
    """A destination set used up by no answer (Timer B/F) or a transport failure goes on
    to the next of ``failure_sets`` (OpenSIPS counts that as a local 408)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Trusted:
    """``[[trusted]]``: a source trusted to name its own next hop (OpenSIPS/Kamailio
    ``permissions`` address table): its in-dialog requests are forwarded without our
    Record-Route and its initial requests may carry a pre-loaded Route. Routes match its
    ``tag`` with ``trusted``. See ``docs/security.md`` "Relaying"."""

    cidr: str
    """Address or CIDR (``10.0.0.0/8``, ``2001:db8::1``) of the trusted source. Required."""
    transport: Literal["", "udp", "tcp", "tls"] = ""
    """Transport the source must use; empty matches all."""
    port: int = field(default=0, metadata=_range(0, 65535))
    """Source port the source must use; 0 matches every port."""
    tag: str = ""
    """Name routes match with ``trusted = "tag"``: letters, digits, ``.``, ``_`` and ``-``;
    several tables may share one. Empty: no tag (``trusted = true`` still matches)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixTable:
    """``[[prefix_table]]``: a longest-prefix routing table (OpenSIPS drouting, Kamailio LCR):
    number prefixes mapped to destination sets with priorities and weights, loaded by each
    worker at start (and a file table on reload) from a CSV file or a cacheDB key space
    (``docs/prefix_tables.md`` has the
    format). Routes send to it with ``prefix_table``."""

    name: str
    """Name that routes refer to; unique. Required."""
    file: str = ""
    """Absolute path of the CSV file, lines ``prefix,group[,priority[,weight]]`` where each
    group is a ``[[destination_set]]``. A bad line stops the worker (and ``sipline
    check-config``) with the file, line, field and what was expected. This or
    ``cachedb_key``."""
    cachedb_key: str = ""
    """Key under which ``sipline prefix-push`` stored the table in the cacheDB of
    ``[registrar] cachedb_url`` (letters, digits, ``.``, ``_``, ``:``, ``-``; at most 200).
    A worker that cannot read it within 10 s of its start stops. This or ``file``."""
    max_prefixes: int = field(default=2_000_000, metadata=_range(1, 20_000_000))
    """Distinct prefixes the file may hold at most; each costs about 10 bytes in every
    worker (``docs/benchmarks.md``)."""
    no_match_status: int = field(default=404, metadata=_range(400, 699))
    """Status of the answer to a request whose Request-URI user has no prefix in the table
    (or is no number: digits with an optional leading ``+``, at most 32)."""
    no_match_reason: str = ""
    """Reason phrase of that answer; empty for the standard phrase of the status."""
