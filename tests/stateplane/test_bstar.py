"""Binary Star: every (State, Input) pair, and the failover and split-brain scenarios."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stateplane.bstar import (
    EXPIRY_HEARTBEATS,
    TRANSITIONS,
    BinaryStar,
    Effect,
    Input,
    State,
    decode_roles,
    encode_roles,
    loses_to,
)  # fmt: skip

HB = 0.25
PEER_STATE = {Input.PEER_PRIMARY: State.PRIMARY, Input.PEER_BACKUP: State.BACKUP,
              Input.PEER_ACTIVE: State.ACTIVE, Input.PEER_PASSIVE: State.PASSIVE}  # fmt: skip


def machine(state: State, node: str = "b", epoch: int = 1) -> BinaryStar:
    m = BinaryStar(State.PRIMARY if state is State.PRIMARY else State.BACKUP, node, epoch,
                   heartbeat_s=HB, now=0.0)  # fmt: skip
    m.state = state
    return m


def feed(m: BinaryStar, inp: Input, peer: tuple[int, str], now: float) -> object:
    if inp is Input.PEER_EXPIRED:
        return m.handle_timer(now + EXPIRY_HEARTBEATS * HB)
    if inp is Input.HAND_BACK:
        return m.hand_back()
    if inp is Input.CLIENT_REQUEST:
        return m.client_request(now)
    return m.receive_heartbeat(PEER_STATE[inp], peer[0], peer[1], now)


def test_table_is_total() -> None:
    assert set(TRANSITIONS) == {(s, i) for s in State for i in Input}


@given(st.sampled_from(State), st.sampled_from(Input), st.integers(0, 3), st.sampled_from("ac"))
def test_every_pair(state: State, inp: Input, peer_epoch: int, peer_node: str) -> None:
    """Every pair does what the table says (split brain and dual passive by the (epoch,
    node) rule) and never raises."""
    m = machine(state)
    tr = feed(m, inp, (peer_epoch, peer_node), 0.0)
    effect, nxt = TRANSITIONS[(state, inp)]
    assert tr is not None and tr.effect is effect  # type: ignore[attr-defined]
    lower = loses_to((1, "b"), (peer_epoch, peer_node))
    yields = False  # only rule 4 ever yields
    if effect is Effect.SPLIT_BRAIN or effect is Effect.DUAL_PASSIVE:
        nxt = State.PASSIVE if lower else State.ACTIVE
        yields = lower
    assert m.state is nxt
    # the transition names its input and both ends, for the caller's log line
    assert (tr.input, tr.before, tr.state) == (inp, state, nxt)  # type: ignore[attr-defined]
    assert tr.yields is yields  # type: ignore[attr-defined]


@pytest.mark.parametrize("pair", sorted(TRANSITIONS, key=str), ids=str)
def test_each_pair_once(pair: tuple[State, Input]) -> None:
    m = machine(pair[0])
    assert feed(m, pair[1], (0, "a"), 0.0) is not None


def start_pair() -> tuple[BinaryStar, BinaryStar, float]:
    """Primary and backup exchanging heartbeats until primary active, backup passive."""
    p = BinaryStar(State.PRIMARY, "a", 10, heartbeat_s=HB, now=0.0)
    b = BinaryStar(State.BACKUP, "b", 11, heartbeat_s=HB, now=0.0)
    now = 0.0
    for _ in range(3):
        now += HB
        for me, peer in ((p, b), (b, p)):
            state, epoch, node = peer.heartbeat()
            me.receive_heartbeat(State(state), epoch, node, now)
    assert (p.state, b.state) == (State.ACTIVE, State.PASSIVE)
    return p, b, now


def test_primary_dies_backup_active_within_two_heartbeats() -> None:
    """The primary's heartbeats stop: the backup activates at 2 heartbeats after the last
    one it heard, not before, and then accepts requests."""
    _, b, last = start_pair()
    assert b.client_request(last).effect is Effect.REJECT
    assert b.next_timer() == last + 2 * HB
    assert b.handle_timer(last + 2 * HB - 0.001) is None
    tr = b.handle_timer(last + 2 * HB)
    assert tr is not None and (tr.effect, tr.state) == (Effect.ACTIVATE, State.ACTIVE)
    assert b.handle_timer(last + 10) is None  # expiry reported once
    assert b.client_request(last + 1).effect is Effect.ACCEPT


def test_restarted_primary_goes_passive() -> None:
    """The old primary comes back (as PRIMARY, higher epoch): it hears an active backup and
    stays passive; the backup keeps the address."""
    _, b, now = start_pair()
    b.handle_timer(now + 2 * HB)
    p2 = BinaryStar(State.PRIMARY, "a", 20, heartbeat_s=HB, now=now + 1)
    assert b.receive_heartbeat(State.PRIMARY, 20, "a", now + 1).state is State.ACTIVE
    tr = p2.receive_heartbeat(State.ACTIVE, 11, "b", now + 1)
    assert (tr.effect, tr.state) == (Effect.PASSIVATE, State.PASSIVE)


def test_dual_active_detected_and_lower_yields() -> None:
    """A partition heals with both active: both report split brain, the lower (epoch, node)
    yields and the other stays, so exactly one remains active."""
    p, b, now = start_pair()
    b.handle_timer(now + 2 * HB)  # partition: backup takes over
    assert (p.state, b.state) == (State.ACTIVE, State.ACTIVE)
    tp = p.receive_heartbeat(State.ACTIVE, 11, "b", now + 1)
    tb = b.receive_heartbeat(State.ACTIVE, 10, "a", now + 1)
    assert tp.effect is tb.effect is Effect.SPLIT_BRAIN
    assert (tp.yields, tb.yields) == (True, False)
    assert (p.state, b.state) == (State.PASSIVE, State.ACTIVE)


def test_dual_passive_higher_activates() -> None:
    a = machine(State.PASSIVE, "a", 1)
    b = machine(State.PASSIVE, "b", 1)
    ta = a.receive_heartbeat(State.PASSIVE, 1, "b", 0.0)
    tb = b.receive_heartbeat(State.PASSIVE, 1, "a", 0.0)
    assert ta.effect is Effect.DUAL_PASSIVE and (a.state, b.state) == (State.PASSIVE, State.ACTIVE)
    assert not tb.yields


def test_lone_node_activates_and_bad_role() -> None:
    m = BinaryStar(State.BACKUP, "b", 1, heartbeat_s=HB, now=0.0)
    assert m.peer is None and m.peer_expired is False  # failover.py reads both
    tr = m.handle_timer(2 * HB)
    assert tr is not None and tr.state is State.ACTIVE
    assert m.peer_expired is True and m.next_timer() == float("inf")  # nothing left to expire
    with pytest.raises(ValueError, match="primary or backup, not active"):
        BinaryStar(State.ACTIVE, "b", 1, heartbeat_s=HB, now=0.0)


def test_a_heartbeat_revives_an_expired_peer() -> None:
    """After expiry a heartbeat re-arms the expiry timer and records who the peer is."""
    _, b, last = start_pair()
    b.handle_timer(last + 2 * HB)
    assert b.peer_expired is True
    b.receive_heartbeat(State.PRIMARY, 12, "a", last + 3)
    assert b.peer_expired is False and b.peer == (12, "a")
    assert b.next_timer() == last + 3 + 2 * HB


def test_a_request_after_the_expiry_takes_over_before_it_is_judged() -> None:
    """A request that arrives once the peer's expiry has passed, before the timer was
    handled (a busy loop), expires the peer first: the backup activates and accepts it,
    also at the expiry instant exactly."""
    _, b, last = start_pair()
    tr = b.client_request(last + 2 * HB)
    assert (tr.effect, tr.before, tr.state) == (Effect.ACCEPT, State.ACTIVE, State.ACTIVE)
    assert b.peer_expired is True


def test_equal_ranks_neither_yields() -> None:
    """Rule 4 yields only to a strictly higher (epoch, node)."""
    assert loses_to((1, "a"), (1, "b")) and loses_to((1, "b"), (2, "a"))
    assert not loses_to((1, "a"), (1, "a")) and not loses_to((2, "a"), (1, "b"))


def test_roles_round_trip_and_forged_parts_are_left_out() -> None:
    roles = {"10.0.0.2:5060": "active", "10.0.0.1:5060": "passive", "[::1]:5060": "backup"}
    text = encode_roles(roles)
    assert text == "10.0.0.1:5060=passive,10.0.0.2:5060=active,[::1]:5060=backup"  # sorted
    assert decode_roles(text) == roles
    assert encode_roles({}) == "" and decode_roles("") == {}
    # no '=', an empty address: dropped; the last '=' splits (an address never holds one)
    assert decode_roles("junk,=active,a=b=c,x=passive") == {"a=b": "c", "x": "passive"}


def exchange(a: BinaryStar, b: BinaryStar, now: float, rounds: int = 3) -> float:
    for _ in range(rounds):
        now += HB
        for me, peer in ((a, b), (b, a)):
            state, epoch, node = peer.heartbeat()
            me.receive_heartbeat(State(state), epoch, node, now)
    return now


def test_failback_hands_the_address_back_to_the_restarted_primary() -> None:
    """Rule 6: the backup took over; the primary came back passive; on the operator's word
    the backup goes back to backup and the primary activates, then the backup is passive."""
    p, b, now = start_pair()
    now += (EXPIRY_HEARTBEATS + 1) * HB
    assert b.handle_timer(now).effect is Effect.ACTIVATE  # type: ignore[union-attr]
    p = BinaryStar(State.PRIMARY, "a", 12, heartbeat_s=HB, now=now)  # restarted
    now = exchange(p, b, now, 1)
    assert (p.state, b.state) == (State.PASSIVE, State.ACTIVE)  # no failback by itself
    now = exchange(p, b, now)
    assert (p.state, b.state) == (State.PASSIVE, State.ACTIVE)
    tr = b.hand_back()
    assert (tr.effect, b.state) == (Effect.HAND_BACK, State.BACKUP)
    now = exchange(p, b, now, 1)
    assert (p.state, b.state) == (State.ACTIVE, State.PASSIVE)
    assert b.hand_back().effect is Effect.NONE and b.state is State.PASSIVE


def test_failback_is_refused_by_a_primary_and_without_a_peer() -> None:
    p, b, now = start_pair()
    assert p.hand_back().effect is Effect.NONE and p.state is State.ACTIVE
    now += (EXPIRY_HEARTBEATS + 1) * HB
    b.handle_timer(now)
    assert b.state is State.ACTIVE and b.peer_expired
    assert b.hand_back().effect is Effect.NONE and b.state is State.ACTIVE  # nobody to take it
