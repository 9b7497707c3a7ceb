"""``[dns]``: host name resolution of the stateful proxy (RFC 3263) and its cache."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.fields import _range


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
