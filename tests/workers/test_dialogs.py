"""The dialog table (dialogstate/table.py) fed real SIP bytes, time as numbers: scenarios, every
(state, input) pair of the machine, and invariants over random call sequences."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conf.settings import DialogProfile
from dialogstate.record import TRANSITIONS, Input, State
from dialogstate.table import DialogTable
from ingress.sip.parser import parse_message

from .dialog_helpers import (
    CALLEE,
    CALLER,
    OUR_RR,
    T0,
    W0,
    Call,
    dialog_settings,
    is_us,
    table,
    via_for,
)  # fmt: skip
from .helpers import parsed_req

DOC = Path(__file__).resolve().parents[2] / "docs" / "dialogs.md"

# -- scenarios ---------------------------------------------------------------------------------

Step = Callable[[DialogTable, Call], Any]


def resp(status: int, t: float = 1.0, **kw: Any) -> Step:
    return lambda tb, c: tb.receive_response(c.response(status, **kw), T0 + t, W0 + t)


def req(method: str, cseq: int, t: float = 10.0, **kw: Any) -> Step:
    return lambda tb, c: tb.receive_request(c.in_dialog(method, cseq, **kw), T0 + t, W0 + t)


def final(status: int, t: float = 2.0, local: bool = False) -> Step:
    return lambda tb, c: tb.final_sent(c.invite(), status, T0 + t, W0 + t, local=local)


def cancel(t: float = 1.5) -> Step:
    return lambda tb, c: tb.receive_request(c.cancel(), T0 + t, W0 + t)


def in_dialog_final(status: int, t: float = 10.0) -> Step:
    return lambda tb, c: tb.final_sent(c.in_dialog("INFO", 2), status, T0 + t, W0 + t, local=True)


SCENARIOS: list[tuple[str, list[Step], tuple[str, str] | None]] = [
    ("bye-from-caller", [resp(180, 0.5), resp(200), req("BYE", 2)], ("bye", "caller")),
    ("bye-from-callee", [resp(200), req("BYE", 1, from_caller=False)], ("bye", "callee")),
    ("busy", [resp(180), resp(486), final(486)], ("failure:486", "callee")),
    ("failover-503-then-answer", [resp(503), resp(200, 3)], None),
    ("local-408", [resp(180), final(408, local=True)], ("failure:408", "proxy")),
    ("cancel-then-487", [resp(180), cancel(), final(487)], ("cancel", "caller")),
    ("cancel-crossed-by-200", [resp(180), cancel(), resp(200, 1.6)], None),
    ("cancel-before-1xx", [cancel(0.2), final(487, local=True)], ("cancel", "caller")),
    ("481-in-dialog", [resp(200), req("INFO", 2), resp(481, 11, cseq=2, method="INFO")],
     ("timeout", "callee")),
    ("408-from-caller", [resp(200), req("INFO", 1, from_caller=False),
                         resp(408, 11, cseq=1, method="INFO", to_caller=False)],
     ("timeout", "caller")),
    ("local-408-in-dialog", [resp(200), in_dialog_final(408)], ("timeout", "proxy")),
    ("early-bye", [resp(180), req("BYE", 2, t=3)], ("bye", "caller")),
    ("other-fork-bye-ignored", [resp(180, fork=1), resp(200), req("BYE", 2, fork=1)], None),
    ("2xx-retransmission", [resp(200), resp(200, 1.5), resp(180, 1.6)], None),
    ("486-after-200-ignored", [resp(200), final(486)], None),
]


@pytest.mark.parametrize(("steps", "outcome"), [(s, o) for _, s, o in SCENARIOS],
                         ids=[i for i, _, _ in SCENARIOS])  # fmt: skip
def test_scenarios(steps: list[Step], outcome: tuple[str, str] | None) -> None:
    """Each call flow ends the dialog with the right cause and side, or leaves it live."""
    t, c = table(), Call()
    c.start(t)
    for step in steps:
        step(t, c)
    cdrs = t.take_cdrs()
    if outcome is None:
        assert cdrs == [] and len(t) == 1
        return
    assert [(x["cause"], x["ended_by"]) for x in cdrs] == [outcome]
    assert len(t) == 0 and t.stats()["early"] == 0


def test_cdr_fields() -> None:
    """A CDR carries the URIs, both addresses, ISO times and durations of the call."""
    t, c = table(), Call()
    c.start(t)
    resp(180, 0.5)(t, c)
    resp(200, 1.25)(t, c)
    req("BYE", 2, t=61.25, from_caller=False)(t, c)
    (cdr,) = t.take_cdrs()
    assert cdr == {
        "call_id": c.call_id, "from_tag": c.ftag, "from": "sip:alice@example.com",
        "to": "sip:bob@example.com", "source": "10.0.0.1:5070", "destination": "127.0.0.1:7000",
        "start": "2023-11-14T22:13:20.000Z", "answer": "2023-11-14T22:13:21.250Z",
        "end": "2023-11-14T22:14:21.250Z", "setup_ms": 1250, "talk_ms": 60000,
        "cause": "bye", "ended_by": "callee",
    }  # fmt: skip


def test_unanswered_cdr_has_no_answer() -> None:
    """A failed call's setup runs to its end and it has no talk time."""
    t, c = table(), Call()
    c.start(t)
    final(404, 0.3)(t, c)
    (cdr,) = t.take_cdrs()
    assert (cdr["answer"], cdr["setup_ms"], cdr["talk_ms"]) == (None, 300, 0)


