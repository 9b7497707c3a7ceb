"""N-node failover decisions (stateplane/quorum.py): each rule, and a simulated cluster under
hypothesis (kills, restarts, partitions, failbacks): never two holders of one node's calls,
and once the network is still, nothing is held outside a majority group and every member of
it has its address held exactly once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stateplane.quorum import (
    EXPIRY_HEARTBEATS,
    GRACE_HEARTBEATS,
    MAX_GEN,
    MAX_MEMBERS,
    SETTLE_HEARTBEATS,
    Change,
    Quorum,
    Reason,
)

HB = 1.0
ABC = ("a", "b", "c")


@dataclass
class Sim:
    """Nodes in memory; ``groups`` says who hears whom (a partition); time moves in half
    heartbeats, every live node beats on each whole one and every beat reaches its group."""

    names: tuple[str, ...]
    now: float = 0.0
    nodes: dict[str, Quorum] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    group: dict[str, int] = field(default_factory=dict)
    log: list[tuple[str, Change]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for n in self.names:
            self.start(n)

    def start(self, n: str) -> None:
        self.epochs[n] = self.epochs.get(n, 0) + 1
        self.nodes[n] = Quorum(self.names, n, self.epochs[n], heartbeat_s=HB, now=self.now)
        self.group.setdefault(n, 0)

    def kill(self, n: str) -> None:
        self.nodes.pop(n, None)

    def step(self) -> None:
        self.now += HB / 2
        beat = self.now % HB == 0
        for n, q in list(self.nodes.items()):
            self._note(n, q.handle_timer(self.now))
            if not beat:
                continue
            sees, holds, knows, claims = q.beat(self.now)
            for m, other in self.nodes.items():
                if m != n and self.group[m] == self.group[n]:
                    self._note(m, other.receive(n, q.epoch, sees, holds, knows, self.now, claims))

    def run(self, heartbeats: int) -> None:
        for _ in range(2 * heartbeats):
            self.step()

    def _note(self, n: str, changes: list[Change]) -> None:
        self.log.extend((n, c) for c in changes)

    def holders(self, x: str) -> list[str]:
        return [n for n, q in self.nodes.items() if x in q.holds]

    def majority_group(self) -> set[str] | None:
        maj = len(self.names) // 2 + 1
        for g in {self.group[n] for n in self.nodes}:
            members = {n for n in self.nodes if self.group[n] == g}
            if len(members) >= maj:
                return members
        return None


def started(names: tuple[str, ...] = ABC) -> Sim:
    sim = Sim(names)
    sim.run(EXPIRY_HEARTBEATS + SETTLE_HEARTBEATS + 2)
    return sim


class TestRules:
    def test_start_each_holds_its_own(self) -> None:
        """Rule 5: a started cluster has each member holding its own address."""
        sim = started()
        assert {n: sorted(q.holds) for n, q in sim.nodes.items()} == {
            "a": ["a"], "b": ["b"], "c": ["c"]}  # fmt: skip
        assert all(c.reason is Reason.START for _, c in sim.log)

    def test_alone_holds_nothing(self) -> None:
        """Rule 1: one node of three, hearing nobody, never serves."""
        q = Quorum(ABC, "a", 1, heartbeat_s=HB, now=0.0)
        for t in range(20):
            assert q.handle_timer(float(t)) == []
        assert q.holds == set()

    def test_kill_next_takes_over(self) -> None:
        """Rule 4: a's calls and address go to b (next after a), whole replica, once."""
        sim = started()
        sim.kill("a")
        sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 2)
        assert sim.holders("a") == ["b"]
        taken = [(n, c) for n, c in sim.log if c.take and c.member == "a" and c.source]
        assert taken == [("b", Change(True, "a", Reason.TAKEOVER, "a", whole=True))]

    def test_kill_last_wraps_to_first(self) -> None:
        """Rule 4: the order is cyclic: c's calls go to a."""
        sim = started()
        sim.kill("c")
        sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 2)
        assert sim.holders("c") == ["a"]

    def test_holder_of_two_dies_both_go_to_one(self) -> None:
        """Rule 4: b held a's address and its own; b dies; c takes both with b's replica
        (a's calls are in it)."""
        names = ("a", "b", "c", "d", "e")
        sim = started(names)
        sim.kill("a")
        sim.run(6)
        assert sim.holders("a") == ["b"]
        sim.kill("b")
        sim.run(6)
        assert sim.holders("a") == sim.holders("b") == ["c"]
        took = {c.member: c.source for n, c in sim.log if n == "c" and c.take and c.source}
        assert took == {"a": "b", "b": "b"}

    def test_restart_before_expiry_is_a_death(self) -> None:
        """Rule 3: a back with a new epoch lost its calls: b takes them from its replica."""
        sim = started()
        sim.kill("a")
        sim.start("a")
        sim.run(EXPIRY_HEARTBEATS + SETTLE_HEARTBEATS + 2)
        assert sim.holders("a") == ["b"]
        assert ("b", Change(True, "a", Reason.RESTART, "a", whole=True)) in sim.log

    def test_failback(self) -> None:
        """Rule 7: a comes back and waits; b hands back; a takes its address and adopts from
        its replica of b only that address's calls."""
        sim = started()
        sim.kill("a")
        sim.run(5)
        sim.start("a")
        sim.run(6)
        assert sim.holders("a") == ["b"]  # sticky: no automatic failback
        assert sim.nodes["b"].hand_back(sim.now) == [Change(False, "a", Reason.FAILBACK)]
        sim.run(2)
        assert sim.holders("a") == ["a"]
        assert ("a", Change(True, "a", Reason.HANDED_BACK, "b", whole=False)) in sim.log

    def test_hand_back_keeps_a_down_members_address(self) -> None:
        """Rule 7: nothing goes back to a member that is down."""
        sim = started()
        sim.kill("a")
        sim.run(5)
        assert sim.nodes["b"].hand_back(sim.now) == []
        assert sim.holders("a") == ["b"]

    def test_minority_fences_before_majority_takes(self) -> None:
        """Rules 1 and 4: a cut off alone releases its address at expiry; b takes it only
        after, and a never takes anything."""
        sim = started()
        sim.group["a"] = 1
        released = taken = None
        for _ in range(2 * (EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 3)):
            sim.step()
            if released is None and not sim.nodes["a"].holds:
                released = sim.now
            if taken is None and "a" in sim.nodes["b"].holds:
                taken = sim.now
            assert len(sim.holders("a")) <= 1
        assert released is not None and taken is not None and released < taken
        assert not any(n == "a" and c.take for n, c in sim.log[3:])

    def test_heal_gives_nothing_back_by_itself(self) -> None:
        """After a partition heals, b keeps a's address until handed back (rule 7)."""
        sim = started()
        sim.group["a"] = 1
        sim.run(6)
        sim.group["a"] = 0
        sim.run(6)
        assert sim.holders("a") == ["b"] and sim.holders("b") == ["b"]

    def test_two_of_five_declare_nobody_down(self) -> None:
        """Rule 2: down needs a majority of the configured nodes."""
        sim = started(("a", "b", "c", "d", "e"))
        for n in "cde":
            sim.kill(n)
        sim.run(6)
        assert sim.holders("a") == [] and sim.holders("c") == []

    def test_conflict_nearer_keeps(self) -> None:
        """Rule 8: two claimants, the nearer after the member keeps it."""
        q = Quorum(ABC, "c", 1, heartbeat_s=HB, now=0.0)
        q.holds = {"c", "a"}
        out = q.receive("b", 1, ["a", "b", "c"], ["b", "a"], ["a", "c"], 1.0)
        assert Change(False, "a", Reason.CONFLICT) in out and q.holds == {"c"}

    def test_hostile_names_dropped(self) -> None:
        """Rule 9: strangers in a heartbeat are dropped and counted; a heartbeat from a
        non-member or from ourselves is ignored; the tables stay within the members."""
        q = Quorum(ABC, "a", 1, heartbeat_s=HB, now=0.0)
        q.receive("b", 1, ["x", "b"] * 1000, [f"z{i}" for i in range(10_000)], [("y", 1)], 0.5)
        assert q.heard["b"].sees == {"b"} and q.heard["b"].holds == frozenset()
        assert q.counters["too_many_names"] == 2
        assert q.receive("x", 1, ["x"], ["a"], [], 0.6) == [] and "x" not in q.heard
        assert q.receive("a", 2, ["a"], ["a"], [], 0.7) == []
        assert set(q.held_by) <= set(ABC)
        assert q.receive("b", 0, ["b"], ["a"], [], 0.8) == [] and q.counters["stale_epoch"] == 1
        assert q.heard["b"].epoch == 1
        bad = [("x", "b", 1, 1), ("a", "y", 1, 1), ("a", "b", 1, MAX_GEN + 1), ("a", "b", -1, 1),
               ("a", "b", 1.0, 1), ("a", "b", 1), 7]  # fmt: skip
        q.receive("b", 1, ["b"], [], [], 0.9, [*bad, *[("c", "b", 1, 1)] * (2 * MAX_MEMBERS)])
        assert q.counters["bad_claims"] == len(bad) and q.counters["too_many_names"] == 3
        assert q.held_by == {"c": ("b", 1, 1)}

    @pytest.mark.parametrize(
        "members",
        [
            ("a", "b"),
            ("a", "a", "b"),
            ("b", "c", "d"),
            tuple(f"n{i}" for i in range(MAX_MEMBERS + 1)),
        ],
    )
    def test_bad_members(self, members: tuple[str, ...]) -> None:
        with pytest.raises(ValueError):
            Quorum(members, "a", 1, heartbeat_s=HB, now=0.0)


