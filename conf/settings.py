"""Configuration every sipline process agrees on, as frozen dataclasses.

Rules:

- One dataclass per TOML table; a field is a key, and its name carries its unit (``_ms``,
  ``_s``, ``_bytes``).
- Each class and field docstring is what ``docs/configuration.md`` says of it
  (``tests/conf/test_docs.py`` fails when the two drift apart). Numeric ranges live in the
  field metadata (``min``/``max``), where the loader and the docs both read them.
- ``conf.load`` builds these from TOML and refuses unknown keys, wrong types and out-of-range
  values, naming the file, the key, what was expected and what was found. Checks that span
  fields (names resolve, addresses parse) are in ``conf/checks/``, called in order by
  ``conf.load._check_values``.
- Each section's dataclasses live in the ``conf/sections/`` module named for what it owns
  (``conf/sections/__init__.py`` has the list); this module gathers them into ``Settings``
  and re-exports them, so ``from conf.settings import Route`` is the one way to import one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.auth import AUTH_NONCE_LIFETIME_S, Auth, AuthRealm
from conf.sections.bus import Bus
from conf.sections.dialogs import (
    DEFAULT_CDR_FSYNC_MS,
    DEFAULT_DIALOG_LIFETIME_S,
    DEFAULT_EARLY_LIFETIME_S,
    DialogProfile,
    Dialogs,
)
from conf.sections.dns import Dns
from conf.sections.listen import Listener, Tcp, Tls, Transport, VerifyClient
from conf.sections.log import Log
from conf.sections.node import Curve, Node, Peer
from conf.sections.protection import (
    RATELIMIT_JITTER,
    RATELIMIT_SHARE_INTERVAL_S,
    RATELIMIT_SHARE_MIN_INTERVALS,
    Pike,
    RateLimit,
)
from conf.sections.proxy import Mode, Proxy, Transactions
from conf.sections.registrar import Nat, Registrar
from conf.sections.routing import (
    DestinationSet,
    HeaderEdit,
    HeaderMatch,
    PrefixTable,
    Route,
    Trusted,
)
from conf.sections.stateplane import StatePlane
from conf.sections.timers import DEFAULT_TIMER_OPS_FLUSH_MS, Timers

__all__ = [
    "AUTH_NONCE_LIFETIME_S",
    "DEFAULT_CDR_FSYNC_MS",
    "DEFAULT_DIALOG_LIFETIME_S",
    "DEFAULT_EARLY_LIFETIME_S",
    "DEFAULT_TIMER_OPS_FLUSH_MS",
    "RATELIMIT_JITTER",
    "RATELIMIT_SHARE_INTERVAL_S",
    "RATELIMIT_SHARE_MIN_INTERVALS",
    "Auth",
    "AuthRealm",
    "Bus",
    "Curve",
    "DestinationSet",
    "DialogProfile",
    "Dialogs",
    "Dns",
    "HeaderEdit",
    "HeaderMatch",
    "Listener",
    "Log",
    "Mode",
    "Nat",
    "Node",
    "Peer",
    "Pike",
    "PrefixTable",
    "Proxy",
    "RateLimit",
    "Registrar",
    "Route",
    "Settings",
    "StatePlane",
    "Tcp",
    "Timers",
    "Tls",
    "Transactions",
    "Transport",
    "Trusted",
    "VerifyClient",
]


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