def test_failover_moves_the_callee() -> None:
    """A second attempt to another destination is where the BYE and the CDR point."""
    t, c = table(), Call()
    c.start(t)
    other = ("ing-1", ("udp", "127.0.0.1", 7001, 0, "127.0.0.1", 5999))
    t.invite_forwarded(c.invite(), caller=CALLER, callee=other, source_ip=c.src,
                       source_port=5070, destination="127.0.0.1:7001", now=T0 + 1, wall=W0 + 1)
    resp(200, 2)(t, c)
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None and dlg.callee == other
    assert [b.dest for b in t.build_byes(dlg, via_for)] == [CALLER, other]
    req("BYE", 2)(t, c)
    assert t.take_cdrs()[0]["destination"] == "127.0.0.1:7001"
    assert t.stats()["processed"] == 1


def test_forks_collapse_to_the_answer() -> None:
    """Early dialogs of two forks are one dialog; the fork that answers gives its To-tag."""
    t, c = table(), Call()
    c.start(t)
    resp(180, fork=1)(t, c)
    resp(183, fork=2)(t, c)
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None and dlg.state == State.EARLY and dlg.to_tag == c.ttag(2)
    resp(200, fork=1)(t, c)
    assert (dlg.state, dlg.to_tag) == (State.CONFIRMED, c.ttag(1))
    resp(200, 1.2, fork=2)(t, c)  # the other fork answers too: not ours
    assert dlg.to_tag == c.ttag(1)


# -- lifetime and BYEs -------------------------------------------------------------------------


