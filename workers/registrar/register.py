"""Registrar (RFC 3261 §10.3), sans-IO: a REGISTER and its AOR's stored bindings in, the
bindings to store and the reply out. No sockets, clock or logging.

Rules:
1. Time is an argument: ``now`` is wall-clock epoch seconds, so a binding's ``expires_at``
   means the same on every node that reads the shared record. A binding is live while
   ``expires_at > now``; expired ones are dropped from every answer and every write.
2. Two steps, so that a request refused on its own merits costs no I/O: ``prepare(req)``
   checks what needs no storage (Require, AOR, Contacts, expiry, q, sizes) and returns a
   ``Plan`` or a ``Reply``; ``apply(plan, stored, source, now)`` merges the plan into the
   stored bindings. ``register`` does both.
3. All or nothing (§10.3 step 7): a request either commits every one of its binding changes
   or none (``Outcome.store`` is None) and gets an error.
4. Call-ID/CSeq ordering (§10.3 step 7): for a binding last written with the same Call-ID, a
   higher CSeq updates it and a lower one aborts the request with 500. An equal CSeq is the
   same request again (a UA increments CSeq for each new REGISTER of one Call-ID, §10.2.4):
   a retransmission that a stateless proxy cannot absorb. It leaves that binding as it is
   and the request is answered 200, so a lost 200 does not turn into a 500 for the UA.
   ``Contact: *`` follows the RFC strictly: any binding of the same Call-ID with a CSeq not
   below the request's aborts it.
5. Records are msgpack, versioned (``RECORD_VERSION``); ``decode`` never raises: a record it
   cannot read is treated as empty and the reason is returned for the caller to log.
6. Sizes are bounded so a record always fits a cacheDB value: at most ``max_contacts_per_aor``
   (≤ 100) bindings, each with a contact URI of ``MAX_CONTACT_BYTES``, a Path of
   ``MAX_PATH_BYTES`` and a Call-ID of ``MAX_CALL_ID_CHARS`` (longer ones are stored hashed:
   they are only ever compared).
"""

from __future__ import annotations

import email.utils
import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import msgpack

from conf.settings import Registrar as RegistrarConfig
from ingress.sip.errors import BadRequest
from ingress.sip.grammar import parse_name_addr, parse_uri
from ingress.sip.message import NameAddr, Request, Uri

RECORD_VERSION = 1
KEY_PREFIX = "loc:"
#: a record key longer than this is hashed; well inside the cacheDB's 250-byte key rule, with
#: room for a lock prefix
MAX_KEY_BYTES = 200
MAX_CONTACT_BYTES = 1024
#: the Path values of one REGISTER, joined (RFC 3327): a few proxies' URIs
MAX_PATH_BYTES = 2048
#: Path URIs one binding keeps: each becomes a Route header of every request to it
MAX_PATH_URIS = 8
#: Call-IDs are compared, never shown: longer ones are kept as a hash
MAX_CALL_ID_CHARS = 128
#: a connection tag (workers/conntag.py: ingress id, connection number, 20 hex digits)
MAX_CONN_TAG_CHARS = 128
#: RFC 3261 §10.2.1.1: a larger expiry is taken as 2**32-1
MAX_DELTA_SECONDS = 2**32 - 1
#: how a contact without q ranks against those with one
DEFAULT_Q = 1.0
#: option tags we can honour in Require (RFC 3327: Path)
SUPPORTED = frozenset({"path"})

# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )   (§25.1)
QVALUE_RE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
# delta-seconds = 1*DIGIT   (§25.1)
DELTA_RE = re.compile(r"[0-9]+")
# what a Path URI must not hold: controls, spaces, angle brackets or commas would change the
# header it is written into (the grammar allows none of them unescaped in a SIP URI)
_UNSAFE_RE = re.compile(r"[\x00-\x20\x7f<>,\"]")
# what a cacheDB key may hold as is (printable ASCII but space; interface.py rule 1)
_SAFE_KEY_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Source:
    """Where a REGISTER came from: where to reach a UA behind NAT (OpenSIPS ``received``)."""

    transport: str
    ip: str
    port: int
    #: for TCP/TLS, the ``sl-c`` tag (workers/conntag.py) of the connection it came on: a
    #: UA behind NAT is reachable only on it, and it lives in one ingress (docs/nat.md)
    conn: str = ""


