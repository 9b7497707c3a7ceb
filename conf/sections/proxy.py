"""``[proxy]`` and ``[transactions]``: how workers proxy requests, and the RFC 3261 §17 timers
and bounds of the stateful proxy. Checked beyond their types in ``conf/checks/routing.py``
(option tags) and ``conf/checks/dialogs.py`` (Timer C against dialog lifetimes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range

Mode = Literal["stateless", "stateful"]


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