def test_expiry_sends_two_byes() -> None:
    """At its deadline a confirmed dialog yields a BYE to each side and a CDR 'expired'."""
    t, c = table(lifetime_s=60), Call(up=["<sip:10.0.0.9;lr>"],
                                      down=["<sip:10.0.0.20;lr>", "<sip:10.0.0.21;lr>"])
    c.confirmed(t)
    req("INFO", 4, t=5)(t, c)
    req("INFO", 9, t=6, from_caller=False)(t, c)
    assert t.next_deadline() == T0 + 1 + 60
    assert t.expire(T0 + 60.5, W0 + 60.5, via_for) == []
    (exp,) = t.expire(T0 + 61, W0 + 61, via_for)
    to_caller, to_callee = exp.byes
    assert (to_caller.side, to_caller.dest, to_callee.side, to_callee.dest) == (
        "caller", CALLER, "callee", CALLEE)
    a = parsed_req(to_caller.data)
    assert (a.method, a.uri.raw, a.from_.tag, a.to.tag, a.cseq, a.cseq_method) == (
        "BYE", "sip:alice@10.0.0.1:5070", c.ttag(), c.ftag, 10, "BYE")
    assert a.header_values("route") == [b"<sip:10.0.0.9;lr>"]
    b = parsed_req(to_callee.data)
    assert (b.uri.raw, b.from_.tag, b.to.tag, b.cseq) == ("sip:bob@127.0.0.1:7000", c.ftag,
                                                          c.ttag(), 5)
    assert b.header_values("route") == [b"<sip:10.0.0.21;lr>", b"<sip:10.0.0.20;lr>"]
    for m in (a, b):
        assert m.call_id == c.call_id and m.max_forwards == 70 and m.body == b""
        assert m.vias[0].branch == to_caller.branch if m is a else to_callee.branch
        assert m.header("reason") == b'SIP;cause=408;text="dialog lifetime expired"'
    (cdr,) = t.take_cdrs()
    assert (cdr["cause"], cdr["ended_by"]) == ("expired", "proxy")
    assert t.stats()["expired"] == 1 and len(t) == 0 and t.next_deadline() is None


def test_strict_router_takes_the_request_uri() -> None:
    """§12.2.1.1: a first route without lr becomes the Request-URI, the target goes last."""
    t, c = table(lifetime_s=60), Call(down=["<sip:10.0.0.20>"])
    c.confirmed(t)
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None
    bye = parsed_req(t.build_byes(dlg, via_for)[1].data)
    assert bye.uri.raw == "sip:10.0.0.20"
    assert bye.header_values("route") == [b"<sip:bob@127.0.0.1:7000>"]


def test_early_expiry_has_no_bye() -> None:
    """An unanswered dialog past early_lifetime_s ends with no BYE."""
    t, c = table(), Call()
    c.start(t)
    resp(180)(t, c)
    (exp,) = t.expire(T0 + 300, W0 + 300, via_for)
    assert exp.byes == () and t.take_cdrs()[0]["cause"] == "expired"


def test_route_lifetime_and_override() -> None:
    """The route's lifetime applies; an explicit lifetime_s wins over it."""
    t = table(route_lifetime_s=120)
    c1, c2 = Call(1), Call(2)
    c1.start(t, route="default")
    c2.start(t, route="default", lifetime_s=30)
    for c in (c1, c2):
        resp(200)(t, c)
    assert t.get(c1.call_id, c1.ftag).deadline == T0 + 121  # type: ignore[union-attr]
    assert t.get(c2.call_id, c2.ftag).deadline == T0 + 31  # type: ignore[union-attr]


@pytest.mark.parametrize(("steps", "deadline"), [
    ([resp(200, extra=("Session-Expires: 90;refresher=uac",))], T0 + 1 + 90),
    ([resp(200), req("INVITE", 2, t=50, extra=("Session-Expires: 120",))], T0 + 50 + 120),
    ([resp(200), req("UPDATE", 1, t=50, from_caller=False, extra=("x: 45",))], T0 + 95),
    ([resp(200), req("INVITE", 2, t=50),
      resp(200, 51, cseq=2, extra=("Session-Expires: 200;refresher=uas",))], T0 + 251),
    ([resp(200), req("INVITE", 2, t=50)], T0 + 1 + 3600),
], ids=["in-2xx", "re-invite", "update-compact-form", "re-invite-2xx", "no-se-no-refresh"])  # fmt: skip
def test_session_expires_refreshes(steps: list[Step], deadline: float) -> None:
    """RFC 4028: Session-Expires in a 2xx, re-INVITE or UPDATE moves the deadline."""
    t, c = table(), Call()
    c.start(t)
    for step in steps:
        step(t, c)
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None and dlg.deadline == deadline
    while (at := t.next_deadline()) is not None and at < deadline:
        assert t.expire(at, W0 + at - T0, via_for) == []  # older entries re-filed
    assert t.next_deadline() == deadline


