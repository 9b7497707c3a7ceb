"""``[bus]``: the ZeroMQ hop between ingress and worker processes, on one host or between
hosts. Checked beyond its types in ``conf/checks/bus.py`` and ``conf/bustcp.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.fields import _range


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