OPS = st.one_of(
    st.tuples(st.just("run"), st.integers(1, 8)),
    st.tuples(st.just("kill"), st.integers(0, 4)),
    st.tuples(st.just("start"), st.integers(0, 4)),
    st.tuples(st.just("cut"), st.lists(st.integers(0, 2), min_size=5, max_size=5)),
    st.tuples(st.just("heal"), st.just(0)),
    st.tuples(st.just("hand_back"), st.integers(0, 4)),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([3, 4, 5]), st.lists(OPS, max_size=25))
# found by random runs before claims were relayed (rule 3): b restarts while a holds b's
# claim of record; b, knowing none, started its own address as a took it (two holders)
@example(3, [("kill", 1), ("kill", 2), ("run", 1), ("start", 1), ("run", 2), ("cut", [0, 2, 0])])
# a restarts, b takes a's address, b dies: only a knew b's claim, the taker (d) did not
@example(4, [("kill", 0), ("start", 0), ("run", 2), ("kill", 1), ("kill", 2), ("kill", 3),
             ("start", 3), ("run", 1), ("start", 1)])  # fmt: skip
# a restarts, b takes a's address, b dies, c restarts and learns b's claim from a, a
# restarts again: nobody up heard b, so the claim is void and a takes its own address
@example(3, [("kill", 0), ("run", 5), ("start", 0), ("run", 5), ("kill", 1), ("kill", 2),
             ("start", 2), ("run", 1), ("kill", 0), ("start", 0)])  # fmt: skip
