"""The stateful proxy core (workers/stateful.py) driven in memory: UAC bytes in, UAS bytes back,
time as numbers. No sockets; the end-to-end runs with sipp are in tests/e2e/."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conf.settings import DestinationSet, Dialogs, Proxy, Route, Transactions
from ingress.sip.message import Request
from ingress.sip.serialize import build_response
from workers.coreevents import Cdr, TimerOp
from workers.proxy import Out, StatelessProxy
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy
from workers.transactions import HeldPair

from .helpers import inbound, parsed_req, parsed_resp, request, settings

UAS1, UAS2 = "127.0.0.1:7001", "127.0.0.1:7002"


def make(
    *,
    dests: tuple[str, ...] = (UAS1,),
    mode: str = "stateful",
    route_mode: str = "",
    max_transactions: int = 65536,
    dialogs: Dialogs | None = None,
    external_timers: bool = False,
    **set_kw: object,
) -> StatefulProxy:
    sets = [DestinationSet(name="uas", destinations=[f"sip:{d}" for d in dests],
                           algorithm="round_robin", **set_kw)]  # type: ignore[arg-type]
    s = settings(sets=sets, routes=[Route(name="default", to="uas", mode=route_mode)],  # type: ignore[arg-type]
                 proxy=Proxy(mode=mode))  # type: ignore[arg-type]  # fmt: skip
    s = replace(s, transactions=Transactions(max_transactions=max_transactions, timer_c_s=200),
                dialogs=dialogs or Dialogs())
    return StatefulProxy(s, StatelessProxy(s, RoutingTable(s)), external_timers=external_timers)


class Link:
    """The proxy between one UAC (10.0.0.1:5070) and its UASes: sorts what it sends."""

    def __init__(self, proxy: StatefulProxy) -> None:
        self.p = proxy
        self.now = 0.0
        self.up: list[bytes] = []  # to the UAC
        self.down: list[tuple[str, bytes]] = []  # ("ip:port", bytes) to a UAS

    def _sort(self, outs: list[Out]) -> None:
        for _, meta, data in outs:
            if meta[1] == "10.0.0.1":
                self.up.append(data)
            else:
                self.down.append((f"{meta[1]}:{meta[2]}", data))

    def from_uac(self, data: bytes) -> None:
        self._sort(self.p.handle(data, inbound(), self.now))

    def from_uas(self, data: bytes, uas: str = UAS1) -> None:
        ip, port = uas.split(":")
        self._sort(self.p.handle(data, inbound(src=ip, port=int(port)), self.now))

    def advance(self, to: float) -> None:
        """Fire every timer due up to ``to``, in deadline order, as the worker's loop would."""
        while (at := self.p.next_deadline()) is not None and at <= to:
            self.now = max(self.now, at)
            self._sort(self.p.handle_timer(self.now))
        self.now = to

    def take_up(self) -> list[int | str]:
        out: list[int | str] = []
        for d in self.up:
            msg = parsed_resp(d) if d.startswith(b"SIP/2.0") else parsed_req(d)
            out.append(msg.status if not isinstance(msg, Request) else msg.method)  # type: ignore[union-attr]
        self.up.clear()
        return out

    def take_down(self) -> list[tuple[str, str]]:
        out = [(uas, parsed_req(d).method) for uas, d in self.down]
        return out


def answer(fwd: bytes, status: int, reason: str = "X", tag: str = "uas") -> bytes:
    """The UAS's response to a forwarded request: every Via copied, its To-tag added."""
    return build_response(parsed_req(fwd), status, reason, to_tag=tag)


def last_down(link: Link, method: str = "INVITE") -> bytes:
    return [d for _, d in link.down if parsed_req(d).method == method][-1]


INVITE = request("INVITE", "sip:bob@127.0.0.1:5999")


def test_invite_gets_100_and_retransmissions_are_absorbed() -> None:
    """An INVITE is answered 100 Trying at once and forwarded once; its retransmission re-sends
    the 100 and reaches nobody downstream."""
    link = Link(make())
    link.from_uac(INVITE)
    assert link.take_up() == [100]
    assert link.take_down() == [(UAS1, "INVITE")]
    link.from_uac(INVITE)
    assert link.take_up() == [100]
    assert link.take_down() == [(UAS1, "INVITE")]
    assert link.p.counters["absorbed"] == 1


