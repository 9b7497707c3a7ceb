"""The registrar core (workers/registrar/register.py), from REGISTER bytes through the real parser."""

from __future__ import annotations

import email.utils

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.settings import Registrar as RegistrarConfig
from ingress.sip.grammar import parse_uri
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from workers.registrar import register as reg
from workers.registrar.register import Binding, Outcome, Registrar, Source

NOW = 1_700_000_000.0
SRC = Source("udp", "192.0.2.7", 40123)
CFG = RegistrarConfig(domains=["example.com"], default_expires_s=3600, min_expires_s=60,
                      max_expires_s=7200, max_contacts_per_aor=3)  # fmt: skip
AOR = "sip:alice@example.com"


def register_bytes(
    contacts: tuple[str, ...] = ("<sip:alice@10.0.0.1:5070>",),
    *,
    expires: str | None = None,
    to: str = "sip:alice@example.com",
    call_id: str = "reg-1@10.0.0.1",
    cseq: int = 1,
    extra: tuple[str, ...] = (),
) -> bytes:
    lines = [
        "REGISTER sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-reg",
        "Max-Forwards: 70",
        f"From: <{to}>;tag=ft",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {c}" for c in contacts),
        *([f"Expires: {expires}"] if expires is not None else []),
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parsed(data: bytes) -> Request:
    # trusted, as the worker parses: Contact values are checked by the registrar itself
    msg = parse_message(data, trusted=True)
    assert isinstance(msg, Request)
    return msg


def run(stored: tuple[Binding, ...] = (), now: float = NOW, cfg: RegistrarConfig = CFG,
        **kw: object) -> Outcome:  # fmt: skip
    req = parsed(register_bytes(**kw))  # type: ignore[arg-type]
    return Registrar(cfg).register(req, SRC, stored, now)


def contacts_of(out: Outcome) -> list[bytes]:
    return [h for h in out.reply.headers if h.startswith(b"Contact:")]


def header(out: Outcome, name: bytes) -> bytes | None:
    for h in out.reply.headers:
        if h.lower().startswith(name.lower() + b":"):
            return h.partition(b":")[2].strip()
    return None


def binding(contact: str = "sip:alice@10.0.0.1:5070", *, expires_at: float = NOW + 600,
            q: float | None = None, call_id: str = "reg-1@10.0.0.1", cseq: int = 1,
            registered_at: float = NOW - 10) -> Binding:  # fmt: skip
    return Binding(contact, expires_at, q, call_id, cseq, SRC, (), registered_at)


# -- expiry ---------------------------------------------------------------------------------

EXPIRY_CASES = [
    # (id, contact, Expires header, expected expires= in the 200)
    ("default", "<sip:alice@10.0.0.1:5070>", None, 3600),
    ("header", "<sip:alice@10.0.0.1:5070>", "600", 600),
    ("param-over-header", "<sip:alice@10.0.0.1:5070>;expires=120", "600", 120),
    ("param-over-default", "<sip:alice@10.0.0.1:5070>;expires=300", None, 300),
    ("max-clamps", "<sip:alice@10.0.0.1:5070>;expires=100000", None, 7200),
    ("over-32-bits-clamps", "<sip:alice@10.0.0.1:5070>;expires=99999999999999", None, 7200),
    ("malformed-param-is-default", "<sip:alice@10.0.0.1:5070>;expires=soon", "600", 3600),
    ("malformed-header-is-default", "<sip:alice@10.0.0.1:5070>", "1 hour", 3600),
    ("exactly-min", "<sip:alice@10.0.0.1:5070>;expires=60", None, 60),
]


@pytest.mark.parametrize(("contact", "expires", "seconds"), [c[1:] for c in EXPIRY_CASES],
                         ids=[c[0] for c in EXPIRY_CASES])  # fmt: skip
def test_expiry(contact: str, expires: str | None, seconds: int) -> None:
    """The expires param beats the Expires header, which beats the default; max clamps; a
    malformed value is the default (RFC 3261 §10.2.1.1, §10.3 step 7)."""
    out = run(contacts=(contact,), expires=expires)
    assert out.reply.status == 200
    assert contacts_of(out) == [b"Contact: <sip:alice@10.0.0.1:5070>;expires=%d" % seconds]
    assert out.store is not None and out.store[0].expires_at == NOW + seconds


@pytest.mark.parametrize(("contact", "expires"), [
    ("<sip:alice@10.0.0.1:5070>;expires=59", None),
    ("<sip:alice@10.0.0.1:5070>", "1"),
    ("<sip:alice@10.0.0.1:5070>, <sip:alice@10.0.0.2>;expires=30", "3600"),
], ids=["param", "header", "one-of-two"])  # fmt: skip
def test_too_brief_is_423(contact: str, expires: str | None) -> None:
    """Any contact asking 0 < expiry < min_expires_s gets 423 with Min-Expires, nothing
    stored (§10.3 step 7)."""
    out = run(contacts=(contact,), expires=expires)
    assert (out.reply.status, out.reply.reason) == (423, "Interval Too Brief")
    assert out.reply.headers == (b"Min-Expires: 60",)
    assert out.store is None


def test_zero_removes_one_binding() -> None:
    """expires=0 removes that contact's binding and leaves the others (§10.3 step 7)."""
    stored = (binding(), binding("sip:alice@10.0.0.2"))
    out = run(stored, contacts=("<sip:alice@10.0.0.1:5070>;expires=0",), cseq=2)
    assert out.reply.status == 200
    assert out.store is not None and [b.contact for b in out.store] == ["sip:alice@10.0.0.2"]
    assert contacts_of(out) == [b"Contact: <sip:alice@10.0.0.2>;expires=600"]


def test_expires_header_zero_removes_all_listed() -> None:
    """Expires: 0 applies to every listed contact without its own expires."""
    stored = (binding(), binding("sip:alice@10.0.0.2", call_id="other"))
    out = run(stored, contacts=("<sip:alice@10.0.0.1:5070>", "<sip:alice@10.0.0.2>"),
              expires="0", cseq=2)  # fmt: skip
    assert out.reply.status == 200 and out.store == ()


# -- Contact: * -----------------------------------------------------------------------------

STAR_CASES = [
    ("expires-0", ("*",), "0", 200),
    ("expires-00", ("*",), "00", 200),
    ("no-expires", ("*",), None, 400),
    ("expires-60", ("*",), "60", 400),
    ("malformed-expires", ("*",), "zero", 400),
    ("with-contact", ("*", "<sip:alice@10.0.0.1>"), "0", 400),
    ("in-a-list", ("<sip:alice@10.0.0.1>, *",), "0", 400),
]


@pytest.mark.parametrize(("contacts", "expires", "status"), [c[1:] for c in STAR_CASES],
                         ids=[c[0] for c in STAR_CASES])  # fmt: skip
def test_star(contacts: tuple[str, ...], expires: str | None, status: int) -> None:
    """``*`` with Expires: 0 alone removes every binding; anything else with ``*`` is 400
    (§10.3 step 6)."""
    stored = (binding(call_id="other"), binding("sip:alice@10.0.0.2", call_id="other"))
    out = run(stored, contacts=contacts, expires=expires, cseq=5)
    assert out.reply.status == status
    if status == 200:
        assert out.store == () and contacts_of(out) == []
    else:
        assert out.store is None


@pytest.mark.parametrize(("stored_cseq", "status"), [(4, 200), (5, 500), (6, 500)],
                         ids=["lower-stored", "equal", "higher-stored"])  # fmt: skip
def test_star_cseq_order(stored_cseq: int, status: int) -> None:
    """``*`` removes a binding of the same Call-ID only if its CSeq is higher, else the
    request fails (§10.3 step 6)."""
    out = run((binding(cseq=stored_cseq),), contacts=("*",), expires="0", cseq=5)
    assert out.reply.status == status
    assert out.store == (() if status == 200 else None)


# -- q values -------------------------------------------------------------------------------

Q_CASES = [
    ("one", "1", b";q=1.0"), ("one-000", "1.000", b";q=1.0"), ("zero", "0", b";q=0.0"),
    ("half", "0.5", b";q=0.5"), ("three-digits", "0.125", b";q=0.125"),
    ("zero-dot", "0.", b";q=0.0"),
]
BAD_Q = ["1.5", "2", "0.1234", "abc", "-0.5", "1.001", ".5", ""]


@pytest.mark.parametrize(("q", "echo"), [c[1:] for c in Q_CASES], ids=[c[0] for c in Q_CASES])
def test_q_values(q: str, echo: bytes) -> None:
    """A q from 0 to 1 with up to three decimals is kept and echoed (§20.10)."""
    out = run(contacts=(f"<sip:alice@10.0.0.1:5070>;q={q}",))
    assert out.reply.status == 200
    assert contacts_of(out) == [b"Contact: <sip:alice@10.0.0.1:5070>;expires=3600" + echo]


@pytest.mark.parametrize("q", BAD_Q)
def test_bad_q_is_400(q: str) -> None:
    """A q outside the §25.1 qvalue grammar is 400 and stores nothing."""
    out = run(contacts=(f"<sip:alice@10.0.0.1:5070>;q={q}",))
    assert out.reply.status == 400 and out.store is None


def test_q_without_value_is_400() -> None:
    """``;q`` alone is not a qvalue."""
    assert run(contacts=("<sip:alice@10.0.0.1:5070>;q",)).reply.status == 400


# -- Call-ID / CSeq ordering (§10.3 step 7) ---------------------------------------------------

ORDER_CASES = [
    # (id, stored call-id, stored cseq, request cseq, status, binding rewritten)
    ("same-callid-higher", "reg-1@10.0.0.1", 4, 5, 200, True),
    ("same-callid-equal-is-a-retransmission", "reg-1@10.0.0.1", 5, 5, 200, False),
    ("same-callid-lower", "reg-1@10.0.0.1", 6, 5, 500, False),
    ("other-callid-lower", "another@host", 9, 5, 200, True),
]


@pytest.mark.parametrize(("call_id", "stored_cseq", "cseq", "status", "rewritten"),
                         [c[1:] for c in ORDER_CASES], ids=[c[0] for c in ORDER_CASES])  # fmt: skip
def test_cseq_order(call_id: str, stored_cseq: int, cseq: int, status: int,
                    rewritten: bool) -> None:  # fmt: skip
    """Same Call-ID: a higher CSeq updates, an equal one is the same request again (answered
    from the stored binding), a lower one aborts with 500; another Call-ID always updates."""
    old = binding(call_id=call_id, cseq=stored_cseq)
    out = run((old,), contacts=("<sip:alice@10.0.0.1:5070>;expires=900",), cseq=cseq)
    assert out.reply.status == status
    if status == 500:
        assert out.store is None and out.reply.reason == "Server Internal Error"
    elif rewritten:
        assert out.store is not None and out.store[0].expires_at == NOW + 900
        assert out.store[0].cseq == cseq
    else:
        assert out.store is None
        assert contacts_of(out) == [b"Contact: <sip:alice@10.0.0.1:5070>;expires=600"]


def test_out_of_order_aborts_every_change() -> None:
    """One binding out of order fails the whole request: nothing of it is committed."""
    stored = (binding(cseq=9),)
    out = run(stored, contacts=("<sip:alice@10.0.0.9>", "<sip:alice@10.0.0.1:5070>"), cseq=5)
    assert out.reply.status == 500 and out.store is None


# -- the contact cap ------------------------------------------------------------------------


def test_cap_refuses_a_new_contact_with_403() -> None:
    """A REGISTER that would hold more than max_contacts_per_aor live bindings gets 403."""
    stored = tuple(binding(f"sip:alice@10.0.0.{i}", call_id=f"c{i}") for i in range(1, 4))
    out = run(stored, contacts=("<sip:alice@10.0.0.9>",), call_id="new")
    assert (out.reply.status, out.reply.reason, out.store) == (403, "Forbidden", None)


def test_cap_counts_removals_of_the_same_request() -> None:
    """Removing one and adding one in the same request stays within the cap."""
    stored = tuple(binding(f"sip:alice@10.0.0.{i}", call_id=f"c{i}") for i in range(1, 4))
    out = run(stored, contacts=("<sip:alice@10.0.0.1>;expires=0", "<sip:alice@10.0.0.9>"))
    assert out.reply.status == 200 and out.store is not None and len(out.store) == 3


def test_refresh_passes_above_a_lowered_cap() -> None:
    """Refreshes never fail the cap, even when the stored set is above it (cap lowered)."""
    stored = tuple(binding(f"sip:alice@10.0.0.{i}", call_id=f"c{i}") for i in range(1, 6))
    out = run(stored, contacts=("<sip:alice@10.0.0.1>",), call_id="c1", cseq=2)
    assert out.reply.status == 200 and out.store is not None and len(out.store) == 5


def test_expired_bindings_do_not_count() -> None:
    """Expired bindings are dropped before the cap is applied, and from the store."""
    stored = tuple(binding(f"sip:alice@10.0.0.{i}", expires_at=NOW - 1) for i in range(1, 4))
    out = run(stored, contacts=("<sip:alice@10.0.0.9>",), call_id="new")
    assert out.reply.status == 200
    assert out.store is not None and [b.contact for b in out.store] == ["sip:alice@10.0.0.9"]
    assert len(contacts_of(out)) == 1


# -- refusals before any storage ------------------------------------------------------------

REFUSALS = [
    ("require-unknown", {"extra": ("Require: foo, path",)}, 420),
    ("to-other-domain", {"to": "sip:alice@elsewhere.org"}, 404),
    ("to-tel", {"to": "tel:+15551234"}, 404),
    ("contact-malformed", {"contacts": ("<sip:alice@10.0.0.1 extra>",)}, 400),
    ("contact-too-long", {"contacts": (f"<sip:{'a' * 1100}@10.0.0.1>",)}, 400),
    ("path-malformed", {"extra": ("Path: <sip:edge.example.com;lr",)}, 400),
]


@pytest.mark.parametrize(("kw", "status"), [c[1:] for c in REFUSALS],
                         ids=[c[0] for c in REFUSALS])  # fmt: skip
def test_refusals(kw: dict[str, object], status: int) -> None:
    """Require (§10.3 step 2), AOR (step 5) and Contact/Path syntax are checked first."""
    plan = Registrar(CFG).prepare(parsed(register_bytes(**kw)))  # type: ignore[arg-type]
    assert isinstance(plan, reg.Reply) and plan.status == status


def test_420_names_the_unsupported_option() -> None:
    """420 carries Unsupported with the options we lack, not the ones we have (§8.2.2.3)."""
    out = run(extra=("Require: foo, path",))
    assert out.reply.headers == (b"Unsupported: foo",)


def test_require_path_is_supported() -> None:
    """Require: path is honoured (RFC 3327)."""
    assert run(extra=("Require: path",)).reply.status == 200


def test_query_lists_bindings_and_writes_nothing() -> None:
    """A REGISTER without Contact lists the live bindings and changes nothing (§10.3 step 6)."""
    stored = (binding(q=0.5), binding("sip:alice@10.0.0.2", expires_at=NOW - 1))
    out = run(stored, contacts=())
    assert out.reply.status == 200 and out.store is None
    assert contacts_of(out) == [b"Contact: <sip:alice@10.0.0.1:5070>;expires=600;q=0.5"]


# -- the 200 and what is stored -------------------------------------------------------------


def test_200_has_date_and_every_binding() -> None:
    """The 200 lists every current binding with its remaining expiry, and a Date (§10.3
    step 8), and builds into a response with build_response."""
    stored = (binding("sip:alice@10.0.0.2", expires_at=NOW + 99.2, call_id="x"),)
    req = parsed(register_bytes())
    out = Registrar(CFG).register(req, SRC, stored, NOW)
    assert sorted(contacts_of(out)) == [
        b"Contact: <sip:alice@10.0.0.1:5070>;expires=3600",
        b"Contact: <sip:alice@10.0.0.2>;expires=100",
    ]
    assert header(out, b"Date") == email.utils.formatdate(NOW, usegmt=True).encode()
    wire = build_response(req, out.reply.status, out.reply.reason, extra_headers=out.reply.headers)
    resp = parse_message(wire)
    assert len(resp.header_values("contact")) == 2


def test_source_path_and_call_id_are_stored() -> None:
    """A binding keeps where the REGISTER came from, its Path (echoed in the 200, RFC 3327
    §5.3), Call-ID and CSeq."""
    out = run(extra=("Path: <sip:edge1.example.com;lr>, <sip:edge2.example.com;lr>",
                     "Supported: timer, path"), cseq=7)  # fmt: skip
    assert out.store is not None
    (b,) = out.store
    assert (b.source, b.call_id, b.cseq) == (SRC, "reg-1@10.0.0.1", 7)
    assert b.path == ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr>")
    assert header(out, b"Path") == b"<sip:edge1.example.com;lr>, <sip:edge2.example.com;lr>"


def test_path_without_supported_is_stored_not_echoed() -> None:
    """RFC 3327 §5.3: without ``Supported: path`` the 200 carries no Path; the binding is
    registered through it all the same (docs/registrar.md)."""
    out = run(extra=("Path: <sip:edge1.example.com;lr>", "Supported: timer"))
    assert out.reply.status == 200 and header(out, b"Path") is None
    assert out.store is not None and out.store[0].path == ("<sip:edge1.example.com;lr>",)


def test_path_keeps_the_uri_only() -> None:
    """A Path entry is stored as ``<uri>``: its display name and header params are dropped,
    so nothing but the URI reaches the Route of a later request."""
    out = run(extra=('Path: "edge" <sip:10.0.0.9:5080;lr;transport=tcp>;foo=bar',))
    assert out.store is not None and out.store[0].path == ("<sip:10.0.0.9:5080;lr;transport=tcp>",)
    routes = reg.path_routes(out.store[0].path)
    assert routes is not None and [r.uri.host for r in routes] == ["10.0.0.9"]


@pytest.mark.parametrize("path", [
    "<tel:+15551234>",  # not SIP
    "<sip:edge.example.com;lr?Subject=x>",  # a headers part would ride into the Route
    ", ".join(f"<sip:e{i}.example.com;lr>" for i in range(reg.MAX_PATH_URIS + 1)),
    "<sip:" + "e" * reg.MAX_PATH_BYTES + ".example.com>",
])  # fmt: skip
def test_hostile_path_is_refused(path: str) -> None:
    """A Path that is not a few plain SIP URIs is a 400, and nothing is stored."""
    out = run(extra=(f"Path: {path}",))
    assert out.reply.status == 400 and out.store is None


def test_path_routes_of_a_forged_record() -> None:
    """A stored Path that does not parse as SIP URIs gives None (the contact is skipped)."""
    assert reg.path_routes(["<tel:+1555>"]) is None
    assert reg.path_routes(["<sip:a.example.com;lr"]) is None
    assert reg.path_routes([]) == []


def test_long_call_id_is_stored_hashed() -> None:
    """A long Call-ID is kept as a hash (only ever compared) and still orders requests."""
    cid = "x" * 300
    first = run(call_id=cid, cseq=2)
    assert first.store is not None and len(first.store[0].call_id) < 40
    assert run(first.store, call_id=cid, cseq=1).reply.status == 500


CONTACT_SAME = [
    ("brackets-vs-bare", "<sip:alice@10.0.0.1:5070>", "sip:alice@10.0.0.1:5070", True),
    ("host-case", "<sip:alice@HOST.example.com>", "<sip:alice@host.example.com>", True),
    ("escaped-user", "<sip:%61lice@10.0.0.1>", "<sip:alice@10.0.0.1>", True),
    ("param-case", "<sip:alice@10.0.0.1;transport=TCP>", "<sip:alice@10.0.0.1;transport=tcp>",
     True),
    ("param-order", "<sip:a@10.0.0.1;transport=tcp;x=1>", "<sip:a@10.0.0.1;x=1;transport=tcp>",
     True),
    ("user-case", "<sip:Alice@10.0.0.1>", "<sip:alice@10.0.0.1>", False),
    ("port", "<sip:alice@10.0.0.1:5070>", "<sip:alice@10.0.0.1:5071>", False),
    ("transport", "<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.1;transport=tcp>", False),
]


@pytest.mark.parametrize(("first", "second", "same"), [c[1:] for c in CONTACT_SAME],
                         ids=[c[0] for c in CONTACT_SAME])  # fmt: skip
def test_contact_comparison(first: str, second: str, same: bool) -> None:
    """A contact matches a binding by §19.1.4 URI comparison (case, escapes, parameters)."""
    a = run(contacts=(first,))
    assert a.store is not None
    b = run(a.store, contacts=(second,), cseq=2)
    assert b.store is not None and len(b.store) == (1 if same else 2)


def test_one_header_many_contacts_and_duplicates() -> None:
    """A comma list registers each contact; the same contact twice counts once (last wins)."""
    out = run(contacts=("<sip:a@10.0.0.1>, <sip:a@10.0.0.2>;expires=100",
                        "<sip:a@10.0.0.1>;expires=200"))  # fmt: skip
    assert out.store is not None
    assert {(b.contact, b.expires_at - NOW) for b in out.store} == {
        ("sip:a@10.0.0.1", 200), ("sip:a@10.0.0.2", 100)}  # fmt: skip


# -- AOR, key, lookup -----------------------------------------------------------------------

AOR_CASES = [
    ("plain", "sip:alice@example.com", "sip:alice@example.com"),
    ("host-case", "sip:alice@EXAMPLE.com", "sip:alice@example.com"),
    ("scheme-case", "SIP:alice@example.com", "sip:alice@example.com"),
    ("params-dropped", "sip:alice@example.com;user=phone;transport=tcp", "sip:alice@example.com"),
    ("escapes-undone", "sip:%61l%69ce@example.com", "sip:alice@example.com"),
    ("user-case-kept", "sip:Alice@example.com", "sip:Alice@example.com"),
    ("password-dropped", "sip:alice:secret@example.com", "sip:alice@example.com"),
    ("port-kept", "sip:alice@example.com:5070", "sip:alice@example.com:5070"),
    ("sips", "sips:alice@example.com", "sips:alice@example.com"),
    ("no-user", "sip:example.com", "sip:example.com"),
]


@pytest.mark.parametrize(("uri", "aor"), [c[1:] for c in AOR_CASES], ids=[c[0] for c in AOR_CASES])
def test_canonical_aor(uri: str, aor: str) -> None:
    """§10.3 step 5: parameters removed, escapes converted; host and scheme ignore case."""
    assert Registrar(CFG).aor_of(parse_uri(uri)) == aor


def test_aor_of_other_domains_is_none() -> None:
    """Only URIs of our domains have an AOR here; empty domains mean our listen addresses."""
    r = Registrar(RegistrarConfig(), our_hosts=["127.0.0.1", "::1"])
    assert r.aor_of(parse_uri("sip:bob@127.0.0.1:5060")) == "sip:bob@127.0.0.1:5060"
    assert r.serves(parse_uri("sip:bob@[::1]"))
    assert r.aor_of(parse_uri("sip:bob@example.com")) is None
    assert r.aor_of(parse_uri("tel:+15551234")) is None


@pytest.mark.parametrize(("aor", "hashed"), [
    ("sip:alice@example.com", False),
    ("sip:" + "a" * 300 + "@example.com", True),
    ("sip:al ice@example.com", True),
    ("sip:al\x01ice@example.com", True),
    ("sip:é@example.com", True),
], ids=["plain", "long", "space", "control", "non-ascii"])  # fmt: skip
def test_record_key(aor: str, hashed: bool) -> None:
    """Keys are ``loc:<aor>``, hashed when the AOR would break the cacheDB key rule."""
    key = reg.record_key(aor)
    assert key.startswith("loc:") and len(key.encode()) <= reg.MAX_KEY_BYTES
    assert (key == "loc:" + aor) is not hashed
    assert reg.record_key(aor) == key


def test_lookup_orders_by_q_then_recency() -> None:
    """Highest q first (no q ranks as 1.0); equal q: most recently registered first."""
    bs = [
        binding("sip:a@10.0.0.1", q=0.1), binding("sip:a@10.0.0.2", q=0.9),
        binding("sip:a@10.0.0.3"), binding("sip:a@10.0.0.4", q=0.9, registered_at=NOW),
        binding("sip:a@10.0.0.5", q=1.0, expires_at=NOW),
    ]  # fmt: skip
    assert [b.contact for b in reg.lookup(bs, NOW)] == [
        "sip:a@10.0.0.3", "sip:a@10.0.0.4", "sip:a@10.0.0.2", "sip:a@10.0.0.1"]  # fmt: skip


def test_record_ttl() -> None:
    """The record lives as long as its longest binding plus record_linger_s."""
    r = Registrar(CFG)
    assert r.record_ttl_s([binding(expires_at=NOW + 50), binding(expires_at=NOW + 70)],
                          NOW) == 70 + CFG.record_linger_s  # fmt: skip
    assert r.record_ttl_s([], NOW) == CFG.record_linger_s


# -- the record -----------------------------------------------------------------------------

# the utf-8 codec leaves out lone surrogates, which no SIP text can carry
texts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
bindings_st = st.builds(
    Binding,
    contact=texts,
    expires_at=st.floats(0, 2e9, allow_nan=False),
    q=st.none() | st.integers(0, 1000).map(lambda n: n / 1000),
    call_id=texts,
    cseq=st.integers(0, 2**32 - 1),
    source=st.builds(Source, st.sampled_from(["udp", "tcp"]), texts, st.integers(0, 65535),
                     st.just("") | texts),
    path=st.lists(texts, max_size=reg.MAX_PATH_URIS).map(tuple),
    registered_at=st.floats(0, 2e9, allow_nan=False),
)


@given(st.lists(bindings_st, max_size=5))
def test_encode_decode_round_trip(bs: list[Binding]) -> None:
    """What encode writes, decode reads back exactly."""
    assert reg.decode(reg.encode(bs)) == reg.Decoded(tuple(bs))


@given(st.binary(max_size=200))
def test_decode_garbage_is_empty_with_error(data: bytes) -> None:
    """decode never raises: bytes that are not a record read as empty, with the reason."""
    d = reg.decode(data)
    assert isinstance(d, reg.Decoded)
    assert d.error is not None or all(isinstance(b, Binding) for b in d.bindings)


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
           | texts | st.binary(max_size=8))  # fmt: skip