# the next three broke safety with the record relayed but not yet these rules: b restarts,
# a dies and restarts across a cut: b, having heard only a's new process, took a's address
# over from a's old one beside c, who had heard it (rule 4: the claim's epoch)
@example(3, [("kill", 1), ("start", 1), ("kill", 0), ("run", 2), ("cut", [2, 2, 0]),
             ("start", 0)])  # fmt: skip
# b's claim on a's address reached c in the step a new cut put c with the minority: c took
# it from b as a, which never heard it, started its own (rule 3: act on news a bit later)
@example(5, [("cut", [2, 0, 0, 0, 0]), ("run", 2), ("cut", [2, 0, 2, 0, 2]), ("run", 2),
             ("cut", [0, 0, 2, 2, 0])])  # fmt: skip
# b, fenced holding a's address, comes back: up for a, which took its address as handed
# back, still down for c, which took it over from b (rule 5: up for a while first)
@example(5, [("cut", [0, 1, 1, 1, 0]), ("run", 3), ("kill", 4), ("cut", [0, 1, 0, 0, 0]),
             ("run", 2), ("heal", 0)])  # fmt: skip
def test_never_two_holders(n: int, ops: list[tuple[str, object]]) -> None:
    """Whatever dies, restarts, splits or heals: no address has two holders at any step;
    after a still period every address is held exactly once inside a majority group, and
    nothing outside it."""
    names = tuple("abcde"[:n])
    sim = started(names)

    def check() -> None:
        for x in names:
            assert len(sim.holders(x)) <= 1, (x, sim.holders(x), sim.log[-6:])

    for op, arg in ops:
        if op == "run":
            for _ in range(2 * int(arg)):  # type: ignore[call-overload]
                sim.step()
                check()
        elif op == "kill":
            sim.kill(names[int(arg) % n])  # type: ignore[call-overload]
        elif op == "start" and names[int(arg) % n] not in sim.nodes:  # type: ignore[call-overload]
            sim.start(names[int(arg) % n])  # type: ignore[call-overload]
        elif op == "cut":
            sim.group.update(zip(names, arg))  # type: ignore[call-overload]
        elif op == "heal":
            sim.group = dict.fromkeys(names, 0)
        elif op == "hand_back" and names[int(arg) % n] in sim.nodes:  # type: ignore[call-overload]
            sim.nodes[names[int(arg) % n]].hand_back(sim.now)  # type: ignore[call-overload]
        check()
    sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + SETTLE_HEARTBEATS + 4)
    check()
    major = sim.majority_group()
    for x in names:
        if major is None:
            assert sim.holders(x) == []
        elif x in major:  # a member of the majority serves its address, or a survivor does
            assert len(sim.holders(x)) == 1 and sim.holders(x)[0] in major, (x, sim.log[-8:])
        else:  # its holder died unheard by every node up now (all restarted): nobody can
            assert set(sim.holders(x)) <= major, (x, sim.log[-8:])