@dataclass(frozen=True, slots=True)
class Binding:
    """One contact of an AOR (§10.3). ``path`` holds the Path values of its REGISTER."""

    contact: str
    expires_at: float
    q: float | None
    call_id: str
    cseq: int
    source: Source
    path: tuple[str, ...] = ()
    registered_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Reply:
    """A status and extra header lines for ``ingress.sip.serialize.build_response``.

    ``detail`` says why, for logs; ``bad_record`` is set when the stored record could not be
    read and was taken as empty (rule 5).
    """

    status: int
    reason: str
    headers: tuple[bytes, ...] = ()
    detail: str = ""
    bad_record: str | None = None


@dataclass(frozen=True, slots=True)
class Requested:
    """One Contact of a REGISTER, checked: its URI text, comparison key, expiry and q."""

    uri: str
    key: str
    expires_s: int
    q: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What a valid REGISTER asks (``prepare``); no contacts and not ``star`` is a query."""

    aor: str
    star: bool
    contacts: tuple[Requested, ...]
    call_id: str
    cseq: int
    path: tuple[str, ...]
    #: the REGISTER said ``Supported: path``: its 200 echoes the Path (RFC 3327 §5.3)
    echo_path: bool = False

    @property
    def is_query(self) -> bool:
        return not self.star and not self.contacts


@dataclass(frozen=True, slots=True)
class Outcome:
    """The reply, and the bindings to store (None: leave the stored record as it is)."""

    reply: Reply
    store: tuple[Binding, ...] | None


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded record; ``error`` says why it was taken as empty."""

    bindings: tuple[Binding, ...]
    error: str | None = None


