"""Publisher and replica in memory: in-order replication, gaps, stale epochs, duplicates,
liveness, and convergence under random loss, duplication and reordering."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateplane.replica import (
    PeerBack,
    PeerSilent,
    Publisher,
    Replica,
    Resnapshot,
    Resynced,
    StaleRefused,
    next_epoch,
)  # fmt: skip
from stateplane.updates import Hugz, pack, unpack

from ..workers.dialog_helpers import T0, W0, table
from .helpers import NODE, Pair, byes, wire

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPS = ["invite", "180", "200", "reinvite", "bye", "fail"]


def joined(epoch: int = 1) -> Pair:
    """A pair whose replica has done its first (empty) sync."""
    p = Pair(epoch)
    p.answer(p.replica.start(T0), T0)
    assert not p.replica.syncing and p.replica.epoch == epoch
    return p


def test_in_order_replication_builds_the_same_byes() -> None:
    """Deltas of real calls, replicated in order, give a table with the same dialogs, the
    same BYEs and the same profile counts; no resnapshot is needed."""
    p = joined()
    for n in range(5):
        for i, op in enumerate(["invite", "180", "200"]):
            assert p.deliver(p.step(n, op, T0 + i), T0 + i) == []
    p.deliver(p.step(1, "reinvite", T0 + 5), T0 + 5)
    p.deliver(p.step(2, "bye", T0 + 6), T0 + 6)
    p.deliver(p.step(3, "invite", T0 + 7), T0 + 7)  # a retransmission: no delta
    assert p.converged(T0 + 7) and len(p.replica.table) == 4
    assert byes(p.replica.table) == byes(p.owner)
    assert p.replica.table.profiles.view() == p.owner.profiles.view()
    assert p.replica.counters["resnapshot"] == 1  # the join only
    assert max(p.applied.values()) == 1 and len(p.applied) == p.pub.seq


def test_gap_asks_for_a_resnapshot_and_converges() -> None:
    """A lost update makes the next one a gap: the replica asks (from its held seq), the
    publisher replays its backlog, and the replica converges."""
    p = joined()
    p.deliver(p.step(1, "invite", T0), T0)
    lost = p.step(1, "180", T0 + 1)  # dropped on the way
    assert lost
    events = p.deliver(p.step(1, "200", T0 + 2), T0 + 2)
    (ask,) = events
    assert isinstance(ask, Resnapshot) and ask.reason == "gap"
    assert (ask.ask.epoch, ask.ask.seq) == (1, 1)
    done = p.answer(events, T0 + 2)
    assert [type(e) for e in done] == [Resynced] and not done[0].full  # type: ignore[union-attr]
    assert p.converged(T0 + 2) and byes(p.replica.table) == byes(p.owner)
    assert max(p.applied.values()) == 1


def test_gap_past_the_backlog_takes_a_full_snapshot() -> None:
    """When the backlog no longer holds the missing updates, the answer is a full snapshot
    in chunks, swapped in at the end."""
    p = Pair(backlog=2)
    p.answer(p.replica.start(T0), T0)
    for n in range(6):
        p.step(n, "invite", T0)  # all lost
    p.step(4, "200", T0 + 1)
    events = p.deliver(p.step(5, "180", T0 + 2), T0 + 2)
    done = p.answer(events, T0 + 2, chunk=2)
    assert isinstance(done[-1], Resynced) and done[-1].full and done[-1].records == 6
    assert p.converged(T0 + 2) and byes(p.replica.table) == byes(p.owner)


def test_heartbeat_reveals_a_lost_tail() -> None:
    """The last update of a burst is lost and nothing follows: the next HUGZ shows the
    publisher is ahead, and the replica resnapshots."""
    p = joined()
    p.step(1, "invite", T0)  # lost
    events = p.replica.receive(wire(p.pub.hugz()), T0 + 0.25, W0)  # type: ignore[arg-type]
    assert [e.reason for e in events] == ["behind"]  # type: ignore[union-attr]
    p.answer(events, T0 + 0.25)
    assert p.converged(T0 + 0.25) and len(p.replica.table) == 1


def test_stale_epoch_is_refused_and_reported() -> None:
    """After the publisher restarts (epoch 2), an update of the old owner (epoch 1) that
    comes back is refused, reported, and changes nothing."""
    old = joined(epoch=1)
    frames = old.step(1, "invite", T0)
    new = Publisher(NODE, epoch=2)
    rep = old.replica
    events = rep.receive(wire(new.hugz()), T0 + 1, W0 + 1)  # type: ignore[arg-type]
    assert [e.reason for e in events] == ["behind"]  # type: ignore[union-attr]
    src = table()
    old.owner, old.pub = src, new
    old.answer(events, T0 + 1)
    assert (rep.epoch, rep.seq, len(rep.table)) == (2, 0, 0)
    refused = old.deliver(frames, T0 + 2)
    assert refused == [StaleRefused(NODE, 1, 1, 2)]
    assert len(rep.table) == 0 and rep.counters["stale"] == 1
    hug = rep.receive(Hugz(NODE, 1, 9), T0 + 3, W0)
    assert hug == [StaleRefused(NODE, 1, 9, 2)]


def test_new_epoch_update_resnapshots() -> None:
    """An update of a higher epoch means the publisher restarted: resnapshot, not apply."""
    p = joined(epoch=1)
    p.deliver(p.step(1, "invite", T0), T0)
    p.pub = Publisher(NODE, epoch=5)
    events = p.deliver(p.step(2, "invite", T0 + 1), T0 + 1)
    assert [e.reason for e in events] == ["new_epoch"]  # type: ignore[union-attr]
    p.answer(events, T0 + 1)
    assert p.replica.epoch == 5 and p.converged(T0 + 1)


def test_duplicates_are_ignored() -> None:
    """Every frame delivered twice: each update is applied once."""
    p = joined()
    for op in ["invite", "180", "200", "reinvite"]:
        f = p.step(1, op, T0 + 1)
        assert p.deliver(f + f, T0 + 1) == []
    assert p.replica.counters["duplicate"] == p.pub.seq
    assert set(p.applied.values()) == {1} and p.converged(T0 + 1)


def test_idle_is_not_silent() -> None:
    """HUGZ keep an idle publisher alive; silence for two heartbeats reports it once, and
    hearing it again reports it back."""
    p = joined()
    pub, rep = p.pub, p.replica
    assert (pub.heartbeat_s, rep.heartbeat_s, rep.liveness) == (0.25, 0.25, 2)
    assert pub.handle_timer(T0) is not None
    now = T0
    for _ in range(20):  # 5 s idle, heartbeats on time
        now += 0.25
        hug = pub.handle_timer(now)
        assert hug is not None and pub.handle_timer(now) is None
        rep.receive(wire(hug), now, W0)  # type: ignore[arg-type]
        assert rep.handle_timer(now + 0.1) == [] and rep.alive
    assert rep.next_timer() == now + 0.5
    assert rep.handle_timer(now + 0.49) == []
    assert rep.handle_timer(now + 0.5) == [PeerSilent(NODE, now)]
    assert rep.handle_timer(now + 5) == [] and not rep.alive
    back = rep.receive(pub.hugz(), now + 6, W0)
    assert back[0] == PeerBack(NODE)


def test_other_nodes_and_epochs() -> None:
    assert next_epoch(5, 0.001) == 6 and next_epoch(5, 1000.0) == 1_000_000
    rep = Replica(NODE, table)
    assert rep.receive(Hugz("other", 1, 1), 0, 0) == [] and rep.counters["other_node"] == 1


def test_stalled_sync_is_asked_again() -> None:
    """A lost ICANHAZ or answer: after ``sync_timeout_s`` without progress, a new request."""
    rep = Replica(NODE, table, sync_timeout_s=5, now=T0)
    (first,) = rep.start(T0)
    assert [type(e) for e in rep.handle_timer(T0 + 4.9)] == [PeerSilent]  # nothing heard
    again = [e for e in rep.handle_timer(T0 + 5) if isinstance(e, Resnapshot)]
    assert again[0].ask.req == first.ask.req + 1  # type: ignore[union-attr]


@PROPS
@given(
    script=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(OPS)), min_size=1, max_size=40),
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0, 0.5), dup=st.floats(0, 0.5), reorder=st.floats(0, 0.5),
)  # fmt: skip
def test_converges_under_loss_duplication_and_reordering(
    script: list[tuple[int, str]], seed: int, loss: float, dup: float, reorder: float
) -> None:
    """Whatever the link drops, duplicates or reorders, once the link is clean again and a
    heartbeat arrives the replica resnapshots if it must and holds the owner's state; and it
    never applies an update twice."""
    rng = random.Random(seed)
    p = joined()
    in_flight: list[list[bytes]] = []
    now = T0
    for n, op in script:
        now += 0.01
        for f in p.step(n, op, now):
            if rng.random() < loss:
                continue
            in_flight.append(f)
            if rng.random() < dup:
                in_flight.append(f)
        if in_flight and rng.random() < reorder:
            i, j = rng.randrange(len(in_flight)), rng.randrange(len(in_flight))
            in_flight[i], in_flight[j] = in_flight[j], in_flight[i]
        if rng.random() < 0.5:
            p.answer(p.deliver(in_flight, now), now)
            in_flight = []
    p.answer(p.deliver(in_flight, now), now)
    p.answer(p.replica.receive(unpack(pack(p.pub.hugz())), now, W0 + now - T0), now)  # type: ignore[arg-type]
    assert not p.replica.syncing
    assert (p.replica.epoch, p.replica.seq) == (p.pub.epoch, p.pub.seq)
    assert p.converged(now)
    assert byes(p.replica.table) == byes(p.owner)
    assert all(v == 1 for v in p.applied.values())
