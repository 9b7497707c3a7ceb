"""Which requests must authenticate, and the verdict on their credentials (RFC 3261 §22).

Rules:
1. ``status_for`` says what a request needs: 401 (REGISTER, WWW-Authenticate/Authorization,
   §22.2), 407 (an initial request from a source that is not ``[[trusted]]``, or an
   in-dialog request that does not follow a route set we Record-Routed: it would be routed
   like an initial one; Proxy-Authenticate/Proxy-Authorization, §22.3) or 0. ACK and CANCEL
   are never challenged (§22.1: they cannot be resubmitted with credentials).
2. The realm is chosen by host: the To host of a REGISTER, the From host otherwise (what
   OpenSIPS scripts pass to ``www_challenge``/``proxy_challenge``), among the realms'
   ``domains``; no match takes the first realm.
3. Verdicts: no credentials for our realm, an algorithm or qop we do not offer, an unknown
   user or a wrong response get a fresh challenge (the same answer, so a client cannot tell
   which users exist). A header that breaks the grammar, lacks a field qop=auth needs or
   whose ``uri`` is not the Request-URI (``check_uri``) gets 400 (RFC 7616 §3.4.6). A
   right response with a nonce that is stale, replayed or not ours gets a challenge with
   ``stale=true`` (RFC 7616 §3.3), so the client retries without asking its user.
4. Checking is two steps, ``inspect`` then ``verify``, because the HA1 may come from a
   cacheDB: the adapter looks it up in between. ``check`` does both with a synchronous lookup.
5. The nonce-count is recorded only for credentials that passed every other check, so a
   forged request never spends a legitimate client's nc.
6. With ``match_user``, the username must be the user part of the To URI of a REGISTER and
   of the From URI of other requests (Kamailio ``auth_check`` flag 1): else 403, so that
   alice cannot register bob's address nor call as bob. Checked before the HA1 lookup.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from conf.settings import Auth, AuthRealm
from ingress.sip.message import Request
from workers.auth import digest
from workers.auth.header import (
    Credentials,
    CredentialsError,
    challenge_value,
    check_form,
    parse_credentials,
)
from workers.auth.nonce import NonceCounts, NonceMint, NonceState

#: never challenged (rule 1)
UNCHALLENGED = frozenset({"ACK", "CANCEL"})

#: per kind of challenge: (reason phrase, challenge header, credentials header)
KINDS = {
    401: ("Unauthorized", b"WWW-Authenticate", "authorization"),
    407: ("Proxy Authentication Required", b"Proxy-Authenticate", "proxy-authorization"),
}

#: (realm, algorithm, username) -> HA1 hex, or None
Lookup = Callable[[str, str, str], str | None]


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer ``status`` with ``headers`` (one challenge per offered algorithm)."""

    status: int
    reason: str
    headers: tuple[bytes, ...]
    #: why, as a counter name: no_credentials, algorithm, qop, unknown_user, wrong_response,
    #: stale, foreign_nonce, replayed
    why: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Answer 400: the credentials are malformed (rule 3); or 403: they are another user's
    (rule 6)."""

    detail: str
    status: int = 400
    reason: str = "Bad Request"
    why: str = "malformed"


@dataclass(frozen=True, slots=True)
class Verified:
    """The credentials are good; ``strip`` is the span of ``raw`` holding their header line
    when ``consume_credentials`` asks to remove it, else None."""

    username: str
    realm: str
    strip: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Pending:
    """Well-formed credentials for our realm whose HA1 is to be looked up (rule 4)."""

    status: int
    realm: str
    algorithm: str
    username: str
    creds: Credentials
    span: tuple[int, int]


class AuthGate:
    """Challenges and checks requests for one worker (one ``NonceMint`` and its counts)."""

    __slots__ = ("_by_host", "_methods", "cfg", "counters", "counts", "mint", "realms")

    def __init__(self, cfg: Auth, realms: list[AuthRealm], secret: bytes, issuer: str,
                 now: float) -> None:  # fmt: skip
        if not realms:
            raise ValueError("at least one realm")
        self.cfg = cfg
        self.realms = realms
        self.mint = NonceMint(secret, issuer, cfg.nonce_lifetime_s)
        self.counts = NonceCounts(cfg.max_nonces, now)
        self._methods = frozenset(cfg.methods)
        self._by_host: dict[str, AuthRealm] = {}
        for r in reversed(realms):  # the first realm listing a host wins
            for host in r.domains or [r.realm]:
                self._by_host[host.lower()] = r
        #: outcomes by ``why`` and ``verified``, for stats
        self.counters: Counter[str] = Counter()

    def status_for(self, req: Request, trusted: bool, follows_route: bool) -> int:
        """401, 407 or 0 (rule 1). ``trusted``: the source matches a ``[[trusted]]`` table;
        ``follows_route``: an in-dialog request that popped our Route or that the stateful
        core matched to a dialog it holds."""
        cfg = self.cfg
        method = req.method
        if not cfg.enabled or method in UNCHALLENGED:
            return 0
        if method == "REGISTER" and cfg.register:
            return 401
        if not cfg.proxy or trusted:
            return 0
        if req.to.tag is not None and follows_route:
            return 0
        if self._methods:
            return 407 if method in self._methods else 0
        return 0 if method == "REGISTER" else 407

    def realm_for(self, req: Request) -> AuthRealm:
        """Rule 2."""
        uri = req.to.uri if req.method == "REGISTER" else req.from_.uri
        return self._by_host.get(uri.host_plain.lower()) or self.realms[0]

    def check(self, req: Request, status: int, lookup: Lookup, now: float,
              ) -> Challenge | Refusal | Verified:  # fmt: skip
        """``inspect`` then ``verify`` with ``lookup`` giving the HA1 (rule 4)."""
        found = self.inspect(req, status, now)
        if not isinstance(found, Pending):
            return found
        return self.verify(req, found, lookup(found.realm, found.algorithm, found.username), now)

    def inspect(self, req: Request, status: int, now: float) -> Challenge | Refusal | Pending:
        """The credentials ``req`` offers our realm, or the answer when there are none that
        can be checked (rule 3)."""
        realm = self.realm_for(req).realm
        name = KINDS[status][2]
        creds: Credentials | None = None
        span = (0, 0)
        for h in req.headers:
            if h[0] != name:
                continue
            try:
                c = parse_credentials(h[1])
            except CredentialsError as exc:
                return self._refuse(str(exc))
            if c is not None and c.realm == realm:
                creds, span = c, (h[2], h[3])
                break
        if creds is None:
            return self.challenge(req, status, now, "no_credentials")
        algorithm = digest.canonical_algorithm(creds.get("algorithm"))
        if algorithm is None or algorithm not in self.cfg.algorithms:
            return self.challenge(req, status, now, "algorithm")
        qop = creds.get("qop")
        if qop is not None and qop.lower() != "auth":
            return self.challenge(req, status, now, "qop")
        try:
            check_form(creds, digest.HEX_LEN[algorithm])
        except CredentialsError as exc:
            return self._refuse(str(exc))
        if self.cfg.check_uri and creds.params["uri"] != req.uri.raw:
            return self._refuse("uri is not the Request-URI")
        username = creds.params["username"]
        if self.cfg.match_user and username != self._identity(req):
            self.counters["user_mismatch"] += 1
            return Refusal("the credentials are not the user's", 403, "Forbidden", "user_mismatch")
        return Pending(status, realm, algorithm, username, creds, span)

    @staticmethod
    def _identity(req: Request) -> str | None:
        """Whose credentials ``req`` must carry (rule 6)."""
        return (req.to.uri if req.method == "REGISTER" else req.from_.uri).user

    def verify(self, req: Request, p: Pending, ha1: str | None, now: float,
               ) -> Challenge | Verified:  # fmt: skip
        """The verdict on ``p`` given the user's HA1 (None: no such user) (rules 3, 5)."""
        if ha1 is None:
            return self.challenge(req, p.status, now, "unknown_user")
        c = p.creds.params
        expected = digest.response(p.algorithm, ha1, nonce=c["nonce"], nc=c["nc"],
                                   cnonce=c["cnonce"], qop=c["qop"], method=req.method,
                                   uri=c["uri"])  # fmt: skip
        if not digest.same(expected, c["response"]):
            return self.challenge(req, p.status, now, "wrong_response")
        state, issued_ms = self.mint.check(c["nonce"], p.realm, req.call_id, now)
        if state is NonceState.FOREIGN:
            return self.challenge(req, p.status, now, "foreign_nonce", stale=True)
        if state is NonceState.STALE:
            return self.challenge(req, p.status, now, "stale", stale=True)
        if not self.counts.use(c["nonce"], issued_ms, int(c["nc"], 16)):
            return self.challenge(req, p.status, now, "replayed", stale=True)
        self.counters["verified"] += 1
        strip = p.span if self.cfg.consume_credentials else None
        return Verified(p.username, p.realm, strip)

    def challenge(self, req: Request, status: int, now: float, why: str, stale: bool = False,
                  ) -> Challenge:  # fmt: skip
        """A fresh challenge for ``req`` in its realm, one header per offered algorithm."""
        self.counters[why] += 1
        realm = self.realm_for(req).realm
        nonce = self.mint.issue(realm, req.call_id, now)
        reason, header, _ = KINDS[status]
        headers = tuple(header + b": " + challenge_value(realm, nonce, algorithm, stale)
                        for algorithm in self.cfg.algorithms)  # fmt: skip
        return Challenge(status, reason, headers, why)

    def _refuse(self, detail: str) -> Refusal:
        self.counters["malformed"] += 1
        return Refusal(detail)