class Registrar:
    """RFC 3261 §10.3 over one AOR at a time; see the module rules."""

    __slots__ = ("cfg", "domains")

    def __init__(self, cfg: RegistrarConfig, our_hosts: Iterable[str] = ()) -> None:
        """Args:
        cfg: the ``[registrar]`` settings.
        our_hosts: our listen addresses, the domains served when ``cfg.domains`` is empty.
        """
        self.cfg = cfg
        names = cfg.domains or list(our_hosts)
        self.domains = frozenset(_plain(h).lower() for h in names)

    def serves(self, uri: Uri) -> bool:
        """Whether ``uri`` (a Request-URI or a To URI) names a domain of ours (§10.3 step 1)."""
        return uri.is_sip and uri.host_plain.lower() in self.domains

    def aor_of(self, uri: Uri) -> str | None:
        """The AOR of a URI of our domains (§10.3 step 5), or None when it is not one."""
        if not self.serves(uri):
            return None
        return canonical_aor(uri)

    def register(
        self, req: Request, source: Source, stored: Sequence[Binding], now: float
    ) -> Outcome:
        """``prepare`` then ``apply``: the whole of §10.3 steps 2 and 5 to 8."""
        plan = self.prepare(req)
        if isinstance(plan, Reply):
            return Outcome(plan, None)
        return self.apply(plan, stored, source, now)

    def prepare(self, req: Request) -> Plan | Reply:
        """Check a REGISTER against everything that needs no stored state.

        Returns:
            A ``Plan``, or the ``Reply`` refusing it: 420 (Require), 404 (AOR not ours),
            400 (Contact, q, ``*`` misuse, sizes) or 423 (expiry too brief).
        """
        unsupported = [t for t in req.header_values("require")
                       if t and t.decode("latin-1").lower() not in SUPPORTED]  # fmt: skip
        if unsupported:  # §10.3 step 2, §8.2.2.3
            return Reply(420, "Bad Extension", (b"Unsupported: " + b", ".join(unsupported),),
                         "unsupported Require")  # fmt: skip
        aor = self.aor_of(req.to.uri)
        if aor is None:  # §10.3 step 5
            return Reply(404, "Not Found", detail="To is not an AOR of our domains")
        try:
            return self._plan(req, aor)
        except BadRequest as exc:
            return Reply(400, "Bad Request", detail=exc.detail)
        except _TooBrief:
            return Reply(423, "Interval Too Brief",
                         (b"Min-Expires: %d" % self.cfg.min_expires_s,),
                         "expiry below min_expires_s")  # fmt: skip

    def _plan(self, req: Request, aor: str) -> Plan:
        values = req.header_values("contact")
        header = req.header("expires")
        call_id = compact_call_id(req.call_id)
        path = _path(req)
        echo = bool(path) and any(t.strip().lower() == b"path" for t in req.header_values("supported"))
        if b"*" in values:  # §10.3 step 6
            if len(values) != 1:
                raise BadRequest("Contact: * with other contacts")
            if header is None or _delta(header) != 0:
                raise BadRequest("Contact: * without Expires: 0")
            return Plan(aor, True, (), call_id, req.cseq, path, echo)
        default = self.cfg.default_expires_s if header is None else self._expiry(header)
        wanted: dict[str, Requested] = {}
        for value in values:
            r = self._requested(value, default)
            wanted.pop(r.key, None)  # the same contact twice: the last one counts
            wanted[r.key] = r
        return Plan(aor, False, tuple(wanted.values()), call_id, req.cseq, path, echo)

    def _requested(self, value: bytes, default: int) -> Requested:
        na = parse_name_addr(value)  # the worker's trusted parse skipped Contact values
        uri = na.uri
        if len(uri.raw.encode("utf-8", "surrogateescape")) > MAX_CONTACT_BYTES:
            raise BadRequest(f"Contact URI over {MAX_CONTACT_BYTES} bytes")
        params = na.params
        expires = params.get("expires")
        seconds = default
        if expires is not None:
            seconds = self._expiry(expires.encode("utf-8", "surrogateescape"))
        if 0 < seconds < self.cfg.min_expires_s:
            raise _TooBrief
        return Requested(uri.raw, contact_key(uri), min(seconds, self.cfg.max_expires_s),
                         _q(na))  # fmt: skip

    def _expiry(self, value: bytes) -> int:
        """delta-seconds; a malformed one is the default (§10.2.1.1 says 3600, ours)."""
        n = _delta(value)
        return self.cfg.default_expires_s if n is None else n

    def apply(
        self, plan: Plan, stored: Sequence[Binding], source: Source, now: float
    ) -> Outcome:
        """Merge ``plan`` into the AOR's ``stored`` bindings (§10.3 steps 6 to 8).

        Returns:
            200 with every live binding and ``store`` the new bindings (None when nothing
            changed); 500 for an out-of-order request (rule 4) or 403 over the contact cap,
            both with ``store`` None.
        """
        live = [b for b in stored if b.expires_at > now]
        if plan.is_query:
            return Outcome(self._ok(live, plan, now), None)
        if plan.star:
            for b in live:
                if b.call_id == plan.call_id and plan.cseq <= b.cseq:
                    return Outcome(_out_of_order(), None)
            return Outcome(self._ok([], plan, now), ())
        by_key = {contact_key_text(b.contact): b for b in live}
        changed = len(live) != len(stored)
        for r in plan.contacts:
            old = by_key.get(r.key)
            if old is not None and old.call_id == plan.call_id:
                if plan.cseq == old.cseq:
                    continue  # rule 4: the same request again
                if plan.cseq < old.cseq:
                    return Outcome(_out_of_order(), None)
            if r.expires_s == 0:
                changed = by_key.pop(r.key, None) is not None or changed
            else:
                changed = True
                by_key[r.key] = Binding(r.uri, now + r.expires_s, r.q, plan.call_id, plan.cseq,
                                        source, plan.path, now)  # fmt: skip
        new = list(by_key.values())
        cap = self.cfg.max_contacts_per_aor
        if len(new) > cap and len(new) > len(live):
            return Outcome(_too_many(cap), None)
        return Outcome(self._ok(new, plan, now), tuple(new) if changed else None)

    def _ok(self, bindings: Sequence[Binding], plan: Plan, now: float) -> Reply:
        """200 listing every current binding with its remaining expiry (§10.3 step 8)."""
        lines = [contact_line(b, now) for b in bindings]
        lines.append(b"Date: " + email.utils.formatdate(now, usegmt=True).encode())
        # RFC 3327 §5.3: the 200 copies the Path when the UA said it supports it; one that
        # did not is still registered through it (docs/registrar.md, "Path")
        if plan.echo_path:
            lines.append(b"Path: " + ", ".join(plan.path).encode("utf-8", "surrogateescape"))
        return Reply(200, "OK", tuple(lines))

    def record_ttl_s(self, bindings: Sequence[Binding], now: float) -> float:
        """The record's cacheDB TTL: its longest binding's remaining life plus
        ``record_linger_s``, so it outlives every binding and then says "known" a while."""
        longest = max((b.expires_at - now for b in bindings), default=0.0)
        return max(longest, 0.0) + self.cfg.record_linger_s


class _TooBrief(Exception):
    """A contact asked for an expiry below ``min_expires_s``: the whole request gets 423."""


def lookup(bindings: Iterable[Binding], now: float) -> list[Binding]:
    """The live bindings, highest q first (§16.6: the order a proxy tries targets in);
    among equal q the most recently registered first, then by contact text."""
    live = [b for b in bindings if b.expires_at > now]
    live.sort(key=_rank)
    return live