def test_provisional_and_2xx_go_upstream_without_our_via() -> None:
    """180 and 200 are forwarded upstream at once, with our Via removed; 100 is not."""
    link = Link(make())
    link.from_uac(INVITE)
    fwd = last_down(link)
    for st_ in (100, 180, 200):
        link.from_uas(answer(fwd, st_))
    up = [parsed_resp(d) for d in link.up]
    assert [r.status for r in up] == [100, 180, 200]
    assert all(len(r.vias) == 1 and r.vias[0].host == "10.0.0.1" for r in up[1:])


def test_answered_invite_is_held_compactly_for_timers_l_and_m() -> None:
    """Rule 9: after the 200 the call's two transactions are one ``Held`` and the context is
    gone; a retransmitted 200 still goes upstream without our Via, a retransmitted INVITE
    is absorbed, the ACK goes on, and 64*T1 later nothing is left."""
    link = Link(make())
    link.from_uac(INVITE)
    fwd = last_down(link)
    link.from_uas(answer(fwd, 200, "OK"))
    assert link.take_up() == [100, 200]
    held = {id(v): v for v in (*link.p.table._servers.values(), *link.p.table._clients.values())}
    assert len(link.p.table) == 0 and [type(v) for v in held.values()] == [HeldPair]
    link.from_uas(answer(fwd, 200, "OK"))
    up = [parsed_resp(d) for d in link.up]
    assert [r.status for r in up] == [200] and len(up[0].vias) == 1
    link.up.clear()
    link.from_uac(INVITE)
    assert link.take_up() == [] and link.take_down() == [(UAS1, "INVITE")]
    link.from_uac(request("ACK", "sip:bob@127.0.0.1:5999", to_tag="uas", cseq_method="ACK"))
    assert link.take_down() == [(UAS1, "INVITE"), (UAS1, "ACK")]
    link.advance(31.9)
    assert len(link.p.table.held) == 1
    link.advance(32.1)
    assert len(link.p.table.held) == 0 and link.p.table.next_deadline() is None


def test_non_2xx_final_is_acked_hop_by_hop() -> None:
    """A 486 goes upstream, the proxy ACKs it downstream itself, and the UAC's ACK stops here."""
    link = Link(make())
    link.from_uac(INVITE)
    link.from_uas(answer(last_down(link), 486, "Busy Here"))
    assert link.take_up() == [100, 486]
    assert link.take_down() == [(UAS1, "INVITE"), (UAS1, "ACK")]
    ack = request("ACK", "sip:bob@127.0.0.1:5999", to_tag="uas", cseq_method="ACK")
    link.from_uac(ack)
    assert link.take_down() == [(UAS1, "INVITE"), (UAS1, "ACK")]


def test_no_answer_retransmits_then_408() -> None:
    """A UAS that never answers gets Timer A retransmissions, then the caller gets 408 at 64*T1."""
    link = Link(make())
    link.from_uac(INVITE)
    link.take_up()
    link.advance(31.9)
    assert link.take_up() == []
    assert len(link.take_down()) == 7  # sent at 0, re-sent at 0.5 1.5 3.5 7.5 15.5 31.5
    link.advance(32.1)
    assert link.take_up() == [408]
    assert link.p.counters["timeout"] == 1


def test_failover_on_503_to_the_next_destination() -> None:
    """The first destination answers 503: the INVITE goes to the second with a new branch, and
    the second's 200 reaches the caller; the 503 never does."""
    link = Link(make(dests=(UAS1, UAS2)))
    link.from_uac(INVITE)
    first_uas, first = link.down[-1]
    link.from_uas(answer(first, 503, "Service Unavailable"), first_uas)
    second_uas, second = link.down[-1]
    assert parsed_req(second).method == "INVITE" and second_uas != first_uas
    assert parsed_req(second).vias[0].branch != parsed_req(first).vias[0].branch
    link.from_uas(answer(second, 200, "OK"), second_uas)
    assert link.take_up() == [100, 200]
    assert link.p.counters["failover"] == 1


def test_failover_on_timeout() -> None:
    """A dead first destination (no answer until Timer B) hands the call to the second."""
    link = Link(make(dests=(UAS1, UAS2)))
    link.from_uac(INVITE)
    first_uas = link.down[-1][0]
    link.advance(32.1)
    second_uas, second = link.down[-1]
    assert second_uas != first_uas
    link.from_uas(answer(second, 180), second_uas)
    link.from_uas(answer(second, 200), second_uas)
    assert link.take_up() == [100, 180, 200]


def test_all_destinations_fail_best_answer_wins() -> None:
    """With every destination failing the caller gets the best final (here the 5xx seen)."""
    link = Link(make(dests=(UAS1, UAS2)))
    link.from_uac(INVITE)
    uas, fwd = link.down[-1]
    link.from_uas(answer(fwd, 500, "Server Error"), uas)
    link.advance(32.1 + 0.1)  # the second never answers
    assert link.take_up() == [100, 500]