shapes = st.recursive(scalars, lambda kids: st.lists(kids, max_size=11)
                      | st.dictionaries(texts, kids, max_size=3), max_leaves=30)  # fmt: skip
# rows of the right length with wrong items reach the per-field checks
rows = st.lists(st.lists(scalars | st.lists(scalars, max_size=2), min_size=10, max_size=11),
                max_size=3)  # fmt: skip


@given(shapes | rows)
def test_decode_wrong_shapes(obj: object) -> None:
    """Well-formed msgpack of the wrong shape is refused the same way, never raising."""
    d = reg.decode(msgpack.packb([1, obj]))
    assert d.error is not None or all(isinstance(b, Binding) for b in d.bindings)


@pytest.mark.parametrize(("data", "error"), [
    (msgpack.packb([2, []]), "record version 2"),
    (msgpack.packb({"v": 1}), "not a location record"),
    (msgpack.packb([1, [["sip:a@b", 1.0, 2000, "c", 1, "udp", "1.2.3.4", 5060, [], 0.0]]]),
     "binding 0"),
    (msgpack.packb([1, [["sip:a@b", 1.0, 1000, "c", 1, "tcp", "1.2.3.4", 5060, [], 0.0, 7]]]),
     "binding 0"),
    (msgpack.packb([1, [["sip:a@b", 1.0, 1000, "c", 1, "tcp", "1.2.3.4", 5060, [], 0.0,
                         "x" * 129]]]), "binding 0"),
    (b"\xc1", "not msgpack"),
    (b"", "not msgpack"),
], ids=["version", "map", "bad-q", "conn-not-text", "conn-too-long", "reserved-byte",
        "empty"])  # fmt: skip