def _rank(b: Binding) -> tuple[float, float, str]:
    return (-(DEFAULT_Q if b.q is None else b.q), -b.registered_at, b.contact)


def contact_line(b: Binding, now: float) -> bytes:
    """``Contact: <uri>;expires=N[;q=Q]``; N rounds up, so a live binding never says 0."""
    remaining = max(1, math.ceil(b.expires_at - now))
    q = "" if b.q is None else f";q={_qtext(b.q)}"
    return f"Contact: <{b.contact}>;expires={remaining}{q}".encode("utf-8", "surrogateescape")


def _qtext(q: float) -> str:
    text = f"{q:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _out_of_order() -> Reply:
    detail = "CSeq not above the stored one for this Call-ID (RFC 3261 §10.3 step 7)"
    return Reply(500, "Server Internal Error", detail=detail)


def _too_many(cap: int) -> Reply:
    # 403, not 503: 503 tells a UA to retry later or fail over to another server (§21.5.4),
    # which does not cure a per-AOR policy limit; 403 says not to repeat it (§21.4.4).
    return Reply(403, "Forbidden", detail=f"over max_contacts_per_aor ({cap})")


# -- names and keys ------------------------------------------------------------------------


def canonical_aor(uri: Uri) -> str:
    """§10.3 step 5: the URI without parameters (user-param included) or headers, escapes
    undone; scheme and host lower-cased, user kept as is (it compares case-sensitively,
    §19.1.4), password dropped, an explicit port kept."""
    user = unquote(uri.user, errors="surrogateescape") if uri.user else ""
    host = uri.host.lower()
    port = f":{uri.port}" if uri.port is not None else ""
    return f"{uri.scheme}:{user}@{host}{port}" if user else f"{uri.scheme}:{host}{port}"


def record_key(aor: str) -> str:
    """The cacheDB key of an AOR's record: ``loc:<aor>``, or ``loc:#<hash>`` when the AOR is
    long or holds what a key may not (spaces or controls, from unescaping)."""
    key = KEY_PREFIX + aor
    if len(key) <= MAX_KEY_BYTES and _SAFE_KEY_RE.fullmatch(key):
        return key
    digest = hashlib.blake2b(aor.encode("utf-8", "surrogateescape"), digest_size=16)
    return KEY_PREFIX + "#" + digest.hexdigest()


def contact_key(uri: Uri) -> str:
    """What two contact URIs share when they are the same binding (§10.3 step 7 asks for the
    §19.1.4 rules). Escapes undone; everything but the user compared ignoring case. Stricter
    than §19.1.4 in one way: a parameter present in only one URI makes them differ."""
    if not uri.is_sip:
        return uri.scheme + ":" + uri.raw.partition(":")[2]
    user = unquote(uri.user, errors="surrogateescape") if uri.user else ""
    pw = unquote(uri.password, errors="surrogateescape") if uri.password else ""
    params = sorted((k, (v or "").lower()) for k, v in (uri.params or {}).items())
    ptext = "".join(f";{k}={v}" for k, v in params)
    headers = (uri.headers or "").lower()
    return f"{uri.scheme}:{user}:{pw}@{uri.host.lower()}:{uri.port or ''}{ptext}?{headers}"


def contact_key_text(text: str) -> str:
    """``contact_key`` of a stored contact URI; text that no longer parses is its own key."""
    try:
        return contact_key(parse_uri(text))
    except BadRequest:
        return text


def compact_call_id(call_id: str) -> str:
    """The Call-ID as stored: as is, or hashed when long (rule 6; only ever compared)."""
    if len(call_id) <= MAX_CALL_ID_CHARS:
        return call_id
    return "#" + hashlib.blake2b(call_id.encode(), digest_size=16).hexdigest()


def _plain(host: str) -> str:
    return host[1:-1] if host[:1] == "[" else host


def _delta(value: bytes) -> int | None:
    text = value.strip()
    if DELTA_RE.fullmatch(text.decode("latin-1")) is None:
        return None
    return min(int(text), MAX_DELTA_SECONDS)


def _q(na: NameAddr) -> float | None:
    if "q" not in na.params:
        return None
    text = na.params["q"]
    if text is None or QVALUE_RE.fullmatch(text) is None:
        raise BadRequest(f"malformed q value {text!r} (§20.10: 0 to 1, three decimals)")
    return round(float(text), 3)


