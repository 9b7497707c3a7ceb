"""A request waiting on a job when a worker J joins (docs/dialogs.md "Dialogs follow their
Call-ID"), and a caller's INVITE reaching the old worker W after the join, with dialogs on
or off: two stateful cores driven in memory, with the hooks ``workers/dialogs/owners.py``
sets (``claim``, ``pass_on``) standing for W's view that J owns the Call-ID now.

A location lookup (every INVITE to a registered user), an RFC 3263 resolution or an HA1 read
that answers after the join must not start the call at W: its responses, CANCEL, ACK and
BYE go to J, so a dialog started at W is one whose BYE J cannot match (no CDR), and W's
Timer C would CANCEL a call answered at J and send the caller a 408."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conf.settings import Dialogs, Registrar
from workers.coreevents import Cdr, Job
from workers.dialogs.handover import Forward
from workers.jobanswers import authenticated, located, resolved
from workers.proxy import Inbound, Out, StatelessProxy
from workers.registrar.register import Source
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import inbound, parsed_req, parsed_resp, request, settings
from .test_auth_proxy import Core
from .test_stateful import INVITE, Link, answer, last_down, make

MISS = (480, "Temporarily Unavailable")
FOUND: list[tuple[str, Any, tuple[str, ...]]] = [
    ("sip:bob@192.168.1.20:5062", Source("udp", "127.0.0.50", 5080), ())]
CALLEE = inbound(src="127.0.0.50", port=5080)
TO_BOB = request("INVITE", "sip:bob@example.com")
TIMER_C_S = 180  # the default [transactions] timer_c_s


def core(dialogs: bool) -> StatefulProxy:
    s = replace(settings(), registrar=Registrar(enabled=True, domains=["example.com"]),
                dialogs=Dialogs(enabled=dialogs))  # fmt: skip
    return StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))


def joined(p: StatefulProxy) -> list[tuple[bytes, Inbound]]:
    """J has joined and owns every Call-ID in ``p``'s view: ``p`` gives up its attempts in
    progress (rule 12) and its hooks say so from now on, as ``Owners`` sets them. Returns
    what ``p`` passes on to J (its ``FWD``s) as it does it."""
    passed: list[tuple[bytes, Inbound]] = []

    def claim(call_id: str) -> None:
        raise Forward("j")

    def pass_on(req: Any, inb: Inbound) -> bool:
        passed.append((req.raw, inb))
        return True

    p.let_calls_go(lambda call_id: True, 0.0)
    p.claim, p.pass_on = claim, pass_on
    return passed


def take(p: StatefulProxy, kind: str) -> Job:
    (job,) = [j for j in p.jobs if j.kind == kind]
    p.jobs.clear()
    return job


def sent(outs: list[Out]) -> list[str]:
    """What ``outs`` sends, in order: a request's method, a response's status."""
    return [str(parsed_resp(d).status) if d.startswith(b"SIP/2.0 ") else parsed_req(d).method
            for _, _, d in outs]  # fmt: skip


def cdrs(p: StatefulProxy) -> list[Cdr]:
    return [e for e in iter(p.next_event, None) if isinstance(e, Cdr)]


def quiet_until_timer_c(p: StatefulProxy, now: float) -> None:
    """``p`` holds nothing for the call and sends nothing up to and past its Timer C."""
    assert len(p.table) == 0 and p.next_deadline() is None
    assert p.handle_timer(now + TIMER_C_S + 40) == []
    assert p.counters["timer_c"] == 0 and p.counters["timeout"] == 0


@pytest.mark.parametrize("dialogs", [True, False], ids=["dialogs", "no_dialogs"])
def test_a_lookup_answered_after_the_join_passes_the_invite_on(dialogs: bool) -> None:
    """The INVITE to a registered user waits on its location lookup at W when J joins: the
    lookup's answer sends nothing from W (no INVITE to the contact, no final to the caller),
    the INVITE as it came goes to J, and W's server transaction ends there. Before: W sent
    the INVITE to the contact after the join, started the dialog there, and sent a CANCEL
    and a 408 at Timer C."""
    w = core(dialogs)
    assert sent(w.handle(TO_BOB, inbound(), 0.0)) == ["100"]
    job = take(w, "lookup")
    passed = joined(w)
    assert located(w, job, FOUND, MISS, 0.1) == []
    assert passed == [(TO_BOB, inbound())]
    assert w.dialogs is None or len(w.dialogs) == 0
    assert w.counters["calls_passed"] == 1
    quiet_until_timer_c(w, 0.1)
    assert cdrs(w) == []


def test_the_call_passed_on_has_its_one_cdr_at_the_new_owner() -> None:
    """What W passed on is served at J as a new call (its own 100, lookup and INVITE): it is
    answered and ended there, and J writes the call's one CDR; W writes none, ever."""
    w, j = core(True), core(True)
    w.handle(TO_BOB, inbound(), 0.0)
    job = take(w, "lookup")
    passed = joined(w)
    located(w, job, FOUND, MISS, 0.1)
    ((raw, inb),) = passed
    assert sent(j.handle(raw, inb, 0.1, 1000.1)) == ["100"]  # the FWD at J
    (fwd,) = [d for _, _, d in located(j, take(j, "lookup"), FOUND, MISS, 0.2)]
    assert parsed_req(fwd).method == "INVITE"
    assert sent(j.handle(answer(fwd, 200), CALLEE, 1.0, 1001.0)) == ["200"]
    ack = request("ACK", "sip:bob@192.168.1.20:5062", to_tag="uas",
                  via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKack")  # fmt: skip
    j.handle(ack, inbound(), 1.1, 1001.1)
    bye = request("BYE", "sip:bob@127.0.0.50:5080", to_tag="uas", cseq=2,
                  via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKbye",
                  extra=("Route: <sip:127.0.0.1:5999;lr>",))  # fmt: skip
    (bye_fwd,) = [d for _, _, d in j.handle(bye, inbound(), 30.0, 1030.0)]
    j.handle(answer(bye_fwd, 200), CALLEE, 30.1, 1030.1)
    (cdr,) = cdrs(j)
    assert cdr.fields["cause"] == "bye" and cdr.fields["talk_ms"] == 29_000
    quiet_until_timer_c(w, 30.1)
    assert cdrs(w) == []


def test_a_resolution_answered_after_the_join_passes_the_invite_on() -> None:
    """The INVITE's destination is a host name being resolved (RFC 3263) when J joins: the
    addresses that come back after it send nothing from W; the INVITE goes to J."""
    w = Link(make(dests=("uas.example.net:5999",), dialogs=Dialogs(enabled=True)))
    w.from_uac(INVITE)
    assert w.take_up() == [100] and w.take_down() == []
    job = take(w.p, "resolve")
    passed = joined(w.p)
    assert resolved(w.p, job, [("udp", "127.0.0.63", 5999)], None, 0.1) == []
    assert [raw for raw, _ in passed] == [INVITE]
    assert w.p.dialogs is not None and len(w.p.dialogs) == 0
    quiet_until_timer_c(w.p, 0.1)


def test_a_resolution_after_the_callers_cancel_still_answers_487_at_w() -> None:
    """A call the caller cancelled at W before the join ends at W as it did (its 487 was
    sent): nothing is passed on for it."""
    w = Link(make(dests=("uas.example.net:5999",), dialogs=Dialogs(enabled=True)))
    w.from_uac(INVITE)
    job = take(w.p, "resolve")
    w.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL"))
    assert sorted(w.take_up(), key=str) == [100, 200, 487]
    passed = joined(w.p)
    assert resolved(w.p, job, [("udp", "127.0.0.63", 5999)], None, 0.1) == []
    assert passed == []


def test_an_ha1_read_answered_after_the_join_passes_the_invite_on(tmp_path: Path) -> None:
    """An INVITE whose credentials wait on an HA1 read from a cacheDB when J joins is handed
    back after the join: it goes to J (which reads the HA1 again) and starts nothing here."""
    c = Core(tmp_path, "stateful")
    assert c.sf is not None
    req = parsed_req(TO_BOB)
    job = Job("auth", None, None, req, inbound(), credentials=("example.com", "MD5", "alice"))
    passed = joined(c.sf)
    assert authenticated(c.sf, job, None, 0.1) == []
    assert passed == [(TO_BOB, inbound())] and len(c.sf.table) == 0 and c.sf.jobs == []


def test_a_passing_on_that_fails_leaves_the_call_here() -> None:
    """The FWD could not leave (J's pipe full, or J gone): W serves the call itself as
    before, rather than lose it."""
    w = core(True)
    w.handle(TO_BOB, inbound(), 0.0)
    job = take(w, "lookup")
    joined(w)
    w.pass_on = lambda req, inb: False
    assert sent(located(w, job, FOUND, MISS, 0.1)) == ["INVITE"]
    assert w.counters["calls_passed"] == 0 and len(w.table) == 2


def test_without_dialogs_a_retransmission_after_the_give_up_goes_to_the_new_owner() -> None:
    """Dialogs off: the INVITE's 100 Trying was lost and the caller retransmits after W gave
    the call up (rule 12). The retransmission goes to J (``claim``) instead of starting a new
    transaction here. Before: a new transaction at W whose INVITE met the branch W's given-up
    attempt still held, and the caller got 100 and a 482 Loop Detected (sent 10 times) for a
    call in progress at the callee; with that attempt ended (a 1xx had come), the new one
    would have lingered to Timer C, then a CANCEL down and a 408 up."""
    w = Link(make())
    w.from_uac(INVITE)
    fwd = last_down(w)
    w.take_up()
    joined(w.p)
    assert len(w.p.table) == 1  # the client transaction re-sends until the callee answers
    w.now = 0.3  # before Timer A re-sends it
    with pytest.raises(Forward):
        w.from_uac(INVITE)
    w.from_uas(answer(fwd, 180))  # the callee has it: W's last transaction ends
    assert w.take_up() == [180]
    w.down.clear()
    w.advance(TIMER_C_S + 40)
    assert w.take_up() == [] and w.down == [] and len(w.p.table) == 0
