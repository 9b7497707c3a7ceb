"""TransactionTable: matching (§17.1.3, §17.2.3), CANCEL/ACK routing, admission, the timer heap."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from tests.workers.test_transactions_msgs import request, request_bytes, response
from workers.transactions import (
    CancelReceived,
    ClientTransaction,
    Finished,
    FinishedInviteClient,
    Held,
    HeldPair,
    InvalidTransition,
    RequestReceived,
    ResponseReceived,
    SendCancel,
    ServerTransaction,
    State,
    TableFull,
    Terminated,
    TimedOut,
    TimerConfig,
    Transaction,
    TransactionTable,
    Transmit,
)

UPSTREAM_VIA = "SIP/2.0/UDP 192.0.2.50:5060"


def drain(table: TransactionTable) -> list[tuple[Transaction | Held, Any]]:
    return list(iter(table.next_event, None))


def kinds(events: list[tuple[Transaction | Held, Any]]) -> list[str]:
    out = []
    for _, e in events:
        name = type(e).__name__
        if isinstance(e, Transmit):
            first = e.data.split(b" ", 2)
            token = (first[1] if first[0] == b"SIP/2.0" else first[0]).decode()
            name = ("rtx " if e.retransmission else "tx ") + token
        elif isinstance(e, ResponseReceived):
            name = f"up {e.response.status}"
        elif isinstance(e, RequestReceived):
            name = f"up {e.request.method}"
        out.append(name)
    return out


def upstream(method: str = "INVITE", **kw: Any) -> Request:
    kw.setdefault("via", UPSTREAM_VIA)
    kw.setdefault("branch", "z9hG4bK-up1")
    return request(method, **kw)


def downstream(method: str = "INVITE", branch: str = "z9hG4bK-dn1") -> bytes:
    return request_bytes(method, branch=branch)


class TestProxyFlow:
    def test_invite_486_hop_by_hop(self) -> None:
        """INVITE in, 100 at once, forwarded once; 486 ACKed downstream and relayed; ACK absorbed."""
        t = TransactionTable()
        st_ = t.receive_request(upstream(), reliable=False, now=0)
        assert isinstance(st_, ServerTransaction)
        assert kinds(drain(t)) == ["tx 100", "up INVITE"]
        assert t.receive_request(upstream(), reliable=False, now=0.3) is st_
        assert kinds(drain(t)) == ["rtx 100"]  # absorbed: not passed up again
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                            now=0.01, context=st_)  # fmt: skip
        assert kinds(drain(t)) == ["tx INVITE"]
        assert t.receive_response(response(downstream(), 180), 1) is ct
        t.respond(st_, b"SIP/2.0 180 Ringing\r\n\r\n", 180, 1)
        assert kinds(drain(t)) == ["up 180", "tx 180"]
        assert t.receive_response(response(downstream(), 486), 2) is ct
        evs = drain(t)
        # Completed: only the ACK is left to re-send, so the machine is held (table rule 8)
        assert kinds(evs) == ["up 486", "tx ACK", "Terminated"]
        ack = parse_message(evs[1][1].data)
        assert isinstance(ack, Request) and ack.vias[0].branch == "z9hG4bK-dn1"
        t.respond(st_, b"SIP/2.0 486 Busy\r\n\r\n", 486, 2)
        assert kinds(drain(t)) == ["tx 486"]
        assert t.receive_request(upstream("ACK", to_tag="x"), reliable=False, now=2.1) is st_
        assert kinds(drain(t)) == ["Terminated"]  # Confirmed: held too
        assert len(t) == 0 and len(t.held) == 2
        held = t.server(st_.key)
        assert isinstance(held, Finished) and held.state is State.CONFIRMED
        # held, they still absorb: the ACK again, and the 486 again gets the ACK again
        assert t.receive_request(upstream("ACK", to_tag="x"), reliable=False, now=3) is held
        assert t.receive_response(response(downstream(), 486), 3) is t.client("z9hG4bK-dn1",
                                                                              "INVITE")  # fmt: skip
        assert [e.data for _, e in drain(t)] == [evs[1][1].data]
        assert t.next_deadline() == pytest.approx(7.1)  # Timer I
        t.handle_timer(7.1)
        assert t.next_deadline() == pytest.approx(34.0)  # Timer D
        t.handle_timer(34.0)
        assert drain(t) == [] and len(t.held) == 0 and t.next_deadline() is None

    def test_cancel(self) -> None:
        """A CANCEL gets its own transaction, then reaches the INVITE it cancels (§9.2, §16.10)."""
        t = TransactionTable()
        inv = t.receive_request(upstream(), reliable=True, now=0)
        drain(t)
        cancel_req = upstream("CANCEL")
        ctx = t.receive_request(cancel_req, reliable=True, now=1)
        assert isinstance(ctx, ServerTransaction) and ctx is not inv
        evs = drain(t)
        assert [type(e) for _, e in evs] == [RequestReceived, CancelReceived]
        assert evs[0][0] is ctx and evs[1][0] is inv
        assert t.invite_for(cancel_req) is inv
        t.respond(ctx, b"SIP/2.0 200 OK\r\n\r\n", 200, 1)
        assert kinds(drain(t)) == ["tx 200", "Terminated"]  # TCP: Timer J = 0
        assert t.invite_for(upstream("CANCEL", branch="z9hG4bK-other")) is None

    def test_cancel_downstream(self) -> None:
        """The client INVITE's SendCancel goes out in a CANCEL client transaction, same branch."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                            now=0)  # fmt: skip
        t.cancel(ct, 0.1)
        t.receive_response(response(downstream(), 180), 0.2)
        evs = drain(t)
        cancel = [e for _, e in evs if isinstance(e, SendCancel)]
        assert len(cancel) == 1
        cc = t.send_request(cancel[0].data, branch="z9hG4bK-dn1", method="CANCEL",
                            reliable=False, now=0.2)  # fmt: skip
        assert t.client("z9hG4bK-dn1", "CANCEL") is cc and t.client("z9hG4bK-dn1", "INVITE") is ct
        # each response goes to its own transaction (CSeq method, §17.1.3)
        assert t.receive_response(response(cancel[0].data, 200), 0.3) is cc
        assert t.receive_response(response(downstream(), 487), 0.4) is ct
        assert "tx ACK" in kinds(drain(t))

    def test_ack_for_2xx_is_not_matched(self) -> None:
        """An ACK for a 2xx is its own transaction (new branch): the table returns None."""
        t = TransactionTable()
        inv = t.receive_request(upstream(), reliable=False, now=0)
        assert inv is not None
        t.respond(inv, b"SIP/2.0 200 OK\r\n\r\n", 200, 1)
        drain(t)
        assert (
            t.receive_request(upstream("ACK", branch="z9hG4bK-new"), reliable=False, now=2) is None
        )
        assert t.receive_request(upstream("ACK"), reliable=False, now=2) is inv  # RFC 6026 §8.7
        assert kinds(drain(t)) == ["up ACK"]

    def test_stray_response(self) -> None:
        """A response that matches no client transaction returns None (forward statelessly)."""
        t = TransactionTable()
        assert t.receive_response(response(downstream(), 200), 0) is None
        assert drain(t) == []

    def test_rfc2543_peer(self) -> None:
        """No magic cookie: retransmission and ACK still find the transaction (§17.2.3)."""
        t = TransactionTable()
        inv = t.receive_request(upstream(branch=""), reliable=False, now=0)
        drain(t)
        assert t.receive_request(upstream(branch=""), reliable=False, now=0.5) is inv
        assert inv is not None
        t.respond(inv, b"SIP/2.0 404 Not Found\r\n\r\n", 404, 1)
        drain(t)
        assert (
            t.receive_request(upstream("ACK", branch="", to_tag="t"), reliable=False, now=2) is inv
        )
        held = t.server(inv.key)
        assert isinstance(held, Finished) and held.state is State.CONFIRMED
        assert t.receive_request(upstream("ACK", branch="", to_tag="t"), reliable=False,
                                 now=3) is held  # fmt: skip

    def test_timeout_event(self) -> None:
        """Timer B surfaces as TimedOut("B") on the client transaction: the proxy answers 408."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=True,
                            now=0)  # fmt: skip
        drain(t)
        assert t.next_deadline() == 32.0
        assert t.handle_timer(32.0) == 1
        assert drain(t) == [(ct, TimedOut("B")), (ct, Terminated())]
        assert len(t) == 0 and t.next_deadline() is None

    def test_invalid_transition_cleans_up(self) -> None:
        """A TU bug raises, and the table still drops the transaction and queues Terminated."""
        t = TransactionTable()
        s = t.receive_request(upstream(), reliable=False, now=0)
        assert isinstance(s, ServerTransaction)
        t.respond(s, b"SIP/2.0 486 Busy\r\n\r\n", 486, 1)
        with pytest.raises(InvalidTransition):
            t.respond(s, b"SIP/2.0 486 Busy\r\n\r\n", 486, 2)
        assert kinds(drain(t))[-1] == "Terminated" and len(t) == 0 and t.next_deadline() is None

    def test_duplicate_branch_refused(self) -> None:
        """Reusing a live branch for the same method is a TU bug; after Terminated it is free."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="b1", method="INVITE", reliable=False, now=0)
        with pytest.raises(ValueError):
            t.send_request(downstream(), branch="b1", method="INVITE", reliable=False, now=0)
        t.transport_error(ct, 1)
        t.send_request(downstream(), branch="b1", method="INVITE", reliable=False, now=1)


