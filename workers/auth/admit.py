"""The worker's side of authentication: the gate's verdicts as SIP errors and edits.

Rules:
1. ``admit`` is called by ``StatelessProxy.plan`` (both modes go through it) after the
   §16.3 checks and the relay check, and before the rate-limit pipes: a request that does not
   authenticate is answered 401/407/400 statelessly like any refusal, and never counts
   against a pipe nor reaches a destination.
2. A verified request returns the edit that removes its credentials line when
   ``consume_credentials`` is set (else None): credentials for other realms pass untouched.
3. Only the credentials files are asked here (a dict get); a realm's cacheDB is asked by
   ``lookup_async`` from the worker's job path, the HA1 then given to ``admit`` as
   ``ha1``.
"""

from __future__ import annotations

from conf import credfile
from conf.settings import Settings
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.serialize import Edit
from workers.auth.gate import AuthGate, Challenge, Pending, Refusal, Verified
from workers.auth.store import CredentialStore


class Unauthorized(SipError):
    """401 with WWW-Authenticate (RFC 3261 §22.2)."""

    status = 401
    reason = "Unauthorized"


class ProxyAuthRequired(SipError):
    """407 with Proxy-Authenticate (RFC 3261 §22.3)."""

    status = 407
    reason = "Proxy Authentication Required"


class BadCredentials(SipError):
    """400: a credentials header we cannot read (``workers/auth/gate.py`` rule 3)."""

    status = 400
    reason = "Bad Request"


class Authenticator:
    __slots__ = ("gate", "store")

    def __init__(self, settings: Settings, issuer: str, now: float,
                 store: CredentialStore | None = None) -> None:  # fmt: skip
        a = settings.auth
        secret = credfile.load_secret(a.nonce_secret_file)
        self.gate = AuthGate(a, settings.auth_realm, secret, issuer, now)
        self.store = store or CredentialStore(settings.auth_realm, a.cachedb_cache_s)

    @classmethod
    def from_settings(cls, settings: Settings, issuer: str, now: float) -> Authenticator | None:
        return cls(settings, issuer, now) if settings.auth.enabled else None

    def stats(self) -> dict[str, int]:
        """Verdicts so far by kind (``verified``, ``no_credentials``, ``wrong_response``,
        ``replayed`` ...) and the nonces whose counts are tracked now."""
        return {**self.gate.counters, "nonces_tracked": len(self.gate.counts)}

    def admit(self, req: Request, trusted: bool, follows_route: bool, now: float) -> Edit | None:
        """Rule 1-2.

        Raises:
            SipError: 401/407 with the challenges, or 400.
        """
        status = self.gate.status_for(req, trusted, follows_route)
        if status == 0:
            return None
        found: Challenge | Refusal | Pending | Verified = self.gate.inspect(req, status, now)
        if isinstance(found, Pending):
            ha1 = self.store.lookup_known(found.realm, found.algorithm, found.username)
            found = self.gate.verify(req, found, ha1, now)
        if isinstance(found, Challenge):
            err: SipError = (Unauthorized if found.status == 401 else ProxyAuthRequired)(found.why)
            err.extra_headers = found.headers
            raise err
        if isinstance(found, Refusal):
            raise BadCredentials(found.detail)
        return None if found.strip is None else (found.strip[0], found.strip[1], b"")
