"""A ringing call whose dialog moves to a joined worker (docs/dialogs.md "Dialogs follow
their Call-ID"): two stateful cores, W (which forwarded the INVITE and holds its
transactions) and J (which owns the Call-ID now and is handed the dialog), driven in memory.
The edge routes every message of the Call-ID to J from then on, responses included."""

from __future__ import annotations

import pytest

from conf.settings import Dialogs
from dialogstate.msgs import iso
from workers.coreevents import Cdr
from workers.dialogs.handover import Forward
from workers.stateful import StatefulProxy

from .helpers import inbound, parsed_req, request
from .test_stateful import INVITE, Link, answer, last_down, make

KEY = "call-1@10.0.0.1\0fromtag"
T0, WALL0 = 100.0, 1_700_000_000.0
TIMER_C_S = 200  # test_stateful.make's


def pair() -> tuple[Link, Link]:
    w = Link(make(dialogs=Dialogs(enabled=True)))
    j = Link(make(dialogs=Dialogs(enabled=True)))
    w.now = j.now = T0
    return w, j


def hand_over(w: Link, j: Link) -> None:
    """What owners.py rules 2-3 and the state plane do when J joins: W lets the call go (its
    dialog's record stays in the state plane's mirror) and J adopts the dialog; W passes on
    what still reaches it for the Call-ID."""
    w.p.let_calls_go(lambda call_id: True, w.now)
    if w.p.dialogs is None:
        return
    rec = w.p.dialogs.record(KEY, w.now, WALL0)
    assert rec is not None
    assert w.p.dialogs.let_go([KEY]) == 1
    assert j.p.dialogs is not None and j.p.dialogs.adopt([rec], j.now, WALL0) == 1

    def screen(call_id: str) -> None:
        raise Forward("j")

    w.p.screen = screen


def cdrs(p: StatefulProxy) -> list[Cdr]:
    return [e for e in iter(p.next_event, None) if isinstance(e, Cdr)]


def ringing(w: Link, j: Link) -> bytes:
    """INVITE and 180 at W, then the hand-over to J; returns the INVITE as forwarded."""
    w.from_uac(INVITE)
    fwd = last_down(w)
    w.from_uas(answer(fwd, 180))
    assert w.take_up() == [100, 180]
    hand_over(w, j)
    return fwd


def test_answer_at_the_new_owner_leaves_no_cancel_and_no_408_at_timer_c() -> None:
    """The callee's 200 reaches J: it goes upstream once, and W's transactions for the call,
    which will never see it, are gone at the hand-over and nothing is sent at Timer C (no
    CANCEL downstream, no 408 upstream). Before: both held for Timer C's 200 s, then 2
    CANCELs down and 11 408s up (re-sent to Timer H, the caller's ACK going to J)."""
    w, j = pair()
    fwd = ringing(w, j)
    assert len(w.p.table) == 0 and w.p.counters["calls_moved"] == 1
    j.from_uas(answer(fwd, 200))
    assert j.take_up() == [200]
    w.advance(T0 + TIMER_C_S + 1)
    assert w.take_up() == [] and [m for _, m in w.take_down() if m != "INVITE"] == []
    assert w.p.counters["timer_c"] == 0
    assert len(w.p.table) == 0 and w.p.next_deadline() is None


def feed(link: Link, data: bytes, wall: float, *, uas: bool = False) -> None:
    """``data`` to the link's core at its ``now`` and ``wall`` (CDR times)."""
    inb = inbound(src="127.0.0.1", port=7001) if uas else inbound()
    link._sort(link.p.handle(data, inb, link.now, wall))