def test_taker_must_have_heard_the_holder() -> None:
    """Rule 4: b and c die, c restarts: c never heard b (no replica of it), so a, after b
    in the order past c, takes b's address and replica (and c's: c's restart lost its
    calls, rule 3)."""
    sim = started()
    sim.kill("b")
    sim.kill("c")
    sim.start("c")
    sim.run(EXPIRY_HEARTBEATS + SETTLE_HEARTBEATS + GRACE_HEARTBEATS + 2)
    assert sim.holders("b") == ["a"] and sim.holders("c") == ["a"]
    assert ("a", Change(True, "b", Reason.TAKEOVER, "b", whole=True)) in sim.log


def test_hugz_carry_the_view() -> None:
    """A member's HUGZ round-trips its view (two name lists, whom it knows since which epoch,
    its claims); a pair's has none; a list that is not one, too long, or with an overlong
    name is refused, and so is an entry of knows or claims of the wrong shape."""
    import msgpack

    from stateplane import updates as up

    h = up.Hugz("a", 1, 2, "", ("a", "b"), ("a",), (("b", 1), ("c", 3)),
                (("a", "a", 1, 3), ("b", "a", 1, 4)))  # fmt: skip
    assert up.unpack(up.pack(h)) == h
    assert up.unpack(up.pack(up.Hugz("a", 1, 2, ""))) == up.Hugz("a", 1, 2, "")
    frames = up.pack(h)
    for at, bad in [(5, {"a": 1}), (5, ["a"] * (MAX_MEMBERS + 1)), (5, ["x" * 200]), (5, [3]),
                       (7, ["b"]), (7, [["b"]]), (7, [["b", "1"]]), (7, [["x" * 200, 1]]),
                       (8, ["a"]), (8, [["a", "b", 1]]), (8, [["a", "b", -1, 2]]),
                       (8, [["a", "b", 1, "2"]]), (8, [["a", "b", 1, 2]] * (MAX_MEMBERS + 1))]:
        body = msgpack.unpackb(frames[1])
        body[at] = bad
        with pytest.raises(up.UpdateError):
            up.unpack([frames[0], msgpack.packb(body)])
    body = msgpack.unpackb(frames[1])
    with pytest.raises(up.UpdateError):  # a member's HUGZ without its claims
        up.unpack([frames[0], msgpack.packb(body[:-1])])


def test_a_paused_node_lets_go_and_does_not_take_back() -> None:
    """Rule 1: a's process pauses (no input at all) long enough for b to take its address;
    resumed, a's first input (a stale heartbeat) finds the stall: a releases everything,
    and after settling finds b holding its address: it keeps off it."""
    sim = started()
    a = sim.nodes.pop("a")
    sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 2)
    assert sim.holders("a") == ["b"]
    sim.nodes["a"] = a  # resumed
    sees, holds, knows, claims = sim.nodes["b"].beat(sim.now - 3 * HB)
    out = a.receive("b", sim.nodes["b"].epoch, sees, holds, knows, sim.now, claims)
    assert out == [Change(False, "a", Reason.NO_QUORUM)] and a.fenced == {"a"}
    sim.run(SETTLE_HEARTBEATS + 3)
    assert sim.holders("a") == ["b"] and a.holds == set()