def test_decode_reports(data: bytes, error: str) -> None:
    """The reason names what was wrong."""
    d = reg.decode(data)
    assert d.bindings == () and d.error is not None and d.error.startswith(error)


# -- any sequence of REGISTERs --------------------------------------------------------------

CONTACT_POOL = [
    "<sip:alice@10.0.0.1>", "<sip:alice@10.0.0.2;transport=tcp>", "<sip:ALICE@10.0.0.3:5070>",
    "sip:alice@10.0.0.1", "<sip:%61lice@10.0.0.2>",
]  # fmt: skip
EXPIRES_POOL = [None, "0", "30", "60", "90", "300", "100000"]

Op = tuple[str, list[tuple[str, str | None]], str | None]
Step = tuple[Op, str, int, float]
op_st: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("contacts"), st.lists(st.tuples(st.sampled_from(CONTACT_POOL),
                                                      st.sampled_from(EXPIRES_POOL)), max_size=4),
              st.sampled_from(EXPIRES_POOL)),
    st.tuples(st.just("star"), st.just([]), st.just("0")),
)  # fmt: skip
step_st = st.tuples(op_st, st.sampled_from(["c1", "c2", "c3"]), st.integers(1, 6),
                    st.floats(0, 200, allow_nan=False))  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(step_st, min_size=1, max_size=12))
