"""``[auth]`` and ``[[auth_realm]]``: Digest authentication and where the HA1 values are.
Checked beyond their types in ``conf/checks/auth.py``."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.fields import _range

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
