"""``[pike]`` and ``[[ratelimit]]``: flood detection per source in the ingress, and the
workers' rate limit pipes (``docs/protection.md``). Checked beyond their types in
``conf/checks/protection.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range


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
