"""Keep-alives to contacts behind NAT (workers/registrar/natping.py), without sockets."""

from __future__ import annotations

import itertools

from conf.settings import Listener, Nat
from ingress.sip.parser import parse_message
from workers.registrar.natping import CRLF_PING, NATPING_BRANCH_PREFIX, Dest, NatPinger

LISTEN = [Listener(transport="udp", address="127.0.0.1", port=5060),
          Listener(transport="tcp", address="127.0.0.1", port=5060)]  # fmt: skip
UDP = Dest("ing-1", "udp", "127.0.0.9", 40000, 0)


def pinger(**kw: object) -> NatPinger:
    cfg = Nat(ping_interval_s=kw.pop("interval", 10.0), **kw)  # type: ignore[arg-type]
    return NatPinger(cfg, LISTEN, instance="t")


def run(p: NatPinger, until: float, step: float = 0.05) -> list[tuple[float, object]]:
    """Every ping sent from t=0 to ``until``, driving the pinger by its own deadlines."""
    sent: list[tuple[float, object]] = []
    now = 0.0
    while True:
        at = p.next_deadline()
        if at is None or at > until:
            return sent
        now = max(now, at)
        sent += [(now, out) for out in p.due(now)]


def test_pings_every_interval_to_the_source() -> None:
    """A noted contact is pinged once per interval at the address its REGISTER came from."""
    p = pinger(ping_method="crlf")
    p.note("sip:bob@x", "sip:bob@10.0.0.5:5060", "k", UDP, 3600, 0.0)
    sent = run(p, 100.0)
    assert len(sent) == 10
    for _, (ingress, meta, data) in sent:  # type: ignore[misc]
        assert ingress == "ing-1" and meta[:4] == ["udp", "127.0.0.9", 40000, 0]
        assert data == CRLF_PING
    gaps = {round(b[0] - a[0], 6) for a, b in itertools.pairwise(sent)}
    assert gaps == {10.0}  # from the schedule: no drift


def test_spread_and_bounded_per_tick() -> None:
    """Many contacts are spread over the interval and never more than the cap leave at once."""
    p = pinger(ping_method="crlf", ping_max_per_tick=20)
    for i in range(500):
        p.note(f"sip:u{i}@x", f"sip:u{i}@10.0.0.{i % 250}", "k", UDP, 3600, 0.0)
    sent = run(p, 10.0)
    assert len(sent) == 500
    per_instant: dict[float, int] = {}
    for t, _ in sent:
        per_instant[t] = per_instant.get(t, 0) + 1
    assert max(per_instant.values()) <= 20
    first_half = sum(1 for t, _ in sent if t < 5.0)
    assert 150 < first_half < 350  # spread, not all at the start


def test_table_bounded() -> None:
    """Past max_pinged_contacts a new contact is refused and counted."""
    p = pinger(max_pinged_contacts=3)
    assert all(p.note(f"a{i}", "sip:a@10.0.0.1", "k", UDP, 60, 0.0) for i in range(3))
    assert not p.note("a9", "sip:a@10.0.0.1", "k", UDP, 60, 0.0)
    assert len(p) == 3 and p.counters["nat_ping_table_full"] == 1
    assert p.note("a0", "sip:a@10.0.0.2", "k", UDP, 60, 0.0)  # a refresh still passes


def test_expired_and_forgotten_stop() -> None:
    """A contact is pinged only until its binding expires, or until forgotten."""
    p = pinger(ping_method="crlf")
    p.note("sip:a@x", "sip:a@10.0.0.1", "k1", UDP, 25, 0.0)
    p.note("sip:b@x", "sip:b@10.0.0.2", "k2", UDP, 3600, 0.0)
    p.forget("sip:b@x")
    sent = run(p, 100.0)
    assert 2 <= len(sent) <= 3 and len(p) == 0


def test_options_answered_keeps_unanswered_drops() -> None:
    """OPTIONS: an answered contact stays; one that misses ping_drop_after in a row is dropped."""
    p = pinger(ping_drop_after=2)
    p.note("sip:a@x", "sip:a@10.0.0.1:5060", "ka", UDP, 3600, 0.0)
    p.note("sip:b@x", "sip:b@10.0.0.2:5060", "kb", UDP, 3600, 0.0)
    now = 0.0
    while now < 60.0:
        at = p.next_deadline()
        assert at is not None
        now = at
        for _, _, data in p.due(now):
            req = parse_message(data)
            assert req.method == "OPTIONS"
            branch = req.vias[0].branch or ""
            assert branch.startswith(NATPING_BRANCH_PREFIX)
            if req.uri.user == "a":
                p.answered(branch, now)
    assert p.drops == [("sip:b@x", "sip:b@10.0.0.2:5060")]
    assert len(p) == 1 and p.counters["nat_ping_answers"] >= 5


def test_forged_answer_ignored() -> None:
    """An answer with a branch we did not send changes nothing."""
    p = pinger(ping_drop_after=1)
    p.note("sip:a@x", "sip:a@10.0.0.1", "k", UDP, 3600, 0.0)
    p.answered(NATPING_BRANCH_PREFIX + "nope", 0.0)
    run(p, 25.0)
    assert p.drops == [("sip:a@x", "sip:a@10.0.0.1")]


def test_note_nat_from_a_register() -> None:
    """A REGISTER from behind NAT notes its contacts; one with Path (an edge proxy keeps
    those alive), one not behind NAT, and an expires=0 removal are not pinged."""
    from conf.settings import Registrar as RegistrarConfig
    from workers.proxy import Inbound
    from workers.registrar.natping import note_nat
    from workers.registrar.register import Registrar

    registrar = Registrar(RegistrarConfig(enabled=True), ["127.0.0.1"])
    tests = frozenset(Nat().detect)

    def register(contact: str, extra: str = "", src: str = "127.0.0.9") -> bytes:
        return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {src}:40000;branch=z9hG4bK1\r\n"
                "Max-Forwards: 70\r\nFrom: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
                f"Call-ID: r1\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\n{extra}"
                "Content-Length: 0\r\n\r\n").encode()  # fmt: skip

    inb = Inbound("ing-1", "udp", "127.0.0.9", 40000, 0, "127.0.0.1", 5060)
    p = pinger()
    note_nat(p, registrar, parse_message(register("<sip:bob@10.0.0.5:5060>")), inb, tests, 0.0)  # type: ignore[arg-type]
    assert len(p) == 1
    path = "Path: <sip:edge.example;lr>\r\n"
    note_nat(p, registrar, parse_message(register("<sip:b2@10.0.0.6>", path)), inb, tests, 0.0)  # type: ignore[arg-type]
    note_nat(p, registrar, parse_message(register("<sip:b3@127.0.0.9:40000>")), inb, tests, 0.0)  # type: ignore[arg-type]
    assert len(p) == 1
    removal = register("<sip:bob@10.0.0.5:5060>;expires=0")
    note_nat(p, registrar, parse_message(removal), inb, tests, 0.0)  # type: ignore[arg-type]
    assert len(p) == 0