def test_target_refresh_changes_the_bye() -> None:
    """A re-INVITE's Contact is the new remote target of its sender (§12.2.2)."""
    t, c = table(), Call()
    c.confirmed(t)
    moved = "Contact: <sip:alice@10.0.0.7:5090>"
    req("INVITE", 2, t=5, extra=(moved,))(t, c)
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None
    assert parsed_req(t.build_byes(dlg, via_for)[0].data).uri.raw == "sip:alice@10.0.0.7:5090"


def test_expire_batch_is_bounded() -> None:
    """expire fires at most max_batch dialogs; next_deadline says the rest are due."""
    t = table(lifetime_s=10)
    for n in range(5):
        Call(n).confirmed(t)
    assert len(t.expire(T0 + 100, W0 + 100, via_for, max_batch=3)) == 3
    assert t.next_deadline() == T0 + 11
    assert len(t.expire(T0 + 100, W0 + 100, via_for, max_batch=3)) == 2


def test_heap_stays_bounded_under_refreshes() -> None:
    """Refreshing one dialog many times does not grow the heap without bound."""
    t, c = table(), Call()
    c.confirmed(t)
    for i in range(1000):
        req("UPDATE", 2 + i, t=5 + i, extra=("Session-Expires: 90",))(t, c)
    assert len(t._heap) <= 2 * len(t) + 65
    dlg = t.get(c.call_id, c.ftag)
    assert dlg is not None and dlg.deadline == T0 + 5 + 999 + 90


def test_a_later_deadline_is_refiled() -> None:
    """A deadline moved later keeps its old entry; expire re-files it, never fires early."""
    t, c = table(), Call()
    c.confirmed(t)  # the early entry (300 s) stays; the confirmed deadline is 3601 s
    assert t.next_deadline() == T0 + 300
    assert t.expire(T0 + 300, W0 + 300, via_for) == [] and len(t) == 1
    assert t.next_deadline() == T0 + 3601


def test_full_table_refuses() -> None:
    """Past max_dialogs a new call is refused with 503 before forwarding."""
    t = table(max_dialogs=2)
    Call(1).start(t)
    Call(2).start(t)
    assert t.admit(Call(3).invite(), source_ip="10.0.0.1") == (503, "Service Unavailable")
    assert t.stats()["refused"] == 1


def test_requests_that_are_not_ours() -> None:
    """Unknown Call-IDs, initial requests and ACKs change nothing."""
    t, c = table(), Call()
    c.confirmed(t)
    t.take_deltas()
    assert t.receive_request(Call(9).in_dialog("BYE", 2), T0, W0) is None
    assert t.receive_request(c.invite(), T0, W0) is None
    assert t.receive_request(c.in_dialog("ACK", 1), T0, W0) is None
    assert t.final_sent(Call(9).invite(), 486, T0, W0) is None
    assert t.take_deltas() == [] and len(t) == 1


# -- the machine: every (state, input) pair -----------------------------------------------------


def _reach(t: DialogTable, c: Call, state: State) -> None:
    c.start(t)
    if state != State.UNCONFIRMED:
        resp(180)(t, c)
    if state in (State.CONFIRMED, State.TERMINATED):
        resp(200, 1.5)(t, c)
    if state == State.TERMINATED:
        req("BYE", 2, t=3)(t, c)
    t.take_cdrs()


def _drive(t: DialogTable, c: Call, inp: Input) -> None:
    dlg = t.get(c.call_id, c.ftag)
    now = T0 + 20
    drivers: dict[Input, Callable[[], Any]] = {
        Input.PROVISIONAL: lambda: resp(183, 20, fork=2)(t, c),
        Input.ANSWER: lambda: resp(200, 20)(t, c),
        Input.FAILURE: lambda: final(486, 20)(t, c),
        Input.CANCEL: lambda: cancel(20)(t, c),
        Input.BYE: lambda: req("BYE", 5, t=20)(t, c),
        Input.REQUEST: lambda: req("INFO", 5, t=20)(t, c),
        Input.REFRESH: lambda: req("UPDATE", 5, t=20, extra=("Session-Expires: 90",))(t, c),
        Input.TIMEOUT: lambda: resp(481, 20, cseq=5, method="INFO")(t, c),
        Input.EXPIRE: lambda: t.expire(dlg.deadline if dlg else now, W0 + 20, via_for),
    }
    drivers[inp]()