class TestAdmission:
    def test_full_refuses_new_server_transactions(self) -> None:
        """At max - reserve new requests get TableFull (503); CANCEL/BYE and clients use the reserve."""
        t = TransactionTable(max_transactions=10, reserve=3)
        for i in range(7):
            t.receive_request(upstream(branch=f"z9hG4bK-{i}"), reliable=False, now=0)
        with pytest.raises(TableFull) as exc:
            t.receive_request(upstream(branch="z9hG4bK-x"), reliable=False, now=0)
        assert exc.value.status == 503 and t.refused == 1
        # retransmissions and ACKs need no room
        assert t.receive_request(upstream(branch="z9hG4bK-0"), reliable=False, now=0.1) is not None
        t.receive_request(upstream("CANCEL", branch="z9hG4bK-1"), reliable=False, now=0.2)
        t.receive_request(upstream("BYE", branch="z9hG4bK-y"), reliable=False, now=0.2)
        t.send_request(downstream(), branch="z9hG4bK-dn", method="INVITE", reliable=False, now=0.3)
        assert len(t) == 10
        with pytest.raises(TableFull):
            t.send_request(downstream(), branch="z9hG4bK-dn2", method="INVITE", reliable=False,
                           now=0.3)  # fmt: skip
        with pytest.raises(TableFull):
            t.receive_request(upstream("CANCEL", branch="z9hG4bK-2"), reliable=False, now=0.4)
        assert t.refused == 3

    def test_room_comes_back(self) -> None:
        """Terminated transactions free their slot."""
        t = TransactionTable(max_transactions=2, reserve=0)
        for i in range(2):
            t.receive_request(upstream("OPTIONS", branch=f"z9hG4bK-{i}"), reliable=True, now=0)
        with pytest.raises(TableFull):
            t.receive_request(upstream("OPTIONS", branch="z9hG4bK-9"), reliable=True, now=0)
        s = t.server(("z9hG4bK-0", "192.0.2.50", 5060, "OPTIONS"))
        assert s is not None
        t.respond(s, b"SIP/2.0 200 OK\r\n\r\n", 200, 1)  # TCP: Terminated at once
        t.receive_request(upstream("OPTIONS", branch="z9hG4bK-9"), reliable=True, now=1)

    @pytest.mark.parametrize("kw", [{"max_transactions": 0}, {"timer_batch": 0},
                                    {"max_transactions": 4, "reserve": 4}])  # fmt: skip
    def test_bad_bounds(self, kw: dict[str, Any]) -> None:
        """Bounds that cannot work are refused."""
        with pytest.raises(ValueError):
            TransactionTable(**kw)