def test_failover_off_answers_the_first_failure() -> None:
    """``failover = false`` sends the first destination's 503 upstream as it is."""
    link = Link(make(dests=(UAS1, UAS2), failover=False))
    link.from_uac(INVITE)
    uas, fwd = link.down[-1]
    link.from_uas(answer(fwd, 503, "Service Unavailable"), uas)
    assert link.take_up() == [100, 503]


def test_cancel_before_answer() -> None:
    """CANCEL after 180: 200 for the CANCEL, a CANCEL downstream on the INVITE's branch, and the
    UAS's 487 goes upstream (and is ACKed downstream)."""
    link = Link(make())
    link.from_uac(INVITE)
    fwd = last_down(link)
    link.from_uas(answer(fwd, 180))
    link.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL"))
    cancel = last_down(link, "CANCEL")
    assert parsed_req(cancel).vias[0].branch == parsed_req(fwd).vias[0].branch
    link.from_uas(answer(cancel, 200))
    link.from_uas(answer(fwd, 487, "Request Terminated"))
    assert link.take_up() == [100, 180, 200, 487]
    assert [m for _, m in link.take_down()] == ["INVITE", "CANCEL", "ACK"]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    """A CANCEL before the UAS said anything is held until its first provisional (§9.1)."""
    link = Link(make())
    link.from_uac(INVITE)
    fwd = last_down(link)
    link.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL"))
    assert "CANCEL" not in [m for _, m in link.take_down()]
    link.from_uas(answer(fwd, 180))
    assert "CANCEL" in [m for _, m in link.take_down()]


def test_cancel_without_transaction_is_forwarded_statelessly() -> None:
    """A CANCEL that matches nothing here is forwarded, not answered (§16.10)."""
    link = Link(make())
    link.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL"))
    assert link.take_up() == []
    assert link.take_down() == [(UAS1, "CANCEL")]


def test_timer_c_cancels_a_branch_that_rings_too_long() -> None:
    """A branch ringing past Timer C is cancelled downstream and the caller gets 408."""
    link = Link(make())
    link.from_uac(INVITE)
    link.from_uas(answer(last_down(link), 180))
    link.take_up()
    link.advance(199.0)
    assert link.take_up() == []
    link.advance(200.2)  # before Timer G re-sends the 408
    assert link.take_up() == [408]
    assert "CANCEL" in [m for _, m in link.take_down()]


def test_non_invite_final_answers_retransmissions() -> None:
    """A MESSAGE gets no 100; its 200 goes upstream and a retransmission gets it again."""
    link = Link(make())
    msg = request("MESSAGE", "sip:bob@127.0.0.1:5999")
    link.from_uac(msg)
    assert link.take_up() == []
    link.from_uas(answer(last_down(link, "MESSAGE"), 200))
    link.from_uac(msg)
    assert link.take_up() == [200, 200]
    assert len(link.take_down()) == 1


def test_stateless_route_in_a_stateful_node_keeps_no_state() -> None:
    """A route with ``mode = "stateless"`` is forwarded without a transaction."""
    link = Link(make(route_mode="stateless"))
    link.from_uac(INVITE)
    link.from_uac(INVITE)
    assert link.take_up() == []
    assert len(link.take_down()) == 2 and len(link.p.table) == 0


def test_refused_requests_are_answered_statelessly() -> None:
    """A request the proxy refuses (Max-Forwards 0) gets its error with no transaction."""
    link = Link(make())
    link.from_uac(request("INVITE", "sip:bob@127.0.0.1:5999", max_forwards=0))
    assert link.take_up() == [483] and len(link.p.table) == 0