@hsettings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(TRANSITIONS, key=lambda k: (k[0], k[1].name))))
def test_every_state_input_pair(pair: tuple[State, Input]) -> None:
    """Driving a dialog in each state with each input (as SIP bytes) lands where the table says,
    with a CDR exactly when it terminates."""
    state, inp = pair
    t, c = table(), Call()
    _reach(t, c, state)
    _drive(t, c, inp)
    _, nxt = TRANSITIONS[pair]
    dlg = t.get(c.call_id, c.ftag)
    cdrs = t.take_cdrs()
    if nxt == State.TERMINATED:
        assert dlg is None and len(cdrs) == (0 if state == State.TERMINATED else 1)
    else:
        assert dlg is not None and dlg.state == nxt and cdrs == []


def test_table_is_total() -> None:
    """Every (state, input) pair is defined, so nothing a peer sends can be undefined."""
    assert set(TRANSITIONS) == {(s, i) for s in State for i in Input}


def test_docs_table_matches_the_code() -> None:
    """docs/dialogs.md shows the machine exactly as TRANSITIONS says."""
    rows = re.findall(r"^\| (\w+) \| ([^|]+?) \| ([^|]+?) \| (\w+) \|$", DOC.read_text(), re.MULTILINE)
    doc = {(State[s.upper()], Input[i.strip().upper()]): (None if e == "—" else e, State[n.upper()])
           for s, i, e, n in rows if s != "state"}  # fmt: skip
    assert doc == TRANSITIONS


# -- invariants over random sequences -----------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["invite", "1xx", "2xx", "fail", "bye_a", "bye_b",
                                          "cancel", "reinvite", "tick"]),
                         st.integers(0, 4)), max_size=40)  # fmt: skip
PROFILES = [DialogProfile(name="all"),
            DialogProfile(name="caller", with_value=True, value_from="from_user")]


@hsettings(max_examples=150, deadline=None)
@given(OPS)
def test_one_cdr_per_dialog_and_profiles_track_live(ops: list[tuple[str, int]]) -> None:
    """Any sequence gives exactly one CDR per dialog that started, profile sizes equal to the
    live dialogs at every step, BYEs that parse with the dialog's tags, and a replica fed the
    deltas (through msgpack) that holds the same dialogs and builds the same BYEs."""
    t = table(profiles=PROFILES, lifetime_s=30)
    replica = DialogTable(dialog_settings(profiles=PROFILES, lifetime_s=30), is_us=is_us)
    calls = {n: Call(n, from_user=f"u{n % 2}") for n in range(5)}
    started: set[int] = set()
    cdrs: Counter[str] = Counter()
    now, cseq = T0, Counter[int]()
    for op, n in ops:
        c = calls[n]
        now += 1
        wall = W0 + now - T0
        _apply_op(t, c, op, n, now, wall, started, cseq)
        for exp in t.expire(now, wall, via_for):
            _check_byes(t, exp.byes, calls[int(exp.call_id.split("-")[1].split("@")[0])])
        _collect(t, cdrs)
        _check_profiles(t)
        _replicate(t, replica, now, wall)
    assert _snap(replica, now) == _snap(t, now)
    for dlg in list(t._table.values()):
        other = replica.get(dlg.call_id, dlg.from_tag)
        assert other is not None
        assert replica.build_byes(other, via_for) == t.build_byes(dlg, via_for)
    t.expire(now + 1e6, W0 + 1e6, via_for, max_batch=100)
    _collect(t, cdrs)
    assert cdrs == Counter({calls[n].call_id: 1 for n in started})
    assert len(t) == 0 and t.profiles.view() == {"all": 0, "caller": {}}


