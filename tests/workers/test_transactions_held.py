"""Held (finished) transactions: workers/txn/held.py and the table's rule 8.

The store on its own (lanes in expiry order, the two bounds, the dicts it files into), then
through a table: what a held transaction absorbs, and what RFC 3261 makes of a retransmission
once its entry is gone (evicted or expired): it matches nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.workers.test_transactions_msgs import response
from tests.workers.test_transactions_table import downstream, drain, kinds, upstream
from workers.transactions import (
    Finished,
    FinishedInviteClient,
    FinishedInviteServer,
    FinishedNonInviteClient,
    FinishedNonInviteServer,
    Held,
    HeldPair,
    HeldStore,
    RequestReceived,
    ServerTransaction,
    State,
    TableFull,
    TransactionTable,
    Transmit,
)

# -- the store on its own -------------------------------------------------------------------

#: entry kind -> (class, hold time): the lanes' durations differ, as T4 and Timer D may
KINDS: dict[str, tuple[type[Finished] | None, float]] = {
    "J": (FinishedNonInviteServer, 32.0),
    "I": (FinishedInviteServer, 5.0),
    "D": (FinishedInviteClient, 20.0),
    "K": (FinishedNonInviteClient, 5.0),
    "pair": (None, 32.0),
}

store_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("file"),
            st.sampled_from(sorted(KINDS)),
            st.integers(0, 40),
            st.sampled_from([0.0, 0.0, 0.1, 1.0, 6.0]),
        ),
        st.tuples(
            st.just("expire"),
            st.integers(1, 4),
            st.just(0),
            st.sampled_from([0.0, 1.0, 5.0, 20.0, 40.0]),
        ),
    ),
    max_size=60,
)


def make(kind: str, n: int, size: int, now: float) -> Held:
    cls, hold = KINDS[kind]
    resend = b"x" * size if size and kind in ("J", "D") else None
    if cls is None:
        return HeldPair(("s", n), ("c", str(n)), "dest", now + hold)
    return cls(("k", n), "dest", resend, now + hold)


def filed_keys(servers: dict[Any, Any], clients: dict[Any, Any]) -> set[tuple[str, Any]]:
    return {("s", k) for k in servers} | {("c", k) for k in clients}


def entry_keys(e: Held) -> set[tuple[str, Any]]:
    if isinstance(e, HeldPair):
        return {("s", e.skey), ("c", e.ckey)}
    assert isinstance(e, Finished)
    return {("s" if e.server else "c", e.key)}


@settings(max_examples=300, deadline=None)
@given(ops=store_ops, max_entries=st.integers(1, 6), max_bytes=st.integers(0, 100))
def test_store_expires_in_order_and_evicts_the_entry_nearest_its_end(
    ops: list[tuple[str, str, int, float]], max_entries: int, max_bytes: int
) -> None:
    """With time moving forward: expiry drops exactly the due entries, earliest first, never
    one early; filing past either bound evicts the entries nearest their ends; the dicts hold
    exactly the entries the store holds, each under its key(s)."""
    servers: dict[Any, Any] = {}
    clients: dict[Any, Any] = {}
    store = HeldStore(servers, clients, max_entries=max_entries, max_bytes=max_bytes)
    live: list[Held] = []
    now = 0.0
    for n, (op, kind, arg, dt) in enumerate(ops):
        now += dt
        evicted = store.evicted
        if op == "file":
            entry = make(kind, n, arg, now)
            store.file(entry)
            live.append(entry)
        else:
            dropped = store.expire(now, arg)
        kept = _kept(servers, clients, live)
        gone = [e for e in live if e not in kept]
        live = kept
        # whatever went (expired or evicted), it ended no later than anything kept
        assert all(g.until <= k.until for g in gone for k in live)
        if op == "expire":
            assert dropped == len(gone) <= arg and store.evicted == evicted
            assert all(e.until <= now for e in gone)  # never early
            if len(gone) < arg:  # not cut short: nothing due is left
                assert all(e.until > now for e in live)
        else:
            assert store.evicted - evicted == len(gone)
        assert len(store) == len(live) <= max_entries
        assert store.bytes == sum(e.size() for e in live) <= max_bytes
        assert store.keys == sum(e.keys for e in live)
        assert filed_keys(servers, clients) == set().union(*map(entry_keys, live))
        assert store.next_deadline() == (min(e.until for e in live) if live else None)
    assert store.expire(now + 1e6, 10**6) == len(live)
    assert not servers and not clients and store.bytes == 0 and store.next_deadline() is None


def _kept(servers: dict[Any, Any], clients: dict[Any, Any], live: list[Held]) -> list[Held]:
    """The entries of ``live`` still filed (an entry is filed under all its keys or none)."""
    out: list[Held] = []
    for e in live:
        if isinstance(e, HeldPair):
            there = servers.get(e.skey) is e
            assert there == (clients.get(e.ckey) is e)
        else:
            assert isinstance(e, Finished)
            there = (servers if e.server else clients).get(e.key) is e
        if there:
            out.append(e)
    return out


def test_store_counts_evictions_and_checks_its_bounds() -> None:
    servers: dict[Any, Any] = {}
    store = HeldStore(servers, {}, max_entries=2, max_bytes=100)
    a, b, c = (FinishedNonInviteServer(("k", i), None, b"x" * 40, 32.0 + i) for i in range(3))
    for e in (a, b, c):
        store.file(e)
    assert store.evicted == 1 and ("k", 0) not in servers and store.bytes == 80
    store.file(FinishedNonInviteServer(("k", 9), None, b"x" * 90, 40.0))  # bytes: b and c go
    assert store.evicted == 3 and list(servers) == [("k", 9)] and store.bytes == 90
    assert store.stats() == {"entries": 1, "bytes": 90, "evicted": 3}
    for kw in ({"max_entries": 0, "max_bytes": 1}, {"max_entries": 1, "max_bytes": -1}):
        with pytest.raises(ValueError, match="^max_held must be >= 1 and max_held_bytes >= 0$"):
            HeldStore({}, {}, **kw)


# -- through the table ----------------------------------------------------------------------

OK = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"


def answered_bye(t: TransactionTable, n: int, now: float = 0.0) -> ServerTransaction:
    s = t.receive_request(upstream("BYE", branch=f"z9hG4bK-bye{n}"), reliable=False, now=now,
                          dest=("up", n))  # fmt: skip
    assert isinstance(s, ServerTransaction)
    t.respond(s, OK + b"%d" % n, 200, now)
    return s


class TestHeldThroughTheTable:
    def test_a_retransmission_is_answered_from_the_held_entry(self) -> None:
        """A BYE answered over UDP: the machine ends (Terminated for the TU), its entry re-sends
        the same 200 to the same place for each retransmission and passes nothing up."""
        t = TransactionTable()
        s = answered_bye(t, 1)
        assert kinds(drain(t)) == ["up BYE", "tx 200", "Terminated"]
        held = t.server(s.key)
        assert isinstance(held, FinishedNonInviteServer) and held.state is State.COMPLETED
        assert s.state is State.TERMINATED and len(t) == 0 and len(t.held) == 1
        for now in (1.0, 2.0):
            assert t.receive_request(upstream("BYE", branch="z9hG4bK-bye1"), reliable=False,
                                     now=now) is held  # fmt: skip
            assert drain(t) == [(held, Transmit(OK + b"1", True))] and held.dest == ("up", 1)
        assert t.next_deadline() == pytest.approx(32.0)  # Timer J

    def test_after_expiry_or_eviction_a_retransmission_is_a_new_request(self) -> None:
        """Once its entry is gone a retransmission matches no transaction: §17.2.3 makes it a
        new server transaction and the TU gets the request again."""
        t = TransactionTable(max_held=1)
        answered_bye(t, 1)
        answered_bye(t, 2, now=1.0)  # evicts the first: nearest its end
        drain(t)
        assert t.held.evicted == 1 and t.server(("z9hG4bK-bye1", "192.0.2.50", 5060, "BYE")) is None
        again = t.receive_request(upstream("BYE", branch="z9hG4bK-bye1"), reliable=False, now=2)
        assert isinstance(again, ServerTransaction)
        assert [type(e) for _, e in drain(t)] == [RequestReceived]
        t.handle_timer(33.0)  # the second's Timer J
        assert len(t.held) == 0 and t.held.evicted == 1
        again2 = t.receive_request(upstream("BYE", branch="z9hG4bK-bye2"), reliable=False, now=34)
        assert isinstance(again2, ServerTransaction) and kinds(drain(t)) == ["up BYE"]

    def test_held_entries_never_take_live_room(self) -> None:
        """A table of 16 live transactions holds 200 answered ones and still admits more."""
        t = TransactionTable(max_transactions=16)
        for n in range(200):
            answered_bye(t, n, now=n / 100)
        assert len(t) == 0 and len(t.held) == 200 and t.refused == 0
        for n in range(14):  # 16 - the reserve of 2
            t.receive_request(upstream(branch=f"z9hG4bK-live{n}"), reliable=False, now=3)
        with pytest.raises(TableFull):
            t.receive_request(upstream(branch="z9hG4bK-full"), reliable=False, now=3)

    def test_an_invite_client_held_after_a_non_2xx(self) -> None:
        """Completed after a 486 (Timer D): the 486 again gets the ACK again, a 1xx is
        absorbed, a 2xx matches nothing (the proxy forwards it statelessly, §16.7 step 5)."""
        t = TransactionTable()
        t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                       now=0, dest="down")  # fmt: skip
        t.receive_response(response(downstream(), 486), 1)
        ack = [e.data for _, e in drain(t) if isinstance(e, Transmit)][-1]
        held = t.client("z9hG4bK-dn1", "INVITE")
        assert isinstance(held, FinishedInviteClient) and held.resend == ack
        assert t.receive_response(response(downstream(), 486), 2) is held
        assert drain(t) == [(held, Transmit(ack, True))] and held.dest == "down"
        assert t.receive_response(response(downstream(), 180), 2) is held and drain(t) == []
        assert t.receive_response(response(downstream(), 200), 2) is None and drain(t) == []
        assert t.next_deadline() == pytest.approx(33.0)  # Timer D

    def test_a_non_invite_client_held_absorbs_responses(self) -> None:
        t = TransactionTable()
        t.send_request(downstream("BYE", "z9hG4bK-b"), branch="z9hG4bK-b", method="BYE",
                       reliable=False, now=0)  # fmt: skip
        t.receive_response(response(downstream("BYE", "z9hG4bK-b"), 200), 1)
        held = t.client("z9hG4bK-b", "BYE")
        assert isinstance(held, FinishedNonInviteClient)
        assert kinds(drain(t)) == ["tx BYE", "up 200", "Terminated"]
        for status in (100, 200, 481):
            assert t.receive_response(response(downstream("BYE", "z9hG4bK-b"), status), 2) is held
        assert drain(t) == [] and t.next_deadline() == pytest.approx(6.0)  # Timer K = T4

    def test_confirmed_invite_server_absorbs_and_cancel_is_answered_alone(self) -> None:
        t = TransactionTable()
        s = t.receive_request(upstream(), reliable=False, now=0)
        assert isinstance(s, ServerTransaction)
        t.respond(s, b"SIP/2.0 486 Busy\r\n\r\n", 486, 0)
        t.receive_request(upstream("ACK", to_tag="x"), reliable=False, now=0.2)
        drain(t)
        held = t.server(s.key)
        assert isinstance(held, FinishedInviteServer)
        assert t.receive_request(upstream(), reliable=False, now=1) is held and drain(t) == []
        assert t.invite_for(upstream("CANCEL")) is held  # too late: nothing to cancel
        c = t.receive_request(upstream("CANCEL"), reliable=False, now=1)
        assert isinstance(c, ServerTransaction)
        assert [type(e) for _, e in drain(t)] == [RequestReceived]

    def test_reliable_transports_hold_nothing(self) -> None:
        """Over TCP Timers D, I, J and K are zero: the transactions end, nothing is held."""
        t = TransactionTable()
        s = t.receive_request(upstream("BYE"), reliable=True, now=0)
        assert isinstance(s, ServerTransaction)
        t.respond(s, OK, 200, 0)
        t.send_request(downstream("BYE", "z9hG4bK-b"), branch="z9hG4bK-b", method="BYE",
                       reliable=True, now=0)  # fmt: skip
        t.receive_response(response(downstream("BYE", "z9hG4bK-b"), 200), 0)
        assert len(t) == 0 and len(t.held) == 0 and not t._servers and not t._clients

    def test_an_evicted_pair_leaves_both_keys_unknown(self) -> None:
        """A held INVITE pair evicted: a retransmitted 2xx matches nothing (forwarded
        statelessly) and a retransmitted INVITE is a new transaction (docs: what it costs)."""
        t = TransactionTable(max_held=1)
        s = t.receive_request(upstream(), reliable=False, now=0)
        c = t.send_request(downstream(), branch="z9hG4bK-dn1", method="INVITE", reliable=False,
                           now=0)  # fmt: skip
        t.receive_response(response(downstream(), 200), 0)
        assert isinstance(s, ServerTransaction)
        t.respond(s, OK, 200, 0)
        assert t.hold(s, c) is not None
        answered_bye(t, 1, now=1.0)  # evicts the pair
        drain(t)
        assert t.held.evicted == 1 and t.held.keys == 1
        assert t.receive_response(response(downstream(), 200), 2) is None
        again = t.receive_request(upstream(), reliable=False, now=2)
        assert isinstance(again, ServerTransaction) and kinds(drain(t)) == ["tx 100", "up INVITE"]
