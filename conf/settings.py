"""Configuration every sipline process agrees on, as frozen dataclasses.

Each field's docstring is what ``docs/configuration.md`` says of it; units are in the names.
``conf.load`` builds these from TOML and refuses unknown keys and out-of-range values, naming
the file, the key, what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Transport = Literal["udp", "tcp"]


def _range(lo: float, hi: float) -> dict[str, float]:
    return {"min": lo, "max": hi}


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str = "sipline"
    """Node name: in every log line, and the key of this node's state for its peers."""
    run_dir: str = "/tmp/sipline"
    """Directory of the node's ZeroMQ ipc:// sockets; processes of one node share it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    transport: Transport
    """``udp`` or ``tcp``."""
    address: str = "127.0.0.1"
    """IPv4 or IPv6 address to bind."""
    port: int = field(default=5060, metadata=_range(1, 65535))
    """Port to bind; every ingress process binds it with SO_REUSEPORT."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Tcp:
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
    """Connections one ingress process holds at most; beyond it new ones are refused."""
    max_connections_per_ip: int = field(default=256, metadata=_range(1, 1_000_000))
    """Inbound connections one source address may hold in one ingress process."""
    write_queue_bytes: int = field(default=262_144, metadata=_range(4096, 64 << 20))
    """Bytes queued for a connection that is not draining; past it a send fails."""
    connect_timeout_ms: int = field(default=3000, metadata=_range(10, 120_000))
    """Outbound connect attempts give up after this long; queued sends fail."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bus:
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
    retry_after_s: int = field(default=5, metadata=_range(1, 3600))
    """Retry-After of the 503 an ingress sends when no worker can take a new INVITE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    record_route: bool = True
    """Insert Record-Route on dialog-creating requests so in-dialog requests come back."""
    default_max_forwards: int = field(default=70, metadata=_range(1, 255))
    """Max-Forwards added to a request that has none (RFC 3261 §16.6 step 3)."""
    proxy_require_supported: list[str] = field(default_factory=list)
    """Option tags this proxy supports in Proxy-Require; any other gets 420 (§16.3)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DestinationSet:
    name: str
    """Name that routes refer to."""
    destinations: list[str]
    """SIP URIs of the next hops, e.g. ``sip:10.0.0.1:5060;transport=tcp``."""
    algorithm: Literal["round_robin", "weighted", "hash_call_id"] = "hash_call_id"
    """How a destination is picked: in turn, by weight, or by a hash of the Call-ID."""
    weights: list[int] = field(default_factory=list)
    """Weights for ``weighted``, one per destination (default all 1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    """Name shown in logs."""
    to: str
    """Destination set the matching requests go to."""
    methods: list[str] = field(default_factory=list)
    """Methods matched (upper case); empty matches every method."""
    ruri_user: str = ""
    """Regular expression the Request-URI user must match in full; empty matches all."""
    ruri_host: str = ""
    """Regular expression the Request-URI host must match in full; empty matches all."""
    source: str = ""
    """CIDR the source address must be in; empty matches every source."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Log:
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""
    stats_interval_s: float = field(default=5.0, metadata=_range(0.1, 3600))
    """Every process logs ``load_stats`` this often."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    node: Node = field(default_factory=Node)
    listen: list[Listener] = field(
        default_factory=lambda: [Listener(transport="udp"), Listener(transport="tcp")]
    )
    tcp: Tcp = field(default_factory=Tcp)
    bus: Bus = field(default_factory=Bus)
    proxy: Proxy = field(default_factory=Proxy)
    destination_set: list[DestinationSet] = field(default_factory=list)
    route: list[Route] = field(default_factory=list)
    log: Log = field(default_factory=Log)
    source: str = "<defaults>"
    """The file these settings came from (not a TOML key)."""