def _apply_op(t: DialogTable, c: Call, op: str, n: int, now: float, wall: float,
              started: set[int], cseq: Counter[int]) -> None:  # fmt: skip
    if op == "invite":
        if n in started:
            return
        started.add(n)
        t.invite_forwarded(c.invite(), caller=CALLER, callee=CALLEE, source_ip=c.src,
                           source_port=5070, destination="127.0.0.1:7000", now=now, wall=wall)
        return
    cseq[n] += 1
    msgs: dict[str, Callable[[], Any]] = {
        "1xx": lambda: t.receive_response(c.response(180), now, wall),
        "2xx": lambda: t.receive_response(c.response(200), now, wall),
        "fail": lambda: t.final_sent(c.invite(), 480, now, wall),
        "bye_a": lambda: t.receive_request(c.in_dialog("BYE", 1 + cseq[n]), now, wall),
        "bye_b": lambda: t.receive_request(c.in_dialog("BYE", cseq[n], from_caller=False),
                                           now, wall),
        "cancel": lambda: t.receive_request(c.cancel(), now, wall),
        "reinvite": lambda: t.receive_request(
            c.in_dialog("INVITE", 1 + cseq[n], extra=("Session-Expires: 5",)), now, wall),
        "tick": lambda: None,
    }  # fmt: skip
    msgs[op]()


def _check_byes(t: DialogTable, byes: tuple[Any, ...], c: Call) -> None:
    if not byes:
        return
    a, b = (parsed_req(x.data) for x in byes)
    assert isinstance(parse_message(byes[0].data), type(a))
    assert (a.from_.tag, a.to.tag, b.from_.tag, b.to.tag) == (c.ttag(), c.ftag, c.ftag, c.ttag())
    assert a.cseq >= 1 and b.cseq >= 2 and a.call_id == b.call_id == c.call_id
    assert b.header_values("route") == [] and OUR_RR.encode() not in byes[1].data


def _collect(t: DialogTable, cdrs: Counter[str]) -> None:
    for cdr in t.take_cdrs():
        cdrs[cdr["call_id"]] += 1
        assert cdrs[cdr["call_id"]] == 1


def _check_profiles(t: DialogTable) -> None:
    live = list(t._table.values())
    by_user = Counter(d.from_hdr.split(b"@")[0].split(b":")[-1].decode() for d in live)
    assert t.profiles.view() == {"all": len(live), "caller": dict(by_user)}
    assert t.stats()["early"] == sum(d.state < State.CONFIRMED for d in live)


def _replicate(t: DialogTable, replica: DialogTable, now: float, wall: float) -> None:
    for delta in t.take_deltas():
        wire = msgpack.unpackb(msgpack.packb(delta, use_bin_type=True), raw=False)
        replica.apply(wire, now, wall)


def _snap(t: DialogTable, now: float) -> list[Any]:
    return sorted(msgpack.unpackb(msgpack.packb(t.snapshot(now, W0 + now - T0)), raw=False))


def test_snapshot_restore_round_trip() -> None:
    """A table restored from a snapshot holds the same dialogs, deadlines and profile sizes,
    and builds the same BYEs and CDR."""
    t = table(profiles=PROFILES)
    for n in range(3):
        Call(n, from_user=f"u{n}").confirmed(t)
    Call(7).start(t)
    snap = msgpack.unpackb(msgpack.packb(t.snapshot(T0 + 5, W0 + 5)), raw=False)
    other = table(profiles=PROFILES)
    other.restore(snap, T0 + 100, W0 + 5)  # another host: its monotonic clock differs by 95
    assert other.profiles.view() == t.profiles.view() and other.stats()["early"] == 1
    for dlg in t._table.values():
        twin = other.get(dlg.call_id, dlg.from_tag)
        assert twin is not None and twin.deadline == dlg.deadline + 95
        assert other.build_byes(twin, via_for) == t.build_byes(dlg, via_for)
    c = Call(1, from_user="u1")
    for tb in (t, other):
        req("BYE", 2, t=50)(tb, c)
    assert t.take_cdrs() == other.take_cdrs()