class TestHeap:
    def test_batches(self) -> None:
        """handle_timer fires at most timer_batch transactions; next_deadline says to go on."""
        t = TransactionTable(timer_batch=3)
        for i in range(10):
            t.send_request(
                downstream(), branch=f"b{i}", method="OPTIONS", reliable=True, now=i / 100
            )
        drain(t)
        assert t.handle_timer(100.0) == 3
        d = t.next_deadline()
        assert d is not None and d <= 100.0
        assert t.handle_timer(100.0) == 3 and t.handle_timer(100.0) == 3
        assert t.handle_timer(100.0) == 1 and t.next_deadline() is None
        assert [type(e) for _, e in drain(t)] == [TimedOut, Terminated] * 10

    def test_earliest_first(self) -> None:
        """Due timers fire in deadline order across transactions."""
        t = TransactionTable()
        for i, start in enumerate([3.0, 1.0, 2.0]):
            t.send_request(downstream(), branch=f"b{i}", method="OPTIONS", reliable=True, now=start)
        drain(t)
        t.handle_timer(100.0)
        order = [txn for txn, e in drain(t) if isinstance(e, TimedOut)]
        assert [c.branch for c in order if isinstance(c, ClientTransaction)] == ["b1", "b2", "b0"]

    def test_compaction_during_handle_timer(self) -> None:
        """A rebuild of the heap while timers fire loses no timer and fires none twice."""
        t = TransactionTable()
        txns = [
            t.send_request(downstream(), branch=f"b{i}", method="INVITE", reliable=False, now=0)
            for i in range(200)
        ]
        for c in txns[:150]:
            t.transport_error(c, 0.1)  # 150 stale entries, 50 live: the next push compacts
        drain(t)
        assert t.handle_timer(0.5) == 50  # each Timer A re-arms (a push) while firing
        assert len(t._heap) <= 2 * len(t) + 64
        assert kinds(drain(t)) == ["rtx INVITE"] * 50
        assert t.next_deadline() == 1.5 and t.handle_timer(1.5) == 50

    def test_next_deadline_exact(self) -> None:
        """A deadline that moved later or stopped is re-filed: next_deadline never lies."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                            now=0)  # fmt: skip
        assert t.next_deadline() == 0.5  # Timer A
        t.receive_response(response(downstream(), 180), 0.1)
        assert t.next_deadline() is None  # Proceeding: no timer
        t.receive_response(response(downstream(), 200), 0.2)
        assert t.next_deadline() == pytest.approx(32.2) == ct.next_deadline()  # Timer M
        assert t.handle_timer(32.0) == 0
        assert ct.state is State.ACCEPTED
        assert t.handle_timer(32.2) == 1
        assert len(t) == 0 and ct.next_deadline() is None  # Terminated and dropped

    def test_refiled_entry_fires_once(self) -> None:
        """An entry surfacing early is re-filed, not fired; the real deadline fires once."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="b", method="INVITE", reliable=False, now=0)
        t.receive_response(response(downstream("INVITE", "b"), 200), 0.1)  # A/B -> M at 32.1
        drain(t)
        assert t.handle_timer(0.5) == 0  # the old Timer A entry surfaces: re-filed
        assert t.next_deadline() == pytest.approx(32.1)
        assert t.handle_timer(32.1) == 1 and ct.state is State.TERMINATED
        assert kinds(drain(t)) == ["Terminated"]

    def test_stale_entries_bounded(self) -> None:
        """Deadlines that move leave stale entries; the heap stays within 2x live + 64."""
        t = TransactionTable()
        for i in range(2000):
            ct = t.send_request(
                downstream(), branch=f"b{i}", method="INVITE", reliable=False, now=0
            )
            down = downstream(branch=f"b{i}")
            t.receive_response(response(down, 180), 0.1 + i / 1e4)  # leaves stale A/B entries
            if i % 2:
                t.receive_response(response(down, 486), 0.2 + i / 1e4)
            assert len(t._heap) <= 2 * len(t) + 65
            assert ct.state is (State.TERMINATED if i % 2 else State.PROCEEDING)  # 486: held
        assert sum(isinstance(e, Terminated) for _, e in drain(t)) == 1000
        # compaction kept every live entry; each 486 transaction's held entry reaches its
        # Timer D; the 180-only half stays Proceeding (no timer there: Timer C decides)
        now, fired = 1.0, 0
        while (at := t.next_deadline()) is not None and now < 100:
            now = max(now, at)
            fired += t.handle_timer(now)
        assert fired == 1000 and len(t) == 1000 and len(t.held) == 0
        assert all(c.state is State.PROCEEDING for c in t._clients.values())  # type: ignore[union-attr]
        assert drain(t) == []


