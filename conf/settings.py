"""Configuration every sipline process agrees on, as frozen dataclasses.

Rules:

- One dataclass per TOML table; a field is a key, and its name carries its unit (``_ms``,
  ``_s``, ``_bytes``).
- Each class and field docstring is what ``docs/configuration.md`` says of it
  (``tests/conf/test_docs.py`` fails when the two drift apart). Numeric ranges live in the
  field metadata (``min``/``max``), where the loader and the docs both read them.
- ``conf.load`` builds these from TOML and refuses unknown keys, wrong types and out-of-range
  values, naming the file, the key, what was expected and what was found. Checks that span
  fields (names resolve, addresses parse) are in ``conf.load._check_values``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["udp", "tcp", "tls"]
VerifyClient = Literal["none", "optional", "require"]
Mode = Literal["stateless", "stateful"]


def _range(lo: float, hi: float) -> dict[str, float]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """``[node]``: what this node is called and where its processes meet."""

    name: str = "sipline"
    """Node name: in every log line, and the key of this node's state for its peers. Letters,
    digits, ``.``, ``_`` and ``-``."""
    run_dir: str = ""
    """Directory of the node's ZeroMQ ipc:// sockets and of its key (``node.key``, created
    0600 on first use); processes of one node share it, and whoever can open it can command
    the node, so it must be private (``docs/security.md``, "Local users"): a process creates
    it 0700 (0750 with ``run_group``) and refuses to start when it is a symbolic link, not
    owned by the process's user, or open to others. Empty (the default):
    ``$XDG_RUNTIME_DIR/sipline-<name>`` when that is set and the user's, else
    ``/run/sipline/<name>`` for root, else ``/tmp/sipline-<uid>-<name>``. An absolute path of
    at most 76 bytes (a Unix socket path is at most 107)."""
    run_group: str = ""
    """A group (name or number) whose members may also use the node's sockets (``sipline
    ctl`` run by an operator who is not the node's user): the run directory is then 0750 and
    the group's, its sockets 0660. Empty (the default): the node's user only (0700, 0600)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    """``[[listen]]``: one socket every ingress process binds. Repeat the table per socket; each
    (transport, address, port) once."""

    transport: Transport
    """``udp``, ``tcp`` or ``tls`` (SIP over TLS over TCP, ``docs/tls.md``). Required."""
    address: str = "127.0.0.1"
    """IPv4 or IPv6 address to bind: a specific address (not a host name, ``0.0.0.0``, ``::``
    or an IPv6 ``%zone``), because it is also what Via and Record-Route say for messages
    sent from it."""
    port: int = field(default=5060, metadata=_range(1, 65535))
    """Port to bind; every ingress process binds it with SO_REUSEPORT."""
    virtual: bool = False
    """The failover pair's shared address (``docs/failover.md``): bound only while this node
    is the active one (``[stateplane] role``), released when it goes passive. On a real
    network a VRRP daemon moves the IP; the node binds the address when it takes over. List
    it first among the listeners of its transport, so requests leave from it and Via and
    Record-Route name it."""
    standby: bool = False
    """Active/active (``docs/failover.md``): this virtual address is the peer node's, held by
    this node only after taking the peer's calls over (for it this node has the opposite of
    ``[stateplane] role``). With ``role = "member"``: another member's address, named in
    that member's ``[[peer]] virtual``. Needs ``virtual``."""
    cert_file: str = ""
    """TLS only, required there: PEM file of this listener's certificate (and its chain),
    presented to TLS clients. Absolute path."""
    key_file: str = ""
    """TLS only, required there: PEM file of the private key of ``cert_file``, unencrypted;
    readable by the node's user only. Absolute path. Never logged."""
    verify_client: VerifyClient = "none"
    """TLS only: ``require`` refuses a client without a certificate ``ca_file`` vouches for
    (trunks: mutual TLS); ``optional`` asks for one and refuses one that does not verify;
    ``none`` asks for none."""
    ca_file: str = ""
    """TLS only: PEM file of the certificate authorities client certificates must chain to.
    Required with ``verify_client``. Absolute path."""
    client_names: list[str] = field(default_factory=list)
    """TLS only, with ``verify_client = "require"``: the client certificate must name one of
    these (a DNS subjectAltName, else the subject's commonName; ``*.example.com`` matches one
    label). Empty: any certificate ``ca_file`` vouches for."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tcp:
    """``[tcp]``: limits that protect an ingress from TCP peers (slow, fragmenting or many)."""

    max_header_bytes: int = field(default=16384, metadata=_range(512, 1 << 20))
    """A header section longer than this gets 513 and the connection is closed."""
    max_body_bytes: int = field(default=49152, metadata=_range(0, 16 << 20))
    """A Content-Length above this gets 413 and the connection is closed."""
    message_deadline_ms: int = field(default=5000, metadata=_range(10, 600_000))
    """A message must complete within this time from its first byte (slow-sender defence)."""
    max_reads_per_message: int = field(default=64, metadata=_range(1, 1_000_000))
    """A message must complete within this many reads (fragmentation defence)."""
    idle_timeout_s: float = field(default=600.0, metadata=_range(1, 86_400))
    """A connection with no traffic either way for this long is closed."""
    max_connections: int = field(default=20_000, metadata=_range(1, 1_000_000))
    """Connections one ingress process holds at most; beyond it new ones are refused. Held
    at start below the open-file limit less 256 descriptors (logged when clamped)."""
    max_connections_per_ip: int = field(default=256, metadata=_range(1, 1_000_000))
    """Inbound connections one source address may hold in one ingress process."""
    write_queue_bytes: int = field(default=262_144, metadata=_range(4096, 64 << 20))
    """Bytes queued for a connection that is not draining; past it a send fails."""
    connect_timeout_ms: int = field(default=3000, metadata=_range(10, 120_000))
    """Outbound connect attempts give up after this long; queued sends fail."""
    drain_s: float = field(default=30.0, metadata=_range(0, 3600))
    """On SIGTERM an ingress stops accepting connections but serves the inbound ones it holds
    until they close or this long has passed, then closes them (RFC 5626 clients reconnect,
    to the ingress that replaced it: ``docs/operations.md``). It ends at once when no worker
    is left (the whole node stopping). Keep it below the runner's stop timeout (the systemd
    units give 45 s; honcho stops the whole node, so its 5 s never applies)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tls:
    """``[tls]``: TLS handshakes and the connections we open (``docs/tls.md``). TLS
    connections also obey every ``[tcp]`` limit and count toward its connection caps."""

    handshake_timeout_ms: int = field(default=3000, metadata=_range(100, 60_000))
    """A TLS handshake, either way, must complete within this; else the connection is closed
    (a slow or silent client holds nothing longer)."""
    max_handshakes: int = field(default=256, metadata=_range(1, 100_000))
    """Inbound handshakes one ingress process runs at once; further connections are
    refused until one ends (a handshake costs CPU the peer need not spend)."""
    max_handshakes_per_ip: int = field(default=8, metadata=_range(1, 100_000))
    """Inbound handshakes one source address may have in progress at once in one ingress
    process."""
    verify_server: bool = True
    """Check the certificate of every TLS server we connect to: it must chain to ``ca_file``
    (or the system's authorities when empty) and name the destination's host (its IP address
    for an IP destination). Turn off only on a test bench."""
    ca_file: str = ""
    """PEM file of the authorities server certificates must chain to; empty: the system's
    default store. Absolute path."""
    cert_file: str = ""
    """PEM file of the certificate we present to TLS servers that ask for one (mutual TLS
    towards a trunk); empty: none. Absolute path. Needs ``key_file``."""
    key_file: str = ""
    """PEM file of the private key of ``cert_file``, unencrypted. Absolute path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bus:
    """``[bus]``: the ZeroMQ hop between ingress and worker processes."""

    heartbeat_ms: int = field(default=250, metadata=_range(10, 10_000))
    """Workers announce themselves to every ingress this often."""
    liveness: int = field(default=4, metadata=_range(2, 100))
    """A worker missing this many heartbeats in a row is taken out of the hash ring."""
    hwm: int = field(default=1000, metadata=_range(1, 1_000_000))
    """ZeroMQ high-water mark (batches) on each pipe between processes."""
    max_batch: int = field(default=256, metadata=_range(1, 65_536))
    """Messages packed into one ZeroMQ send at most."""
    max_pending: int = field(default=4096, metadata=_range(1, 1_000_000))
    """Messages an ingress holds for one worker whose pipe is full; past it it sheds."""
    flush_ms: int = field(default=1, metadata=_range(0, 50))
    """An ingress's batch to a worker, and a worker's answers to an ingress, leave this long
    after the batch's first message (at once when ``max_batch`` is full); 0: at the end of
    the event-loop iteration that gathered them. Each send wakes the receiving process's
    ZeroMQ and event-loop threads, ~50-75 µs of CPU on each side of the hop whatever the
    batch holds (docs/benchmarks.md "The hop's flush delay"), so at moderate rates waiting a
    millisecond turns many one-message sends into a few larger ones. It adds at most this
    (the event loop's timers have 1 ms steps) to each crossing, two per proxied message. A
    worker's dialog deltas (to the state plane) leave with the same flush, just before its
    answers, and so do its timer ops (to the timers process) when ``[timers] ops_flush_ms``
    is 0; with 0, at the end of each iteration."""
    retry_after_s: int = field(default=5, metadata=_range(1, 3600))
    """Retry-After of the 503 an ingress sends when no worker can take a new INVITE."""
    first_worker_wait_s: float = field(default=10.0, metadata=_range(0.0, 300.0))
    """A starting ingress binds its SIP listeners only once a worker has joined it, waiting
    this long at most (then it listens anyway, and answers new INVITEs 503 until one joins):
    at a node's start its workers come up after it, and a call it took alone would be refused.
    It stops waiting as soon as one joins. 0: bind at once (an ingress started before any
    worker, e.g. on an edge host whose workers are started later by hand)."""
    shed_start_fill: float = field(default=0.5, metadata=_range(0.0, 1.0))
    """Overload: once an ingress holds this share of ``max_pending`` for one worker, it drops
    OPTIONS, REGISTER, SUBSCRIBE, PUBLISH and MESSAGE for that worker (counted)."""
    shed_invite_fill: float = field(default=0.75, metadata=_range(0.0, 1.0))
    """Overload: from this share of ``max_pending`` on, new INVITEs get 503 with Retry-After.
    At least ``shed_start_fill``."""
    reserve_fill: float = field(default=1.25, metadata=_range(1.0, 10.0))
    """ACK, CANCEL, BYE and responses are never shed: they may queue up to this multiple of
    ``max_pending`` before anything drops."""
    address: str = ""
    """This host's IP address for the hop between hosts (``docs/architecture.md`` "Stages on
    several hosts"): an ingress here also listens for workers of other hosts at
    ``address:ingress_port``, and a worker here listens for ingresses of other hosts on a port
    the kernel picks. Needs ``[curve] secret_key_file``: the hop is CURVE only. Empty: the
    processes of this host meet over ipc only (one host)."""
    ingress_port: int = field(default=0, metadata=_range(0, 65535))
    """With ``address``: the TCP port of this host's first ingress (honcho's ``ingress.1``;
    ``ingress.N`` takes ``ingress_port + N - 1``). 0: this host's ingresses serve only
    workers of this host."""
    ingresses: list[str] = field(default_factory=list)
    """The ingresses on other hosts this host's workers serve, each ``tcp://ip:port`` (that
    host's ``address`` and an ``ingress_port``), at the ``bus_address`` of a ``[[peer]]``
    whose key must answer there. Needs ``address``. Default: none."""
    discover: bool = False
    """Learn the ingresses this host's workers serve from the state plane instead
    (``docs/architecture.md`` "Finding the edge through the state plane"): each ``[[peer]]``
    with a ``bus_address`` and a ``tcp://`` ``stateplane`` announces its live ingresses, and
    only endpoints at that peer's own ``bus_address`` are taken (at most 64 per peer).
    Needs ``address``, such a peer, and this host's state plane running. Ignored when
    ``ingresses`` is set: the list given takes precedence."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """``[proxy]``: how workers proxy requests (RFC 3261 §16)."""

    record_route: bool = True
    """Insert Record-Route on dialog-creating requests so in-dialog requests come back."""
    default_max_forwards: int = field(default=70, metadata=_range(1, 255))
    """Max-Forwards added to a request that has none (RFC 3261 §16.6 step 3)."""
    proxy_require_supported: list[str] = field(default_factory=list)
    """Option tags this proxy supports in Proxy-Require; any other gets 420 (§16.3)."""
    mode: Mode = "stateless"
    """``stateless`` forwards each message on its own (§16.11); ``stateful`` keeps RFC 3261 §17
    transactions: retransmissions absorbed, 100 Trying, CANCEL, hop-by-hop ACK, 408 on
    timeout, serial failover. Routes may override it; in-dialog requests and requests that
    name their next hop use this one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Transactions:
    """``[transactions]``: RFC 3261 §17 timers and bounds of the stateful proxy, per worker."""

    t1_ms: int = field(default=500, metadata=_range(10, 10_000))
    """T1, the round-trip estimate: retransmissions start at T1 and give up at 64*T1."""
    t2_ms: int = field(default=4000, metadata=_range(10, 60_000))
    """T2, the longest retransmission interval of non-INVITE requests and INVITE finals."""
    t4_ms: int = field(default=5000, metadata=_range(0, 60_000))
    """T4, how long a message may stay in the network (Timers I and K)."""
    timer_c_s: float = field(default=180.0, metadata=_range(1, 3600))
    """Timer C (§16.6 step 11): an INVITE branch still ringing this long is cancelled and
    answered 408 (the RFC asks for more than 3 minutes)."""
    max_transactions: int = field(default=65536, metadata=_range(16, 10_000_000))
    """Live transactions (client + server) a worker holds at most; past 7/8 of it new requests
    other than CANCEL and BYE get 503 (docs/transactions.md has the memory per transaction).
    Finished transactions waiting out their timers are held apart (``max_held``)."""
    max_held: int = field(default=262144, metadata=_range(16, 100_000_000))
    """Finished transactions a worker keeps to absorb retransmissions (Timers D, I, J, K, L, M;
    ~69 per call/s with the defaults). Past it the one nearest its end is dropped, never a
    new call refused (docs/transactions.md, "Held")."""
    max_held_bytes: int = field(default=64 * 2**20, metadata=_range(0, 2**40))
    """Bytes of final responses and ACKs the held transactions keep to send again; past it
    the held transaction nearest its end is dropped."""
    send_trying: bool = True
    """Answer 100 Trying to an INVITE at once (§16.2: the proxy's own, not forwarded); with
    ``false`` the caller retransmits until a provisional response comes from downstream."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Registrar:
    """``[registrar]``: the built-in registrar and location service (RFC 3261 §10); see
    ``docs/registrar.md``."""

    enabled: bool = False
    """Answer REGISTER for our domains and send requests for their users to the registered
    contacts. Off by default, so the default configuration stays a proxy to its static
    destination."""
    domains: list[str] = field(default_factory=list)
    """Domains (host names or addresses) we are the registrar for, compared ignoring case
    with the host of the Request-URI and of the To URI. Empty: the addresses of the
    ``[[listen]]`` tables."""
    cachedb_url: str = "local://"
    """Where bindings are kept: ``local://`` (the node's stateplane), ``redis://host:port/db``,
    ``redis-cluster://host:port[,host:port...]/`` (a Redis Cluster by its seed nodes, each
    with its port) or ``memcached://host:port`` (``docs/cachedb.md``). Use a shared server or
    cluster when other nodes must find the same registrations."""
    cachedb_slow_ms: float = field(default=100.0, metadata=_range(0, 60_000))
    """A cacheDB call slower than this logs ``cachedb_slow`` (backend, op, milliseconds and
    the Call-ID of the request that waited for it)."""
    near_cache_ttl_s: float = field(default=1.0, metadata=_range(0, 60))
    """Lookups may answer from a copy of an AOR's record this process read at most this long
    ago, so a change made through another process may be seen that late; 0 turns the near
    cache off. REGISTER always reads the shared store."""
    near_cache_max_aors: int = field(default=10_000, metadata=_range(1, 10_000_000))
    """AOR records one process keeps in its near cache at most."""
    default_expires_s: int = field(default=3600, metadata=_range(1, 604_800))
    """Expiry of a contact with neither an ``expires`` parameter nor an Expires header, or
    with a malformed one (RFC 3261 §10.2.1.1)."""
    min_expires_s: int = field(default=60, metadata=_range(1, 3600))
    """A requested expiry above 0 and below this gets 423 Interval Too Brief with
    Min-Expires (§10.3 step 7); at most 3600, since the RFC allows 423 only below an hour."""
    max_expires_s: int = field(default=86_400, metadata=_range(1, 604_800))
    """A longer requested expiry is shortened to this (§10.3 step 7)."""
    max_contacts_per_aor: int = field(default=10, metadata=_range(1, 100))
    """Live bindings one AOR may hold. A REGISTER that would raise the count above it gets
    403 and changes nothing; refreshes and removals always pass."""
    record_linger_s: int = field(default=600, metadata=_range(1, 86_400))
    """An AOR's record outlives its last binding by this long: meanwhile a request for it gets
    ``no_binding_status``, afterwards ``unknown_aor_status``."""
    unknown_aor_status: int = field(default=404, metadata=_range(400, 699))
    """Status for a request to a user of our domains with no record: 404, 410, 480 or 604."""
    no_binding_status: int = field(default=480, metadata=_range(400, 699))
    """Status for a request to an AOR that has a record but no live binding (they expired or
    were removed less than ``record_linger_s`` ago): 404, 410, 480 or 604."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Nat:
    """``[nat]``: user agents behind NAT (OpenSIPS/Kamailio nathelper); see ``docs/nat.md``.
    Requests to a registered contact always go to the address its REGISTER came from; this
    section adds Contact rewriting and keep-alives."""

    detect: list[str] = field(default_factory=lambda: [
        "private_contact", "private_via", "contact_not_source", "via_not_source"])
    """Tests that mark a message as sent from behind NAT (any one passing is enough; Kamailio
    ``nat_uac_test``): ``private_contact``, ``private_via`` (the address is in 10/8,
    172.16/12, 192.168/16, 100.64/10 or fc00::/7), ``contact_not_source`` (the Contact host,
    or for UDP host:port, is not where the message came from), ``via_not_source`` (the same
    for the top Via), ``rport`` (the top Via asks for rport, RFC 3581)."""
    fix_contact: bool = False
    """Rewrite the Contact host:port of requests and responses from a UA behind NAT to the
    address they came from, marked ``;sl-nat=<the original host:port>`` (fix_nated_contact).
    REGISTER is never rewritten."""
    ping_interval_s: float = field(default=0.0, metadata=_range(0, 3600))
    """Send each registered contact found behind NAT a keep-alive this often, the pings
    spread over the interval (nathelper ``natping``); 0 sends none. Needs ``[registrar]``."""
    ping_method: str = "options"
    """``options`` (an OPTIONS request, whose answer counts) or ``crlf`` (a CRLF CRLF on the
    registered TCP/TLS connection, RFC 5626 §3.5.1, and a 4-byte CRLF CRLF datagram on UDP)."""
    ping_max_per_tick: int = field(default=200, metadata=_range(1, 100_000))
    """Keep-alives one worker sends at most per 0.1 s; the rest wait for the next tick."""
    max_pinged_contacts: int = field(default=20_000, metadata=_range(1, 1_000_000))
    """Contacts one worker keeps pinging at most; further NATed registrations are not pinged
    (counted as ``nat_ping_table_full``)."""
    ping_drop_after: int = field(default=0, metadata=_range(0, 100))
    """With ``options``: a binding whose contact leaves this many OPTIONS in a row unanswered
    (each waits one interval) is removed from the location service; 0 never removes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dns:
    """``[dns]``: how workers resolve host names in destinations and Routes (RFC 3263: SRV,
    then A/AAAA), and how long they remember answers (``docs/dns.md``)."""

    nameservers: list[str] = field(default_factory=list)
    """Nameservers asked in turn, ``"ip"`` or ``"ip:port"`` (``"[v6]:port"``); empty reads
    ``/etc/resolv.conf`` at start-up."""
    timeout_s: float = field(default=2.0, metadata=_range(0.05, 30))
    """Bound on one resolution, all its queries included; the request then fails over or
    gets 503."""
    attempt_timeout_s: float = field(default=0.5, metadata=_range(0.01, 30))
    """Wait for one nameserver before asking the next (or the same one again)."""
    slow_ms: float = field(default=100.0, metadata=_range(0, 60_000))
    """A query slower than this logs ``dns_slow`` with the name, type and milliseconds."""
    cache_size: int = field(default=10_000, metadata=_range(16, 10_000_000))
    """Cached answers (name and type) per worker at most; least recently used go first."""
    max_ttl_s: float = field(default=3600.0, metadata=_range(1, 86_400))
    """Ceiling on how long a positive answer is kept, whatever its TTL."""
    negative_ttl_s: float = field(default=60.0, metadata=_range(0, 86_400))
    """How long "no such name" is kept (and the cap of an SOA's negative TTL)."""
    naptr: bool = False
    """Ask NAPTR first for a name with neither port nor transport (RFC 3263 §4.1), taking
    transports in the records' order; off by default, like Kamailio's ``dns_try_naptr``: one
    more query per name, and most SIP domains publish SRV alone."""


#: OpenSIPS and Kamailio both default a dialog's lifetime to 12 hours (``default_timeout``)
DEFAULT_DIALOG_LIFETIME_S = 43_200.0
#: longer than Timer C (180 s) plus a cancelled branch's 64*T1, so the proxy's own 408 or 487
#: always ends an unanswered call first and this is only a safety net
DEFAULT_EARLY_LIFETIME_S = 300.0
#: a worker's timer ops wait this long to leave together (``Timers.ops_flush_ms``): the
#: timers it arms are dialog lifetimes (at least a second), so 50 ms costs their deadlines
#: nothing while a busy worker sends a message per 50 ms instead of one per loop iteration
#: (10 ms before: the timers process took 36 µs of CPU per call at 500 calls/s, 22 with 50,
#: docs/benchmarks.md "Sixth sitting")
DEFAULT_TIMER_OPS_FLUSH_MS = 50
#: a written CDR waits this long for its fsync at most (workers/dialogs/cdr.py): one fsync per 20 ms
#: whatever the call rate, and a host crash loses at most 20 ms of CDRs
DEFAULT_CDR_FSYNC_MS = 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialogs:
    """``[dialogs]``: dialog tracking (RFC 3261 §12) of calls forwarded statefully: lifetimes,
    CDRs, the bound on live dialogs (``docs/dialogs.md``)."""

    enabled: bool = False
    """Track a dialog for every initial INVITE a stateful route forwards: early and confirmed
    states, in-dialog matching, lifetime expiry with BYE both ways, one CDR per call, profiles
    and call limits. Needs ``[proxy] record_route`` so in-dialog requests come back."""
    default_lifetime_s: float = field(
        default=DEFAULT_DIALOG_LIFETIME_S, metadata=_range(1, 604_800)
    )
    """How long a confirmed dialog lives without a Session-Expires refresh (RFC 4028) before
    the proxy sends BYE to both sides; a route's ``dialog_lifetime_s`` overrides it."""
    early_lifetime_s: float = field(
        default=DEFAULT_EARLY_LIFETIME_S, metadata=_range(1, 86_400)
    )
    """A dialog still unanswered this long is dropped (no BYE: there is no confirmed dialog to
    end) with cause ``expired``. More than ``[transactions] timer_c_s``."""
    cdr_file: str = ""
    """File CDRs are appended to, one JSON object per line; empty writes them to the log only
    (``cdr`` events; ``cdr_log`` says which go to the log as well). Each worker writes the CDRs of a loop
    iteration at its end, reopens the file when it is renamed or deleted (logrotate) or on
    SIGHUP, and creates it ``0640`` (``cdr_group``), ``0600`` without a group."""
    cdr_log: Literal["unwritten", "all"] = "unwritten"
    """Which CDRs are logged as ``cdr`` events on stdout too: ``unwritten``, those not in the
    CDR file (every one without ``cdr_file``; with one, a CDR its buffer refused or could not
    encode, and the CDRs of a loop iteration whose write failed, which wait in memory only);
    ``all``, every one (the behaviour before this key: one more JSON line per call through
    the log relay, ~80-100 µs of CPU per call, ``docs/benchmarks.md``). To follow calls,
    ``tail -F`` the CDR file: the same JSON objects, one per line."""
    cdr_fsync_ms: int = field(default=DEFAULT_CDR_FSYNC_MS, metadata=_range(0, 10_000))
    """A CDR line is durable (fsync'd) at most this long after it was written; 0: each
    batch is fsync'd as it is written. A host crash loses at most this window of CDRs; a
    crashed process loses none (``docs/dialogs.md`` "CDRs")."""
    cdr_group: str = ""
    """The group (name or number) that may read the CDR file (it is created ``0640``, that
    group's); empty: ``[node] run_group`` if set, else the owner only (``0600``)."""
    cdr_peer_files: list[str] = field(default_factory=list)
    """CDR files of the ``[stateplane] peers`` nodes that this node can read (the same host,
    or a shared mount), absolute paths: before a dialog taken over from a dead peer is made
    ours, the end of these files is read, and a dialog whose CDR the peer wrote just before
    dying is dropped instead of getting a second one. Our own ``cdr_file`` may be listed (it
    is read anyway), so both nodes of a pair can carry the same list. Empty: only our own
    file is read."""
    max_dialogs: int = field(default=1_000_000, metadata=_range(1, 100_000_000))
    """Live dialogs one worker holds at most; past it a new call gets 503 before forwarding."""
    profiles_cluster: bool = False
    """Profile limits count the live dialogs of the ``[stateplane] peers`` nodes too (their
    workers and ours exchange counts; with a ``tcp://`` peer through the state planes' relay,
    over CURVE), so a trunk limit holds across the cluster. Off, a limit holds for this node
    (its workers always share counts)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogProfile:
    """``[[dialog_profile]]``: a named group of live dialogs, counted as a whole or per value
    (OpenSIPS ``create_dialog_profiles``), with an optional call limit. Needs ``[dialogs]
    enabled``."""

    name: str
    """Name shown in statistics and ``sipline ctl``; unique. Required."""
    with_value: bool = False
    """Count dialogs per value (for example per caller) instead of as one group."""
    value_from: Literal["", "ruri_user", "from_user", "to_user", "source_ip", "route"] = ""
    """What gives a dialog its value, from the initial INVITE: the user part of the
    Request-URI, of the From or of the To URI, the source address, or the name of the route
    that forwarded it. Required with ``with_value``, empty without. A dialog whose value
    would be empty (no user part) is not counted in the profile."""
    limit: int = field(default=0, metadata=_range(0, 100_000_000))
    """Dialogs the profile (or each value of it) may hold; a new call that would go over is
    answered ``over_limit_status`` before it is forwarded. 0: no limit."""
    over_limit_status: int = field(default=486, metadata=_range(486, 503))
    """Status of a call refused by ``limit``: 486 (Busy Here) or 503 (Service Unavailable)."""
    routes: list[str] = field(default_factory=list)
    """Names of the ``[[route]]`` tables whose calls join the profile; empty: every route."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    """``[log]``: the JSON lines every process writes to stdout."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    stats_interval_s: float = field(default=5.0, metadata=_range(0.1, 3600))
    """Every process logs ``load_stats`` this often."""
    slow_message_ms: float = field(default=50.0, metadata=_range(0, 60_000))
    """A message a worker takes longer than this to handle is logged as ``slow_message`` with
    its Call-ID, method, handling time and time queued since the ingress got it; 0 turns it
    off. DNS and cacheDB calls have their own thresholds (``[dns] slow_ms``)."""
    rejected_interval_s: float = field(default=10.0, metadata=_range(0.1, 3600))
    """Refused input (malformed messages, TCP connections closed or refused) is counted per
    source address and logged as one ``rejected`` line per source this often, never one line
    per message: a peer must not decide how much we log (``docs/security.md``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """``[timers]``: the timer service (``sipline timers``) that holds long timers (dialog
    lifetimes, registration expiries, ban and profile TTLs) and fires them to their owners."""

    max_batch: int = field(default=1000, metadata=_range(1, 1_000_000))
    """Timers fired per wake-up at most while lateness is low (OpenSIPS ``timer_bulk_del_no``);
    the rest wait for the next loop iteration, so arms and cancels are never starved."""
    max_batch_cap: int = field(default=16_000, metadata=_range(1, 1_000_000))
    """Widest batch the service widens to when lateness grows; a cap below ``max_batch`` is
    taken as ``max_batch`` (no widening)."""
    late_threshold_ms: float = field(default=20.0, metadata=_range(0.1, 60_000))
    """When the p99 lateness of the last second is above this, or a wake-up left due timers
    behind, the service widens its batches and coalesces near deadlines (and logs
    ``timers_adapted``); a quarter of it for three seconds running narrows them back."""
    max_coalesce_ms: float = field(default=10.0, metadata=_range(0, 10_000))
    """Longest the service delays a wake-up so that near deadlines fire together, when
    adapting; 0 never coalesces. Timers never fire early."""
    ops_flush_ms: int = field(default=DEFAULT_TIMER_OPS_FLUSH_MS, metadata=_range(0, 100))
    """A worker's arms and cancels leave for the timer service this long after the first of
    them (one message per timers process, an arm and a cancel of one key in it folded into
    the last); 0: with the worker's ``[bus] flush_ms`` flush (at the end of the event-loop
    iteration that made them when that is 0 too). Each message wakes
    the worker's ZeroMQ thread and the service's, whatever it holds (``docs/benchmarks.md``
    "State plane, timers and log volume per call"). A timer fires at its deadline however
    late its arm left; a worker that dies meanwhile loses nothing the state plane's mirror
    does not re-arm (``docs/timers.md``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Pike:
    """``[pike]``: flood detection per source address in every ingress (OpenSIPS ``pike``); see
    ``docs/protection.md``."""

    enabled: bool = False
    """Count requests per source and drop those of a source over the density, before they are
    parsed. Off by default, so a load test from one address is not taken for a flood."""
    sampling_time_unit_s: float = field(default=2.0, metadata=_range(0.1, 3600))
    """Length of the sampling window in which a source's requests are counted."""
    reqs_density_per_unit: int = field(default=30, metadata=_range(1, 10_000_000))
    """A source sending more requests than this in one window is blocked. Every request
    counts (ACK, CANCEL and BYE too), responses never."""
    remove_latency_s: float = field(default=120.0, metadata=_range(1, 86_400))
    """How long a blocked source stays blocked; every ingress of the node drops its packets
    meanwhile."""
    whitelist: list[str] = field(default_factory=list)
    """Addresses or CIDRs (``10.0.0.0/8``, ``2001:db8::1``) never blocked: trunks and load
    balancers that legitimately send more."""
    max_sources: int = field(default=100_000, metadata=_range(16, 10_000_000))
    """Sources one ingress counts at once (about 200 bytes each), and blocks it holds at most.
    When full, a new source evicts the one whose window opened first (its partial count is
    forgotten), and a new block lifts the oldest one."""
    cluster: bool = False
    """Also share blocks with the nodes in ``[stateplane] peers``: every ingress subscribes to
    the ingresses of those nodes (found in their run directories; a ``tcp://`` peer's through
    the state planes' relay, over CURVE), and applies their blocks as its siblings' (a block
    learnt is never passed on). Needs ``enabled`` and at least one peer; ``[dialogs]`` is
    not needed. Set it on every node, each listing the
    others: a node learns the blocks of the nodes it lists."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatePlane:
    """``[stateplane]``: dialog replication between nodes (``docs/stateplane.md``). With
    ``[dialogs] enabled`` the workers hand every dialog change to the node's state plane,
    whose mirror moves dialogs between workers when the worker set changes
    (``docs/dialogs.md`` "Dialogs follow their Call-ID") and which publishes them to the
    state planes of the nodes that list this one in their ``peers``; it keeps a replica of
    the nodes this one lists."""

    replicate: bool = False
    """No longer needed: with ``[dialogs] enabled`` the workers always hand their dialog
    deltas to the state plane, which mirrors them and publishes them on
    ``stateplane-pub.ipc`` (snapshots on ``stateplane-snap.ipc``) in the run directory, and
    on ``bind`` if set; without a mirror a change of the worker set would lose CDRs, so there
    is no opt-out and ``false`` changes nothing. Kept so older files load: ``true`` still
    needs ``[dialogs] enabled``."""
    peers: list[str] = field(default_factory=list)
    """The other nodes whose dialogs this node replicates, and with which ``[pike] cluster``,
    ``[dialogs] profiles_cluster`` and ``shared`` ratelimit pipes share: each a run directory
    of a node on this host (it subscribes to the ``stateplane-pub.ipc`` and snapshots from
    the ``stateplane-snap.ipc`` in it; absolute, each once, never this node's own) or
    ``tcp://host:port`` of a node on another host (that node's ``bind``; sharing with it
    needs ``[curve]`` and its ``[[peer]]`` key, ``docs/security.md``). Default: none."""
    heartbeat_ms: int = field(default=250, metadata=_range(10, 10_000))
    """Interval of the heartbeats (``HUGZ``) the state plane publishes, updates or not; a
    replica reports its peer silent after two of them without a word."""
    backlog: int = field(default=16_384, metadata=_range(16, 10_000_000))
    """Updates kept for replay: a replica that missed fewer than this gets them again instead
    of a whole snapshot."""
    bind: str = ""
    """``host:port`` (an IP address, ``[v6]:port`` for IPv6) where the state plane also
    publishes (PUB on the port) and serves snapshots (ROUTER on the next port) over TCP, for
    peers on other hosts, which name it ``tcp://host:port`` in their ``peers``; with ``[pike]
    cluster``, ``[dialogs] profiles_cluster`` or a ``shared`` pipe and a ``tcp://`` peer it
    relays them on port + 2, and with ``cluster_ctl`` serves ``ctl --cluster`` on port + 3.
    With ``[bus] ingress_port`` it also announces this host's ingresses there to worker hosts
    with ``[bus] discover``.
    Empty: ipc only. With ``[curve] secret_key_file`` only the ``[[peer]]`` keys get in and
    the channel is encrypted; without it, bind a private interface (a wildcard address is
    refused)."""
    persist_dir: str = ""
    """Directory where the state plane keeps on disk the ``local://`` store's keys (a
    snapshot plus a journal of every write's result, ``docs/cachedb.md`` "Persistence"), and
    with ``[dialogs] enabled`` the node's dialogs (``docs/stateplane.md`` "Persistence"), so a state
    plane or a node restarted comes back with its registrations and calls. Empty: nothing on
    disk."""
    snapshot_every: int = field(default=100_000, metadata=_range(100, 100_000_000))
    """Journal entries after which a new snapshot is written and the journal started again."""
    cluster_ctl: bool = False
    """Answer the read-only views of ``sipline ctl ... --cluster`` (stats, destinations,
    dialogs, pike, ratelimit) asked by the ``[[peer]]`` nodes, on ``bind`` port + 3 over
    CURVE (``docs/monitoring.md``). Needs ``bind`` and ``[curve]``."""
    role: Literal["", "primary", "backup", "member"] = ""
    """This node's place in an active/backup pair (Binary Star, ``docs/failover.md``): the
    primary is active when both start, the backup takes over the virtual listeners and the
    replicated calls when the primary's heartbeats stop for two intervals. Needs
    ``[dialogs] enabled`` and exactly one entry in ``peers`` (the other node of the pair).
    ``"member"``: one node of a cluster of three or more (``members``), where a majority
    decides who takes a dead node's calls (``docs/failover.md`` "Three nodes or more").
    Empty: no failover; the node serves on its own."""
    members: list[str] = field(default_factory=list)
    """With ``role = "member"``: every node of the cluster by ``[node] name``, this one
    included, in the same order on every node (a dead node's calls go to the first live one
    after it). 3 to 32 names; each other one is a ``[[peer]]`` with ``stateplane`` set."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """``[curve]``: this node's ZeroMQ CURVE key pair, which authenticates and encrypts the
    TCP channels between nodes (``docs/security.md``): the state plane's ``bind`` and its
    ``tcp://`` peers, the cluster meshes it relays and ``ctl --cluster``. ipc channels stay
    without keys."""

    secret_key_file: str = ""
    """The secret key file ``sipline keygen`` wrote for this node (``<name>.key_secret``,
    mode 0600, holding both keys). Set: the state plane's TCP endpoints admit only the
    ``[[peer]]`` public keys, and each ``tcp://`` peer is reached by its key. Empty: no
    CURVE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """``[[peer]]``: another node this node trusts, by name and key (``docs/security.md``).
    Repeat the table per node."""

    name: str
    """That node's ``[node] name``: the name its updates and heartbeats must carry, and the
    ZAP identity of its key. Required."""
    stateplane: str = ""
    """Which entry of ``[stateplane] peers`` is this node (its run directory or
    ``tcp://host:port``), written the same way. Empty: the node is only trusted by key."""
    public_key: str = ""
    """Its CURVE public key: 40 Z85 characters (``sipline keygen`` prints it)."""
    public_key_file: str = ""
    """Or its public key file (the ``<name>.key`` that ``sipline keygen`` wrote on it)."""
    virtual: list[str] = field(default_factory=list)
    """With ``[stateplane] role = "member"``: that node's own virtual addresses, which this
    node holds only after taking its calls over (each one a ``[[listen]]`` with ``virtual``
    and ``standby`` here)."""
    bus_address: str = ""
    """That host's ``[bus] address``, when its ingresses or workers join ours over TCP: its
    key is then let in on our bus sockets, and what we connect to at this address must
    present it. Empty: the peer has no part in the bus."""


#: a Retry-After a little random, so that refused clients do not all come back at once
RATELIMIT_JITTER = 0.2
#: how often a shared pipe's participants exchange counts: OpenSIPS replicates pipes every
#: 10-100 ms; a shared pipe's error is about what the cluster passes in one interval
RATELIMIT_SHARE_INTERVAL_S = 0.1
#: a shared pipe's window holds at least this many exchanges, or the counts are always stale
RATELIMIT_SHARE_MIN_INTERVALS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimit:
    """``[[ratelimit]]``: a pipe, a limit on the rate of initial requests the workers forward
    (OpenSIPS ``ratelimit``); a request over it gets 503 with Retry-After. Repeat the table per
    pipe; a request passes through every pipe it matches. See ``docs/protection.md``."""

    name: str
    """Name shown by ``sipline ctl ratelimit`` and in logs; unique. Required."""
    algorithm: Literal["taildrop", "red", "sliding", "feedback"] = "taildrop"
    """``taildrop``: at most ``limit_per_s`` x ``window_s`` per fixed window. ``red``: past
    ``limit_per_s`` in a window, requests are dropped with a probability rising linearly to 1
    at twice the limit. ``sliding``: at most the limit over a window sliding in tenths.
    ``feedback``: ``sliding`` with the limit scaled down as the worker's busy ratio rises
    past 0.7."""
    limit_per_s: float = field(default=100.0, metadata=_range(0.001, 10_000_000))
    """Requests per second the pipe lets through (for ``red``, where dropping starts)."""
    window_s: float = field(default=1.0, metadata=_range(0.01, 3600))
    """Window the rate is counted over; ``limit_per_s`` x ``window_s`` must be at least 1."""
    methods: list[str] = field(default_factory=list)
    """Methods counted, upper case; empty counts every initial request."""
    source: str = ""
    """Address or CIDR the source address must be in; empty matches every source."""
    route: str = ""
    """Name of the ``[[route]]`` that must have picked the request; empty matches all."""
    retry_after_s: int = field(default=5, metadata=_range(1, 3600))
    """Retry-After of the 503, jittered by up to 20 % either way (at least 1 s)."""
    shared: bool = False
    """Hold the limit across every worker of the node and of the ``[stateplane] peers`` nodes
    instead of per worker: each publishes its count every 0.1 s and passes only what the
    limit leaves after the others' last counts (``docs/protection.md``). Configure the pipe
    alike (name, algorithm, limit, window) on every node that shares it; its ``window_s`` is
    at least 0.5 (five exchanges)."""


#: how long a nonce is good for: OpenSIPS' nonce_expire default; a client refreshing later
#: is told stale=true and answers the fresh nonce without asking its user
AUTH_NONCE_LIFETIME_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRealm:
    """``[[auth_realm]]``: one realm, the users it knows and where their HA1 values are
    (``docs/auth.md``). Repeat the table per realm."""

    realm: str
    """Realm named in challenges and credentials (``example.com``): letters, digits and
    ``.-_@:``. Required."""
    domains: list[str] = field(default_factory=list)
    """Hosts (compared ignoring case) whose requests this realm challenges: the To host of a
    REGISTER, the From host of other requests. Empty: the realm itself. A request whose host
    no realm lists is challenged by the first realm."""
    credentials_file: str = ""
    """Absolute path of a file of ``username algorithm ha1`` lines (``sipline auth-ha1``
    prints one), read when workers start and on reload. Empty: none."""
    cachedb_url: str = ""
    """A cacheDB (``docs/cachedb.md``) holding ``<cachedb_prefix><realm>:<algorithm>:<user>``
    = HA1 hex, asked when the file has no line for the user. Empty: none."""
    cachedb_prefix: str = "ha1:"
    """Prefix of the keys in ``cachedb_url``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """``[auth]``: Digest authentication (RFC 3261 §22, RFC 7616): 401 for REGISTER, 407 for
    initial requests from sources that are not ``[[trusted]]``, in the realms of the
    ``[[auth_realm]]`` tables (``docs/auth.md``)."""

    enabled: bool = False
    """Challenge requests as the keys below say. Off by default."""
    nonce_secret_file: str = ""
    """Absolute path of a file holding the secret (at least 16 bytes) nonces are signed with.
    Required when ``enabled``; keep it mode 0600."""
    nonce_lifetime_s: float = field(default=AUTH_NONCE_LIFETIME_S, metadata=_range(1, 86_400))
    """A nonce older than this is stale: the client gets a fresh one with ``stale=true``."""
    algorithms: list[str] = field(default_factory=lambda: ["SHA-256", "MD5"])
    """Algorithms offered, one challenge header each, most preferred first (RFC 8760):
    ``SHA-256``, ``MD5``."""
    register: bool = True
    """Challenge REGISTER requests with 401 and WWW-Authenticate."""
    proxy: bool = True
    """Challenge initial requests (and in-dialog requests that do not follow our Record-Route)
    from sources no ``[[trusted]]`` table matches with 407 and Proxy-Authenticate; never ACK
    or CANCEL."""
    methods: list[str] = field(default_factory=list)
    """Methods ``proxy`` challenges, upper case; empty: every method but REGISTER, ACK and
    CANCEL."""
    check_uri: bool = True
    """Answer 400 to credentials whose ``uri`` is not the Request-URI (RFC 7616 §3.4.6), so
    that a Request-URI changed on the way cannot reuse them. Turn off behind a proxy that
    rewrites the Request-URI before us."""
    match_user: bool = True
    """Answer 403 to credentials whose username is not the user of the To URI of a REGISTER or
    of the From URI of another request (Kamailio ``auth_check`` flag 1), so that one user
    cannot register or call as another."""
    consume_credentials: bool = True
    """Remove the credentials we checked before forwarding the request (OpenSIPS
    ``consume_credentials``); credentials for other realms pass."""
    max_nonces: int = field(default=20_000, metadata=_range(16, 10_000_000))
    """Nonces whose used nonce-counts one worker remembers. Past it the least recently first
    used is forgotten, and its clients are told ``stale=true``."""
    cachedb_cache_s: float = field(default=5.0, metadata=_range(0, 3600))
    """How long a worker keeps an HA1 (or its absence) read from an ``[[auth_realm]] cachedb_url``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The whole file: every section is optional and defaults as documented."""

    node: Node = field(default_factory=Node)
    """Node identity, and the directory its processes meet in."""
    # the default listens where docs/design.md §2 promises: 127.0.0.1:5060, UDP and TCP
    listen: list[Listener] = field(
        default_factory=lambda: [Listener(transport="udp"), Listener(transport="tcp")]
    )
    """Sockets to listen on; at least one. Default: UDP and TCP on 127.0.0.1:5060."""
    tcp: Tcp = field(default_factory=Tcp)
    """Limits that protect an ingress from TCP peers."""
    tls: Tls = field(default_factory=Tls)
    """TLS handshakes, and the certificates of connections we open."""
    bus: Bus = field(default_factory=Bus)
    """The ZeroMQ hop between ingress and worker processes."""
    proxy: Proxy = field(default_factory=Proxy)
    """How workers proxy requests."""
    transactions: Transactions = field(default_factory=Transactions)
    """Transaction timers and bounds of the stateful proxy."""
    dns: Dns = field(default_factory=Dns)
    """Host name resolution of the stateful proxy."""
    destination_set: list[DestinationSet] = field(default_factory=list)
    """Named groups of next hops that routes send to. Default: none."""
    route: list[Route] = field(default_factory=list)
    """Routing rules, tried in order. Default: none."""
    trusted: list[Trusted] = field(default_factory=list)
    """Sources trusted to name their own next hop. Default: none."""
    prefix_table: list[PrefixTable] = field(default_factory=list)
    """Longest-prefix routing tables that routes send to. Default: none."""
    auth: Auth = field(default_factory=Auth)
    """Digest authentication of REGISTER and initial requests."""
    auth_realm: list[AuthRealm] = field(default_factory=list)
    """Realms of digest authentication and their credentials; at least one with ``[auth]
    enabled``. Default: none."""
    registrar: Registrar = field(default_factory=Registrar)
    """The built-in registrar and location service."""
    nat: Nat = field(default_factory=Nat)
    """User agents behind NAT: Contact rewriting and keep-alives."""
    log: Log = field(default_factory=Log)
    """What every process logs."""
    timers: Timers = field(default_factory=Timers)
    """The timer service and its clients."""
    dialogs: Dialogs = field(default_factory=Dialogs)
    """Dialog tracking, lifetimes and CDRs."""
    dialog_profile: list[DialogProfile] = field(default_factory=list)
    """Dialog profiles and their call limits. Default: none."""
    pike: Pike = field(default_factory=Pike)
    """Flood detection per source in the ingress."""
    ratelimit: list[RateLimit] = field(default_factory=list)
    """Rate limit pipes of the workers. Default: none."""
    stateplane: StatePlane = field(default_factory=StatePlane)
    """Dialog replication between nodes."""
    curve: Curve = field(default_factory=Curve)
    """This node's key pair for the TCP channels between nodes."""
    peer: list[Peer] = field(default_factory=list)
    """The other nodes this node trusts, by name and key. Default: none."""
    source: str = "<defaults>"
    """The file these settings came from (not a TOML key)."""