def test_deltas_are_dropped_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deltas nobody takes stop at the bound and are counted, never grow without limit."""
    monkeypatch.setattr("dialogstate.store.MAX_PENDING_DELTAS", 3)
    t = table()
    for n in range(3):
        Call(n).confirmed(t)
    assert len(t.deltas) == 3 and t.stats()["deltas_dropped"] == 6


TO_VALUES = [
    b"<sip:bob@example.com>;tag=a6c85cf", b"Bob <sip:bob@example.com>;TAG = x1 ;foo=bar",
    b"<sip:bob@example.com;tag=inuri>", b"<sip:bob@example.com;tag=inuri>;tag=out",
    b"sip:bob@example.com;tag=bare", b'"A>B" <sip:b@h>;x="q;tag=no";tag=yes',
    b"<sip:bob@example.com>", b"<sip:b@h>;tag=", b"garbage <<", b"<sip:b@h>;xtag=1",
]  # fmt: skip


@pytest.mark.parametrize("value", TO_VALUES, ids=range(len(TO_VALUES)))
def test_to_tag_fast_path_agrees_with_the_parser(value: bytes) -> None:
    """The regex read of the To-tag gives what the full name-addr parse gives."""
    from dialogstate.record import to_tag_of
    from ingress.sip.errors import SipError
    from ingress.sip.grammar import parse_name_addr

    try:
        want = parse_name_addr(value).tag or ""
    except SipError:
        want = ""
    assert to_tag_of(value) == want


def test_keys_and_record_are_the_snapshot_one_by_one() -> None:
    """``keys``/``record`` give the records ``snapshot`` gives; a gone key gives None."""
    t = table()
    Call(1).start(t)
    Call(2).start(t)
    t.receive_response(Call(2).response(200), T0, W0)
    assert [t.record(k, T0, W0) for k in t.keys()] == t.snapshot(T0, W0)  # noqa: SIM118 - a method
    assert t.record("nope\0x", T0, W0) is None


def test_a_trunks_values_are_held_once() -> None:
    """Calls from one caller to one callee share one object per target and route set (rule
    8), in the table and in a replica restored from its snapshot; From and To read back as
    they came."""
    t = table()
    calls = [Call(n, up=["<sip:edge.example.com;lr>"]) for n in range(3)]
    for c in calls:
        c.confirmed(t)
    replica = table()
    replica.restore(msgpack.unpackb(msgpack.packb(t.snapshot(T0, W0)), raw=False), T0, W0)
    for tb in (t, replica):
        dlgs = [tb.get(c.call_id, c.ftag) for c in calls]
        assert all(d is not None for d in dlgs)
        for name in ("caller_target", "callee_target", "caller_route", "callee_route"):
            assert len({id(getattr(d, name)) for d in dlgs}) == 1, name
        first = dlgs[0]
        assert first is not None and first.caller_route == b"<sip:edge.example.com;lr>"
        assert first.from_hdr == b"<sip:alice@example.com>;tag=a0"
        assert first.to_hdr == b"<sip:bob@example.com>;tag=b0" and first.to_tag == "b0"


def test_a_record_with_an_lf_in_from_or_to_is_refused() -> None:
    """A header value never holds an LF; a peer's record that does is a broken stream
    (ValueError, which the replica answers with a resnapshot), not a garbled dialog."""
    t = table()
    Call(1).confirmed(t)
    (rec,) = t.snapshot(T0, W0)
    for field in (5, 6):
        bad = list(rec)
        bad[field] = b"<sip:a@example.com>\n;tag=x"
        with pytest.raises(ValueError):
            table().restore([bad], T0, W0)