def test_any_sequence_keeps_the_invariants(steps: list[Step]) -> None:
    """Whatever REGISTERs arrive: stored bindings are live, each contact once, within the cap;
    a 200 lists exactly the stored live bindings; ``*`` with Expires: 0 empties the AOR."""
    r = Registrar(CFG)
    stored: tuple[Binding, ...] = ()
    now = NOW
    for (kind, contacts, expires), call_id, cseq, dt in steps:
        now += dt
        if kind == "star":
            values: tuple[str, ...] = ("*",)
        else:
            values = tuple(c if e is None else f"{c};expires={e}" for c, e in contacts)
        req = parsed(register_bytes(values, expires=expires, call_id=call_id, cseq=cseq))
        out = r.register(req, SRC, stored, now)
        if out.store is not None:
            assert out.reply.status == 200
            stored = out.store
            assert all(b.expires_at > now for b in stored)
        live = [b for b in stored if b.expires_at > now]
        keys = [reg.contact_key_text(b.contact) for b in live]
        assert len(keys) == len(set(keys))
        assert len(live) <= CFG.max_contacts_per_aor
        if out.reply.status == 200:
            assert sorted(contacts_of(out)) == sorted(reg.contact_line(b, now) for b in live)
            if kind == "star":
                assert stored == () and contacts_of(out) == []


def test_record_without_conn_tag_still_reads() -> None:
    """A record written before connection tags (10-item bindings) decodes, with no tag."""
    row = ["sip:a@b", 1.0, 1000, "c", 1, "tcp", "1.2.3.4", 5060, [], 0.0]
    (b,) = reg.decode(msgpack.packb([1, [row]])).bindings
    assert b.source == Source("tcp", "1.2.3.4", 5060) and b.source.conn == ""
    assert msgpack.unpackb(reg.encode([b]))[1][0] == row  # and is written back the same
