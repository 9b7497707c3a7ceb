"""``[registrar]`` and ``[nat]``: the built-in registrar and location service, its cacheDB, and
user agents behind NAT. Checked beyond their types in ``conf/checks/registrar.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.fields import _range


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