def test_the_call_has_one_cdr_at_the_new_owner_with_its_answer_and_bye() -> None:
    """Answered at J 5 s after the INVITE and ended by a BYE there a minute later: one CDR,
    J's, with the answer time and cause ``bye``; W writes none, at Timer C or ever."""
    w, j = pair()
    feed(w, INVITE, WALL0)
    fwd = last_down(w)
    w.now = j.now = T0 + 1
    feed(w, answer(fwd, 180), WALL0 + 1, uas=True)
    hand_over(w, j)
    j.now = T0 + 5
    feed(j, answer(fwd, 200), WALL0 + 5, uas=True)
    ack = request("ACK", "sip:bob@127.0.0.1:7001", to_tag="uas",
                  via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKack")  # fmt: skip
    feed(j, ack, WALL0 + 5.1)
    j.now = T0 + 65
    bye = request("BYE", "sip:bob@127.0.0.1:7001", to_tag="uas", cseq=2,
                  via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKbye",
                  extra=("Route: <sip:127.0.0.1:5999;lr>",))  # fmt: skip
    feed(j, bye, WALL0 + 65)
    feed(j, answer(last_down(j, "BYE"), 200), WALL0 + 65.1, uas=True)
    assert [m for _, m in j.take_down()] == ["ACK", "BYE"]
    (cdr,) = cdrs(j.p)
    assert cdr.fields["cause"] == "bye"
    assert cdr.fields["start"] == iso(WALL0) and cdr.fields["answer"] == iso(WALL0 + 5)
    assert cdr.fields["talk_ms"] == 60_000
    w.advance(T0 + TIMER_C_S + 40)
    assert cdrs(w.p) == [] and w.take_up() == [100, 180]


def test_an_answer_that_still_reaches_the_old_worker_is_passed_on() -> None:
    """Before the edge hears of J, the 200 may still reach W: it goes to J (``Forward``,
    stateful.py rule 10) and W's Timer C has nothing left to do."""
    w, j = pair()
    fwd = ringing(w, j)
    with pytest.raises(Forward):
        w.from_uas(answer(fwd, 200))
    j.from_uas(answer(fwd, 200))  # what the FWD does there
    assert j.take_up() == [200]
    w.advance(T0 + TIMER_C_S + 40)
    assert w.take_up() == [] and w.p.counters["timer_c"] == 0 and len(w.p.table) == 0


def test_without_dialogs_the_call_moves_all_the_same() -> None:
    """The edge routes by Call-ID whether or not dialogs are kept: with them off, W gives the
    call up too, an answer that still reaches W goes upstream statelessly (once), and
    Timer C sends nothing."""
    w, j = Link(make()), Link(make())
    w.now = j.now = T0
    fwd = ringing(w, j)
    assert w.p.counters["calls_moved"] == 1
    j.from_uas(answer(fwd, 200))
    w.from_uas(answer(fwd, 200))  # a retransmission, before the edge heard of J
    assert j.take_up() == [200] and w.take_up() == [200]
    w.advance(T0 + TIMER_C_S + 40)
    assert w.take_up() == [] and [m for _, m in w.take_down()] == ["INVITE"]
    assert len(w.p.table) == 0 and w.p.next_deadline() is None


def test_an_invite_not_yet_answered_at_all_is_still_retransmitted_until_timer_b() -> None:
    """Moved before any response (the INVITE may have been lost on UDP): W's client
    transaction keeps re-sending it until the callee's first response, which ends it (a
    1xx other than 100 goes upstream statelessly, as J would send it), and nothing ever
    sends a 408 or tries another destination."""
    w, j = Link(make()), Link(make())
    w.now = j.now = T0
    w.from_uac(INVITE)
    assert w.take_up() == [100]
    w.p.let_calls_go(lambda call_id: True, w.now)
    w.advance(T0 + 2)
    assert [m for _, m in w.take_down()] == ["INVITE"] * 3  # 0, 0.5, 1.5 s
    w.from_uas(answer(last_down(w), 100))
    assert w.take_up() == [] and len(w.p.table) == 0  # the callee has it: nothing left
    w.from_uas(answer(last_down(w), 180))
    assert w.take_up() == [180]
    w.advance(T0 + TIMER_C_S + 40)
    assert w.take_up() == [] and {m for _, m in w.take_down()} == {"INVITE"}
    assert w.p.counters["timeout"] == 0 and len(w.p.table) == 0


def test_a_cancel_at_the_new_owner_still_reaches_the_branch_in_progress() -> None:
    """The caller gives up after the move: J forwards the CANCEL statelessly with the branch
    W's INVITE went out with (proxy.py rule 2: the branch is a hash of the request), so the
    callee matches it; its 487 goes upstream from J, and nothing comes from W."""
    w, j = pair()
    fwd = ringing(w, j)
    cancel = request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL")
    j.from_uac(cancel)
    (down,) = [d for _, d in j.down]
    assert parsed_req(down).method == "CANCEL"
    assert parsed_req(down).vias[0].branch == parsed_req(fwd).vias[0].branch
    j.from_uas(answer(fwd, 487))
    assert j.take_up() == [487]
    w.advance(T0 + TIMER_C_S + 40)
    assert w.take_up() == [] and len(w.p.table) == 0


def test_an_invite_moved_before_any_answer_ends_at_timer_b_without_a_408() -> None:
    """Moved before any response and never answered at all: W re-sends the INVITE until
    Timer B (7 sends in 32 s on UDP) and then ends it with nothing upstream."""
    w, j = Link(make()), Link(make())
    w.now = j.now = T0
    w.from_uac(INVITE)
    assert w.take_up() == [100]
    w.p.let_calls_go(lambda call_id: True, w.now)
    w.advance(T0 + TIMER_C_S + 40)
    assert w.take_up() == [] and [m for _, m in w.take_down()] == ["INVITE"] * 7
    assert w.p.counters["timeout"] == 0 and len(w.p.table) == 0 and w.p.next_deadline() is None