def _path(req: Request) -> tuple[str, ...]:
    """The Path URIs of a REGISTER, checked: each becomes a Route of the requests to its
    contacts, so only a SIP URI with no headers part, within the count and size caps, is
    kept, and each as ``<uri>`` (its own text, never the header's) so nothing else rides."""
    values = req.header_values("path")
    if len(values) > MAX_PATH_URIS:
        raise BadRequest(f"Path with over {MAX_PATH_URIS} URIs")
    total = 0
    out: list[str] = []
    for v in values:
        uri = parse_name_addr(v).uri  # raises BadRequest: Path is name-addrs (RFC 3327 §4)
        text = uri.raw
        if not uri.is_sip or uri.headers is not None or _UNSAFE_RE.search(text):
            raise BadRequest("Path URI is not a plain SIP URI")
        total += len(text) + 4
        out.append(f"<{text}>")
    if total > MAX_PATH_BYTES:
        raise BadRequest(f"Path over {MAX_PATH_BYTES} bytes")
    return tuple(out)


def path_routes(path: Sequence[str]) -> list[NameAddr] | None:
    """A stored Path as the Route entries of a request to its contact (RFC 3327 §5.3,
    in order); None when one no longer parses as a SIP URI (a forged record)."""
    try:
        routes = [parse_name_addr(p.encode("utf-8", "surrogateescape")) for p in path]
    except BadRequest:
        return None
    return routes if all(r.uri.is_sip and r.uri.headers is None for r in routes) else None


# -- the stored record ---------------------------------------------------------------------


def encode(bindings: Iterable[Binding]) -> bytes:
    """``[RECORD_VERSION, [binding, ...]]`` in msgpack; each binding a 10-item array
    (contact, expires_at, q in thousandths or -1, call_id, cseq, transport, ip, port, path,
    registered_at), and an 11th, the connection tag, when it came over TCP/TLS."""
    rows = [
        [b.contact, b.expires_at, -1 if b.q is None else round(b.q * 1000), b.call_id, b.cseq,
         b.source.transport, b.source.ip, b.source.port, list(b.path), b.registered_at,
         *((b.source.conn,) if b.source.conn else ())]
        for b in bindings
    ]  # fmt: skip
    packed: bytes = msgpack.packb([RECORD_VERSION, rows], use_bin_type=True)
    return packed


def decode(data: bytes) -> Decoded:
    """The bindings of a record; never raises (rule 5)."""
    try:
        # unpackb bounds every length by len(data) by itself (msgpack README, "Security")
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types; the boundary of rule 5
        return Decoded((), f"not msgpack: {type(exc).__name__}")
    if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int):
        return Decoded((), "not a location record")
    if obj[0] != RECORD_VERSION:
        return Decoded((), f"record version {obj[0]}, expected {RECORD_VERSION}")
    rows = obj[1]
    if not isinstance(rows, list) or len(rows) > 1000:
        return Decoded((), "bindings are not an array of at most 1000")
    out: list[Binding] = []
    for i, row in enumerate(rows):
        b = _binding(row)
        if b is None:
            return Decoded((), f"binding {i} is malformed")
        out.append(b)
    return Decoded(tuple(out))


def _binding(row: object) -> Binding | None:
    if not isinstance(row, list) or len(row) not in (10, 11):
        return None
    contact, expires_at, q, call_id, cseq, transport, ip, port, path, registered_at = row[:10]
    conn = row[10] if len(row) == 11 else ""
    ok = (
        _is_text(contact, MAX_CONTACT_BYTES) and _is_number(expires_at)
        and type(q) is int and -1 <= q <= 1000
        and _is_text(call_id, MAX_CALL_ID_CHARS)
        and type(cseq) is int and 0 <= cseq < 2**32
        and _is_text(transport, 8) and _is_text(ip, 64)
        and type(port) is int and 0 <= port <= 65535
        and isinstance(path, list) and len(path) <= MAX_PATH_URIS
        and all(_is_text(p, MAX_PATH_BYTES) for p in path)
        and _is_number(registered_at)
        and (conn == "" or _is_text(conn, MAX_CONN_TAG_CHARS))
    )  # fmt: skip
    if not ok:
        return None
    return Binding(contact, float(expires_at), None if q < 0 else q / 1000, call_id, cseq,
                   Source(transport, ip, port, conn), tuple(path), float(registered_at))  # fmt: skip


def _is_text(v: object, cap: int) -> bool:
    return isinstance(v, str) and 0 < len(v) <= cap


def _is_number(v: object) -> bool:
    return type(v) in (int, float) and math.isfinite(v)  # type: ignore[arg-type]