# -- table-level property: random traffic, increasing time ----------------------------------

ops = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.05, 0.5, 3.0, 40.0]),
        st.sampled_from(["inv", "opt", "retx", "ack", "cancel", "resp", "fwd", "down", "err"]),
        st.integers(0, 3),
        st.sampled_from([100, 180, 200, 404, 487]),
        st.booleans(),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_table_random_traffic(ops: list[tuple[float, str, int, int, bool]]) -> None:
    """Any traffic: no stray exception, one Terminated per transaction and last, then empty."""
    t = TransactionTable(max_transactions=12, reserve=2, timer_batch=2)
    now = 0.0
    events: list[tuple[Transaction, Any]] = []
    clients: list[ClientTransaction] = []
    servers: list[ServerTransaction] = []

    def run_timers(until: float) -> None:
        while (d := t.next_deadline()) is not None and d <= until:
            t.handle_timer(d)
            events.extend(drain(t))

    for dt, op, n, status, reliable in ops:
        run_timers(now + dt)
        now += dt
        branch = f"z9hG4bK-{n}"
        try:
            if op in ("inv", "opt", "retx"):
                method = "OPTIONS" if op == "opt" else "INVITE"
                s = t.receive_request(upstream(method, branch=branch), reliable=reliable, now=now)
                if isinstance(s, ServerTransaction) and s not in servers:
                    servers.append(s)
            elif op == "ack":
                t.receive_request(upstream("ACK", branch=branch, to_tag="x"), reliable=reliable,
                                  now=now)  # fmt: skip
            elif op == "cancel":
                s = t.receive_request(upstream("CANCEL", branch=branch), reliable=reliable, now=now)
                if isinstance(s, ServerTransaction) and s not in servers:
                    servers.append(s)
            elif op == "resp" and servers:
                s = servers[n % len(servers)]
                if s.state is not State.TERMINATED and s.accepts(status):
                    t.respond(s, b"SIP/2.0 %d X\r\n\r\n" % status, status, now)
            elif op == "fwd":
                method = "INVITE" if n % 2 else "OPTIONS"
                if t.client(branch, method) is None:
                    clients.append(t.send_request(downstream(method, branch), branch=branch,
                                                  method=method, reliable=reliable, now=now))  # fmt: skip
            elif op == "down":
                method = "INVITE" if n % 2 else "OPTIONS"
                t.receive_response(response(downstream(method, branch), status), now)
            elif op == "err" and clients:
                c = clients[n % len(clients)]
                if c.state is not State.TERMINATED:
                    t.transport_error(c, now)
        except TableFull:
            pass
        events.extend(drain(t))
    for s in servers:  # the TU answers everything still open, then time runs out
        if s.state is not State.TERMINATED and s.accepts(500):
            t.respond(s, b"SIP/2.0 500 X\r\n\r\n", 500, now)
    for c in clients:
        if c.state is not State.TERMINATED:
            t.receive_response(response(downstream(c.method, c.branch), 500), now)
    events.extend(drain(t))
    run_timers(now + 1e6)
    assert len(t) == 0 and len(t.held) == 0 and t.next_deadline() is None
    assert not t._servers and not t._clients
    seen: dict[int, list[Any]] = {}
    for txn, e in events:
        if isinstance(txn, Held):  # a held entry only re-sends (table rule 8)
            assert isinstance(e, Transmit) and e.retransmission
            continue
        seen.setdefault(id(txn), []).append(e)
    for evs in seen.values():
        assert isinstance(evs[-1], Terminated)
        assert sum(isinstance(e, Terminated) for e in evs) == 1
        timeouts = [e for e in evs if isinstance(e, TimedOut)]
        assert len(timeouts) <= 1


