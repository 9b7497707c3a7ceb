"""A ringing call whose dialog moves to a joined worker (docs/dialogs.md "Dialogs follow
their Call-ID"): two stateful cores, W (which forwarded the INVITE and holds its
transactions) and J (which owns the Call-ID now and is handed the dialog), driven in memory.
The edge routes every message of the Call-ID to J from then on, responses included."""

from __future__ import annotations

from conf.settings import Dialogs
from workers.coreevents import Cdr
from workers.dialogs.handover import Forward
from workers.stateful import StatefulProxy

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
    which will never see it, send nothing at Timer C (no CANCEL downstream, no 408
    upstream) and are gone by then."""
    w, j = pair()
    fwd = ringing(w, j)
    j.from_uas(answer(fwd, 200))
    assert j.take_up() == [200]
    w.advance(T0 + TIMER_C_S + 1)
    assert w.take_up() == [] and [m for _, m in w.take_down() if m != "INVITE"] == []
    assert w.p.counters["timer_c"] == 0
    assert len(w.p.table) == 0 and w.p.next_deadline() is None