def test_full_table_answers_503() -> None:
    """Out of room, a new INVITE gets 503 at once, statelessly."""
    link = Link(make(max_transactions=16))
    for i in range(20):
        link.from_uac(request("INVITE", "sip:bob@127.0.0.1:5999", call_id=f"c{i}",
                              via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{i}"))  # fmt: skip
    assert 503 in link.take_up()
    assert link.p.counters["table_full"] >= 1


UAS_MOVES = st.sampled_from(["100", "180", "200", "486", "503", "uac_retx", "cancel", "wait"])


@hsettings(max_examples=150, deadline=None)
@given(st.lists(UAS_MOVES, max_size=12), st.booleans())
def test_any_exchange_ends_clean(moves: list[str], two: bool) -> None:
    """Whatever the UAS and UAC do, the caller gets at most one non-2xx final (re-sent as it
    is), nothing but 2xx after a 2xx, and once every timer has run the table is empty."""
    link = Link(make(dests=(UAS1, UAS2) if two else (UAS1,)))
    link.from_uac(INVITE)
    for move in moves:
        if move == "uac_retx":
            link.from_uac(INVITE)
        elif move == "cancel":
            link.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999", cseq_method="CANCEL"))
        elif move == "wait":
            link.advance(link.now + 5)
        else:
            invites = [(u, d) for u, d in link.down if parsed_req(d).method == "INVITE"]
            uas, fwd = invites[-1]
            link.from_uas(answer(fwd, int(move)), uas)
    link.advance(link.now + 400)
    finals = [d for d in link.up
              if (r := parsed_resp(d)).status >= 200 and r.cseq_method == "INVITE"]  # fmt: skip
    codes = [parsed_resp(d).status for d in finals]
    non2xx = {d for d, c in zip(finals, codes) if c >= 300}
    assert len(non2xx) <= 1  # re-sent as it is, never changed
    if non2xx and any(c < 300 for c in codes):  # a 2xx may follow a non-2xx, not precede it
        assert codes.index(next(c for c in codes if c >= 300)) < codes.index(
            next(c for c in codes if c < 300)
        )
    assert len(link.p.table) == 0
    assert link.p.next_deadline() is None


def test_dialog_lifetime_through_the_timer_service() -> None:
    """With lifetimes in the timer service the core hands out arm/cancel ops instead of
    keeping a heap; a fire at the deadline ends the call with a BYE each way, a fire for a
    dialog refreshed since re-arms it, and a fire for an ended dialog does nothing."""
    p = make(dialogs=Dialogs(enabled=True, default_lifetime_s=2), external_timers=True)
    link = Link(p)
    link.now = 100.0
    link.from_uac(INVITE)
    link.from_uas(answer(last_down(link), 200))
    ops, p.dialogs.timer_ops = p.dialogs.timer_ops, []  # type: ignore[union-attr]
    assert ops[-1] == ("arm", "call-1@10.0.0.1\0fromtag", 102.0)
    assert p.next_deadline() != 102.0  # no heap of its own
    assert p.dialog_expired("call-1@10.0.0.1", "fromtag", 101.0, 0.0) == []
    assert p.dialogs.timer_ops == [("arm", "call-1@10.0.0.1\0fromtag", 102.0)]  # type: ignore[union-attr]
    outs = p.dialog_expired("call-1@10.0.0.1", "fromtag", 102.0, 0.0)
    byes = [parsed_req(d) for _, _, d in outs]
    assert [b.method for b in byes] == ["BYE", "BYE"]
    assert {m[1] for _, m, _ in outs} == {"10.0.0.1", "127.0.0.1"}
    assert ("cancel", "call-1@10.0.0.1\0fromtag") in p.dialogs.timer_ops  # type: ignore[union-attr]
    assert p.dialog_expired("call-1@10.0.0.1", "fromtag", 103.0, 0.0) == []


def test_events_come_out_of_one_queue_once_each() -> None:
    """The worker takes the core's work from ``next_event`` alone: a call's lifetime timer
    to arm, then at its end the cancel and its CDR, each once, and nothing after them."""
    p = make(dialogs=Dialogs(enabled=True, default_lifetime_s=2), external_timers=True)
    link = Link(p)
    link.now = 100.0
    link.from_uac(INVITE)
    link.from_uas(answer(last_down(link), 200))
    events = list(iter(p.next_event, None))
    assert TimerOp("call-1@10.0.0.1\0fromtag", 102.0) in events
    assert not any(isinstance(e, Cdr) for e in events)
    assert p.next_event() is None and p.dialogs.timer_ops == []  # type: ignore[union-attr]
    p.dialog_expired("call-1@10.0.0.1", "fromtag", 102.0, 0.0)
    events = list(iter(p.next_event, None))
    cdrs = [e for e in events if isinstance(e, Cdr)]
    assert len(cdrs) == 1 and cdrs[0].fields["cause"] == "expired"
    assert TimerOp("call-1@10.0.0.1\0fromtag", None) in events
    # the cancel is queued before the CDR, as the outboxes are taken in that order
    assert events.index(TimerOp("call-1@10.0.0.1\0fromtag", None)) < events.index(cdrs[0])
    assert p.next_event() is None and not p.dialogs.cdrs  # type: ignore[union-attr]
