"""The worker's side of authentication: the gate's verdicts as SIP errors and edits.

Rules:
1. ``admit`` is called by ``StatelessProxy.plan`` (both modes go through it) after the
   §16.3 checks and the relay check, and before the rate-limit pipes: a request that does not
   authenticate is answered 401/407 (400, 403) statelessly like any refusal, and never counts
   against a pipe nor reaches a destination.
2. A verified request returns the edit that removes its credentials line when
   ``consume_credentials`` is set (else None): credentials for other realms pass untouched.
3. The credentials files are asked here (a dict get), and the answers a realm's cacheDB
   gave lately (``store.py``). A user neither holds raises ``NeedsHa1``: the stateful core
   queues an ``auth`` job that looks the HA1 up (``store.lookup``) and hands the request back
   with it (``given``), so the request is handled again from the start.
4. A challenge's To-tag is an HMAC of the Call-ID, From-tag and CSeq number under a key
   derived from the nonce secret (``reply_tag``), so the ACK a client sends for our 401/407
   is recognised (``acks_challenge``) and absorbed, not routed to a destination as a stray
   in-dialog ACK would be: a UAS that gets it first treats the call as dead (sipp does).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from conf import credfile
from conf.settings import Settings
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.serialize import Edit
from workers.auth.gate import AuthGate, Challenge, Pending, Refusal, Verified
from workers.auth.store import CredentialStore
from workers.cachedb import CacheDB, open_cachedb


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


class Forbidden(SipError):
    """403: credentials of another user than the request's (``gate.py`` rule 6)."""

    status = 403
    reason = "Forbidden"


class NeedsHa1(Exception):
    """The HA1 of ``key`` (realm, algorithm, username) is to be read from a cacheDB (rule 3)."""

    def __init__(self, key: tuple[str, str, str]) -> None:
        super().__init__(key)
        self.key = key


class Authenticator:
    __slots__ = ("_tag_key", "gate", "given", "store")

    def __init__(self, settings: Settings, issuer: str, now: float,
                 store: CredentialStore | None = None) -> None:  # fmt: skip
        a = settings.auth
        secret = credfile.load_secret(a.nonce_secret_file)
        self.gate = AuthGate(a, settings.auth_realm, secret, issuer, now)
        self._tag_key = hmac.new(secret, b"sipline challenge to-tag", hashlib.sha256).digest()
        self.store = store or CredentialStore(settings.auth_realm, a.cachedb_cache_s, _opener(settings))
        #: the HA1 an ``auth`` job read for (realm, algorithm, username), for the request it
        #: hands back (rule 3)
        self.given: tuple[tuple[str, str, str], str | None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings, issuer: str, now: float) -> Authenticator | None:
        return cls(settings, issuer, now) if settings.auth.enabled else None

    def stats(self) -> dict[str, int]:
        """Verdicts so far by kind (``verified``, ``no_credentials``, ``wrong_response``,
        ``replayed`` ...) and the nonces whose counts are tracked now."""
        return {**self.gate.counters, "nonces_tracked": len(self.gate.counts)}

    def reply_tag(self, req: Request) -> str:
        """The To-tag of our challenge to ``req`` (rule 4): the same for its ACK."""
        msg = f"{req.call_id}\n{req.from_.tag}\n{req.cseq}".encode("utf-8", "surrogateescape")
        return "ac" + hmac.new(self._tag_key, msg, hashlib.sha256).hexdigest()[:14]

    def acks_challenge(self, req: Request) -> bool:
        """``req`` is the ACK of one of our challenges (rule 4)."""
        tag = req.to.tag
        return tag is not None and tag.startswith("ac") and hmac.compare_digest(
            tag.encode("utf-8", "surrogateescape"), self.reply_tag(req).encode())  # fmt: skip

    def admit(self, req: Request, trusted: bool, follows_route: bool, now: float) -> Edit | None:
        """Rule 1-2.

        Raises:
            SipError: 401/407 with the challenges, 400 or 403.
            NeedsHa1: the HA1 is to be read from a cacheDB first.
        """
        status = self.gate.status_for(req, trusted, follows_route)
        if status == 0:
            return None
        found: Challenge | Refusal | Pending | Verified = self.gate.inspect(req, status, now)
        if isinstance(found, Pending):
            key = (found.realm, found.algorithm, found.username)
            known, ha1 = self.store.known(*key, now)
            if not known:
                if self.given is None or self.given[0] != key:
                    raise NeedsHa1(key)
                ha1 = self.given[1]
            found = self.gate.verify(req, found, ha1, now)
        if isinstance(found, Challenge):
            err: SipError = (Unauthorized if found.status == 401 else ProxyAuthRequired)(found.why)
            err.extra_headers = found.headers
            raise err
        if isinstance(found, Refusal):
            raise (Forbidden if found.status == 403 else BadCredentials)(found.detail)
        return None if found.strip is None else (found.strip[0], found.strip[1], b"")


def _opener(settings: Settings) -> Callable[[str], CacheDB]:
    def open_db(url: str) -> CacheDB:
        return open_cachedb(url, run_dir=settings.node.run_dir,
                            slow_ms=settings.registrar.cachedb_slow_ms)  # fmt: skip

    return open_db