def answered(t: TransactionTable, i: int = 1, now: float = 0.0) -> tuple[ServerTransaction,
                                                                        ClientTransaction]:
    """An upstream INVITE forwarded downstream and answered 200 both ways, at ``now``."""
    st_ = t.receive_request(upstream(branch=f"z9hG4bK-up{i}"), reliable=False, now=now)
    assert isinstance(st_, ServerTransaction)
    ct = t.send_request(downstream(branch=f"z9hG4bK-dn{i}"), branch=f"z9hG4bK-dn{i}",
                        method="INVITE", reliable=False, now=now)  # fmt: skip
    t.receive_response(response(downstream(branch=f"z9hG4bK-dn{i}"), 200), now)
    t.respond(st_, b"SIP/2.0 200 OK\r\n\r\n", 200, now)
    drain(t)
    assert st_.state is State.ACCEPTED and ct.state is State.ACCEPTED
    return st_, ct


class TestHeld:
    """Rule 7: an answered INVITE's pair in Accepted, folded into one ``Held``."""

    def test_hold_serves_what_accepted_serves(self) -> None:
        t = TransactionTable()
        st_, ct = answered(t)
        held = t.hold(st_, ct)
        assert isinstance(held, HeldPair) and held.dest is st_.dest
        assert t.server(st_.key) is held and t.client("z9hG4bK-dn1", "INVITE") is held
        assert len(t) == 0 and len(t.held) == 1 and t.held.keys == 2  # not live any more
        # a retransmitted INVITE is absorbed: nothing sent, nothing passed up
        assert t.receive_request(upstream(branch="z9hG4bK-up1"), reliable=False, now=1) is held
        assert drain(t) == []
        # the ACK comes back as an Accepted INVITE's: the TU lets it through
        got = t.receive_request(upstream("ACK", branch="z9hG4bK-up1", to_tag="uas1"),
                                reliable=False, now=1)  # fmt: skip
        assert got is held and got.state is State.ACCEPTED and drain(t) == []
        # a retransmitted 2xx goes up for the TU to forward; a late 1xx or final does not
        retx = response(downstream(branch="z9hG4bK-dn1"), 200)
        assert t.receive_response(retx, 2) is held
        assert [(txn, e.response) for txn, e in drain(t)] == [(held, retx)]
        for status in (180, 486):
            assert t.receive_response(response(downstream(branch="z9hG4bK-dn1"), status), 2)
            assert drain(t) == []
        # a CANCEL is answered by its own transaction, and cancels nothing
        cancel = t.receive_request(upstream("CANCEL", branch="z9hG4bK-up1"), reliable=True,
                                   now=3)  # fmt: skip
        assert isinstance(cancel, ServerTransaction)
        assert [type(e) for _, e in drain(t)] == [RequestReceived]
        assert t.invite_for(upstream("CANCEL", branch="z9hG4bK-up1")) is held

    def test_expires_with_timers_l_and_m_once(self) -> None:
        t = TransactionTable()
        st_, ct = answered(t, now=1.0)
        t.hold(st_, ct)
        assert t.next_deadline() == pytest.approx(33.0)  # 1 + 64*T1
        assert t.handle_timer(32.9) == 0 and len(t.held) == 1
        assert t.handle_timer(33.0) == 1
        assert len(t.held) == 0 and t.next_deadline() is None and drain(t) == []
        assert not t._servers and not t._clients
        assert t.receive_response(response(downstream(), 200), 34) is None  # a stray now

    def test_fifo_respects_the_batch_and_the_heap(self) -> None:
        """Holds expire oldest first within ``timer_batch``; heap timers still fire."""
        t = TransactionTable(timer_batch=2)
        for i in range(3):
            t.hold(*answered(t, i, now=float(i)))
        other = t.send_request(downstream("OPTIONS", "z9hG4bK-o"), branch="z9hG4bK-o",
                               method="OPTIONS", reliable=False, now=31.0)  # fmt: skip
        assert t.next_deadline() == pytest.approx(31.5)  # Timer E before the first hold
        assert t.handle_timer(40.0) == 2  # Timer E and the first hold
        assert len(t.held) == 2 and len(t) == 1
        assert t.next_deadline() < 40.0  # cut short: the rest is due
        assert t.handle_timer(40.0) == 2 and len(t.held) == 0 and other.state is State.TRYING

    def test_refused_unless_both_accepted_and_filed(self) -> None:
        t = TransactionTable()
        st_ = t.receive_request(upstream(), reliable=False, now=0)
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE",
                            reliable=False, now=0)  # fmt: skip
        assert isinstance(st_, ServerTransaction)
        assert t.hold(st_, ct) is None  # neither answered
        t.receive_response(response(downstream(), 200), 0)
        assert t.hold(st_, ct) is None  # the server side has not sent the 2xx
        t.respond(st_, b"SIP/2.0 200 OK\r\n\r\n", 200, 0)
        held = t.hold(st_, ct)
        assert held is not None and t.hold(st_, ct) is None  # only once

    def test_detached_transactions_still_send_and_are_not_filed(self) -> None:
        """The TU's own objects keep working after the hold, outside the table."""
        t = TransactionTable()
        st_, ct = answered(t)
        held = t.hold(st_, ct)
        heap = len(t._heap)
        t.respond(st_, b"SIP/2.0 200 OK\r\n\r\n", 200, 1)  # another fork's 2xx, say
        assert [(txn, type(e)) for txn, e in drain(t)] == [(st_, Transmit)]
        assert len(t._heap) == heap and t.server(st_.key) is held


