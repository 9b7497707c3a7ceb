"""``[[listen]]``, ``[tcp]`` and ``[tls]``: the sockets every ingress binds and the limits that
protect it from TCP and TLS peers. Checked beyond their types in ``conf/checks/listen.py`` (TLS
files: ``conf/checks/tls.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range

Transport = Literal["udp", "tcp", "tls"]
VerifyClient = Literal["none", "optional", "require"]


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