def test_a_healed_majority_serves_every_member_address_after_a_kill() -> None:
    """Rule 3, found by hypothesis: b takes a's address, is cut off with d while c takes a's
    and b's from b's replica (a and e hear it; e takes d's), then the cut heals and c dies
    before its next heartbeat. b and d never heard c's claims from c: they learn them from a's and e's
    records, so d (next after c) takes all three, and every address is held once, by one
    node. Before claims were relayed, d took only c's and a's stayed unheld: a and e waited
    for d, d held b's old claim, which b had let go, as the record."""
    names = tuple("abcde")
    sim = started(names)
    ops: list[tuple[str, Any]] = [("cut", [1, 0, 0, 0, 0]), ("run", 2), ("cut", [0, 0, 0, 0, 0]),
                                  ("run", 1), ("cut", [1, 0, 1, 0, 1]), ("run", 3), ("heal", 0),
                                  ("kill", 2)]  # fmt: skip
    for op, arg in ops:
        if op == "run":
            for _ in range(2 * arg):
                sim.step()
        elif op == "cut":
            sim.group.update(zip(names, arg))
        elif op == "heal":
            sim.group = dict.fromkeys(names, 0)
        elif op == "kill":
            sim.kill(names[arg])
        for x in names:
            assert len(sim.holders(x)) <= 1
    for _ in range(2 * (EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + SETTLE_HEARTBEATS + 4)):
        sim.step()
        assert all(len(sim.holders(x)) <= 1 for x in names)
    assert {x: sim.holders(x) for x in names} == {
        "a": ["d"], "b": ["d"], "c": ["d"], "d": ["e"], "e": ["e"]}  # fmt: skip
    took = {c.member: c.source for n, c in sim.log[-6:] if n == "d" and c.take}
    assert took == {"a": "c", "b": "c", "c": "c"}


def test_a_restarted_member_waits_for_the_holder_it_does_not_hear_yet() -> None:
    """Rule 5, seen in tests/e2e/test_cluster_failover.py on a loaded box: a restarts while
    b holds its address, and hears c for a while before b (its state plane connects to the
    peers one by one). c's record says b holds a's address; a, not hearing b, takes nothing
    (without the record it started its own address, and b gave it up to rule 8). Once b is
    heard, holding it, a stays off it."""
    sim = started()
    sim.kill("a")
    sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 2)
    assert sim.holders("a") == ["b"]
    a = Quorum(ABC, "a", 2, heartbeat_s=HB, now=sim.now)

    def hear(n: str) -> list[Change]:
        sees, holds, knows, claims = sim.nodes[n].beat(sim.now)
        return a.receive(n, sim.nodes[n].epoch, sees, holds, knows, sim.now, claims)

    for peers in ("c", "bc"):  # b and c hear a all along
        for _ in range(2 * (SETTLE_HEARTBEATS + EXPIRY_HEARTBEATS + 2)):
            sim.step()
            out = a.handle_timer(sim.now)
            if sim.now % HB == 0:
                out += [ch for n in peers for ch in hear(n)]
                sees, holds, knows, claims = a.beat(sim.now)
                for q in sim.nodes.values():
                    sim.log += [(q.me, ch) for ch in q.receive("a", 2, sees, holds, knows, sim.now,
                                                                claims)]  # fmt: skip
            assert not any(ch.take for ch in out), out
        qs = a.quorate_since  # settled long enough to take, had it found anything to take
        assert qs is not None and qs + (SETTLE_HEARTBEATS + EXPIRY_HEARTBEATS) * HB < sim.now
    assert a.holds == set() and sim.holders("a") == ["b"]
    assert not any(ch.reason is Reason.CONFLICT for _, ch in sim.log)


def test_a_dead_process_s_last_claim_does_not_take_an_address_from_its_taker() -> None:
    """Rule 8 against claims heard within expiry, seen in tests/e2e/test_cluster_failover.py
    on a loaded box: b took a's address; a restarts and c hears it first, so for b a is no
    longer down (c's vote), and b's last heartbeat from a is the dead process's, claiming
    its own address. b keeps the address: that claim is not a conflict."""
    sim = started()
    sim.kill("a")
    sim.run(EXPIRY_HEARTBEATS + GRACE_HEARTBEATS + 2)
    assert sim.holders("a") == ["b"]
    a = Quorum(ABC, "a", 2, heartbeat_s=HB, now=sim.now)
    b, c = sim.nodes["b"], sim.nodes["c"]
    sees, holds, knows, claims = a.beat(sim.now)
    assert c.receive("a", 2, sees, holds, knows, sim.now, claims) == []
    sees, holds, knows, claims = c.beat(sim.now)
    assert "a" in sees
    out = b.receive("c", c.epoch, sees, holds, knows, sim.now, claims)
    assert not any(ch.reason is Reason.CONFLICT for ch in out), out
    assert "a" in b.holds and not b.is_down("a", sim.now)