class TestFromMutants:
    """What ./dev mutate txn (docs/testing.md) found unasserted."""

    def test_bounds_are_checked_with_their_reason(self) -> None:
        for kw in ({"max_transactions": 0}, {"timer_batch": 0}):
            with pytest.raises(ValueError, match=r"^max_transactions and timer_batch must be >= 1$"):
                TransactionTable(**kw)  # type: ignore[arg-type]
        one = TransactionTable(max_transactions=1, timer_batch=1)  # the smallest legal table
        assert (one.max_transactions, one.timer_batch, one.reserve) == (1, 1, 0)
        with pytest.raises(ValueError, match=r"^reserve must be in \[0, max_transactions\)$"):
            TransactionTable(max_transactions=8, reserve=8)
        assert TransactionTable(max_transactions=72).reserve == 9  # 1/8 by default

    def test_table_full_says_so(self) -> None:
        t = TransactionTable(max_transactions=1, reserve=0)
        t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False, now=0)
        with pytest.raises(TableFull, match="^transaction table full$"):
            t.send_request(downstream(branch="z9hG4bK-dn2"), branch="z9hG4bK-dn2",
                           method="INVITE", reliable=False, now=0)  # fmt: skip
        with pytest.raises(TableFull, match="^transaction table full$"):
            t.receive_request(upstream(), reliable=False, now=0)
        with pytest.raises(ValueError, match="exists"):
            t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                           now=0)  # fmt: skip

    def test_dest_and_context_ride_with_the_transaction(self) -> None:
        """What the TU hands in comes back on the transaction (the worker routes by it)."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                            now=0, dest=("10.0.0.9", 5060), context="ctx-c")  # fmt: skip
        st_ = t.receive_request(upstream(), reliable=False, now=0, dest=("10.0.0.8", 5070),
                                context="ctx-s")  # fmt: skip
        assert (ct.dest, ct.context) == (("10.0.0.9", 5060), "ctx-c")
        assert isinstance(st_, ServerTransaction)
        assert (st_.dest, st_.context) == (("10.0.0.8", 5070), "ctx-s")

    def test_300_is_a_final_non_2xx_both_ways(self) -> None:
        """3xx is final and not 2xx (RFC 6026 §7.2): ACKed hop by hop by the client, kept for
        retransmission by the server (Completed), unlike a 2xx."""
        t = TransactionTable()
        ct = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                            now=0)  # fmt: skip
        drain(t)
        t.receive_response(response(downstream(), 300), 1)
        assert kinds(drain(t)) == ["up 300", "tx ACK", "Terminated"]
        assert ct.state is State.TERMINATED  # held: the ACK is all it may send again
        assert isinstance(t.client("z9hG4bK-dn1", "INVITE"), FinishedInviteClient)
        st_ = t.receive_request(upstream(), reliable=False, now=0)
        assert isinstance(st_, ServerTransaction)
        drain(t)
        t.respond(st_, b"SIP/2.0 300 Multiple Choices\r\n\r\n", 300, 1)
        drain(t)
        assert st_.state is State.COMPLETED


def test_timer_config_bounds_and_texts() -> None:
    """T1 > 0, T2 >= T1, T4 and Timer D >= 0: the edges pass, the values past them are named."""
    TimerConfig(t1=0.001, t2=0.001, t4=0.0, timer_d=0.0)
    with pytest.raises(ValueError, match=r"^t1 must be > 0, got 0\.0$"):
        TimerConfig(t1=0.0)
    with pytest.raises(ValueError, match=r"^t2 must be >= t1, got t2=0\.4 t1=0\.5$"):
        TimerConfig(t1=0.5, t2=0.4)
    for kw in ({"t4": -1.0}, {"timer_d": -1.0}):
        with pytest.raises(ValueError, match="^t4 and timer_d must be >= 0$"):
            TimerConfig(**kw)  # type: ignore[arg-type]


def test_ack_never_creates_a_server_transaction() -> None:
    ack = upstream("ACK")
    with pytest.raises(ValueError, match=r"^ACK never creates a server transaction \(§17\.2\.3\)$"):
        ServerTransaction(ack, key=("k",), reliable=False)


class TestRetransmitTimersRearmFromTheirDeadline:
    """Rule 4 of machine.py: a retransmission timer re-arms from its scheduled deadline, so a
    late loop does not stretch the series (A, E in Trying and in Proceeding, G)."""

    def test_timer_e_in_trying_and_proceeding(self) -> None:
        t = TransactionTable()
        t.send_request(downstream("OPTIONS", "b"), branch="b", method="OPTIONS",
                       reliable=False, now=0)  # fmt: skip
        assert t.next_deadline() == 0.5
        t.handle_timer(0.7)  # 0.2 s late
        assert t.next_deadline() == pytest.approx(1.5)  # 0.5 + 2*T1, not 0.7 + 1.0
        t.receive_response(response(downstream("OPTIONS", "b"), 100), 0.8)  # Proceeding
        t.handle_timer(1.9)  # late again: E re-arms at T2 from its deadline
        assert t.next_deadline() == pytest.approx(1.5 + 4.0)

    def test_timer_g(self) -> None:
        t = TransactionTable()
        st_ = t.receive_request(upstream(), reliable=False, now=0)
        assert isinstance(st_, ServerTransaction)
        t.respond(st_, b"SIP/2.0 486 Busy Here\r\n\r\n", 486, 0)
        drain(t)
        assert st_.next_deadline() == 0.5
        t.handle_timer(0.8)
        assert kinds(drain(t)) == ["rtx 486"]
        assert st_.next_deadline() == pytest.approx(1.5)

    def test_100_trying_on_the_wire(self) -> None:
        t = TransactionTable()
        t.receive_request(upstream(), reliable=False, now=0)
        (_, first), *_ = drain(t)
        assert isinstance(first, Transmit) and first.data.startswith(b"SIP/2.0 100 Trying\r\n")


def test_compaction_point_and_live_entries_survive_it() -> None:
    """Terminated transactions leave stale heap entries; once they pass 2 x live + 64 the heap
    is rebuilt (not before), and the live transaction's entry survives: it still retransmits
    and times out on time."""
    t = TransactionTable()
    keep = t.send_request(downstream("OPTIONS", "keep"), branch="keep", method="OPTIONS",
                          reliable=False, now=0)  # fmt: skip
    sizes = []
    for i in range(300):  # over TCP a 200 ends each at once (Timer K = 0): F's entry goes stale
        down = downstream("OPTIONS", f"b{i}")
        t.send_request(down, branch=f"b{i}", method="OPTIONS", reliable=True, now=0)
        t.receive_response(response(down, 200), 0)
        t.handle_timer(0.0)
        sizes.append(len(t._heap))
    assert len(t) == 1 and max(sizes) == 2 * 2 + 64  # two live at the push that compacts
    drain(t)
    assert t.handle_timer(0.5) == 1 and kinds(drain(t)) == ["rtx OPTIONS"]
    now = 0.5
    while keep.state is not State.TERMINATED and now < 40:
        now = t.next_deadline() or 40.0
        t.handle_timer(now)
    assert now == pytest.approx(32.0) and (keep, TimedOut("F")) in drain(t)
