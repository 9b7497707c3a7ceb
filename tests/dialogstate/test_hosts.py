"""Who owns a Call-ID across hosts, and what a peer host may hand over (dialogstate/hosts.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from conf.workerset import WorkerSet
from dialogstate import hosts
from dialogstate.hosts import RING_SOURCE, HostView, host_of, host_source, pairs_ring, ring_pairs
from dialogstate.sources import vanished_source

B1, B2 = "b.worker.1-101", "b.worker.2-102"
C1, C2 = "c.worker.1-201", "c.worker-202"
EPS = {B1: "tcp://127.0.0.3:4001", B2: "tcp://127.0.0.3:4002", C1: "tcp://127.0.0.4:5001",
       C2: "tcp://127.0.0.4:5002"}  # fmt: skip


def view_on_c(me: str = C2, ring: tuple[str, ...] = (B1, B2, C1, C2)) -> HostView:
    """Worker ``me`` of host c, with c's workers C1 and ``me`` live in its run directory."""
    v = HostView("c", me)
    v.set_local({C1: "ipc:///run/c/worker-c1.ipc", me: ""})
    v.set_ring({i: EPS[i] for i in ring}, 0.0)
    return v


def cid_owned(ring: WorkerSet, ident: str, start: int = 0) -> str:
    """A Call-ID ``ring`` gives to ``ident``."""
    for i in range(start, start + 10_000):
        if ring.owner(f"call-{i}".encode()) == ident:
            return f"call-{i}"
    raise AssertionError(ident)


def rec(cid: str) -> list[Any]:
    return [cid, "ftag", "rest of the record"]


class TestView:
    def test_ours_from_the_run_directory_others_from_the_ring(self) -> None:
        """Rule 1: the ring's entries for our host are ignored; ours come from the run dir."""
        v = HostView("c", C2)
        v.set_local({C2: "", C1: "ipc://c1"})
        v.set_ring({B1: EPS[B1], "c.worker.9-999": "tcp://127.0.0.4:9"}, 0.0)
        assert v.view() == {B1: EPS[B1], C2: "", C1: "ipc://c1"}
        assert v.remote() == {B1: EPS[B1]} and v.hosts() == {"b"}
        assert v.first_ring() == [host_source("b")]

    def test_owner_is_the_ingresses_hash_over_the_view(self) -> None:
        v = view_on_c()
        ring = WorkerSet.fixed(dict.fromkeys([B1, B2, C1, C2], ""))
        for i in range(200):
            assert v.owner(f"x{i}") == ring.owner(f"x{i}".encode())

    def test_a_gone_mark_removes_a_worker_until_it_leaves_the_ring(self) -> None:
        """Rule 4: marked, then forgotten when the ring no longer has it."""
        v = view_on_c()
        assert v.mark_gone(B1, 1.0) and B1 not in v.view()
        assert not v.set_ring({i: EPS[i] for i in (B1, B2, C1, C2)}, 2.0)
        assert B1 not in v.view()
        v.set_ring({i: EPS[i] for i in (B2, C1, C2)}, 3.0)
        v.set_ring({i: EPS[i] for i in (B1, B2, C1, C2)}, 4.0)  # a new B1 (pids repeat)
        assert B1 in v.view()

    def test_gone_marks_are_bounded_and_expire(self) -> None:
        v = HostView("c", C2)
        ring = {f"b.worker-{i}": f"tcp://127.0.0.3:{1000 + i}" for i in range(hosts.MAX_GONE + 5)}
        v.set_ring(ring, 0.0)
        for i, ident in enumerate(ring):
            v.mark_gone(ident, float(i))
        assert len(v._gone) == hosts.MAX_GONE
        v.set_ring(ring, hosts.GONE_S + hosts.MAX_GONE + 10)
        assert not v._gone

    def test_only_another_hosts_worker_in_the_ring_can_be_marked(self) -> None:
        v = view_on_c()
        assert not v.mark_gone("b.worker-777", 0.0) and not v.mark_gone(C1, 0.0)

    def test_ring_pairs_round_trip_and_refuse_junk(self) -> None:
        assert pairs_ring(ring_pairs(EPS)) == EPS
        for junk in ([["a"]], [[1, "x"]], "x", [["a", "b", "c"]], [["a", "b"]] * 3):
            assert pairs_ring(junk, limit=2) is None


class TestHanded:
    def test_a_host_speaks_for_itself_and_its_own_workers(self) -> None:
        """Rule 3: stateplane@b and stateplane:<b's worker> from b; nothing else."""
        v = view_on_c()
        assert v.check_handed("b", host_source("b"), 0.0)
        assert v.check_handed("b", vanished_source(B1), 0.0)
        assert B1 not in v.view()  # rule 4
        for peer, source in (("b", host_source("c")), ("b", vanished_source(C1)),
                             ("edge", vanished_source(B2)), ("b", "stateplane"),
                             ("b", RING_SOURCE), ("", host_source("")), ("c", host_source("c")),
                             ("b", 7)):  # fmt: skip
            assert not v.check_handed(peer, source, 0.0), (peer, source)
        assert B2 in v.view() and C1 in v.view()
        assert v.counters["handed_refused"] == 8


class TestAdopt:
    def test_a_joiner_takes_what_it_owns_from_the_host_that_held_it(self) -> None:
        """Rule 3 for a joiner: records it owns now that a worker of the sender owned before."""
        v = view_on_c()
        before = WorkerSet.fixed(dict.fromkeys([B1, B2, C1], ""))
        ours = cid_owned(v.ring(), C2)
        assert host_of(str(before.owner(ours.encode()))) in ("b", "c")
        from_b = [r for r in (rec(cid_owned(v.ring(), C2, s)) for s in range(0, 4000, 200))
                  if host_of(str(before.owner(r[0].encode()))) == "b"]  # fmt: skip
        from_c = [r for r in (rec(cid_owned(v.ring(), C2, s)) for s in range(0, 4000, 200))
                  if host_of(str(before.owner(r[0].encode()))) == "c"]  # fmt: skip
        not_ours = rec(cid_owned(v.ring(), B1))
        assert from_b and from_c
        got = v.check_adopt("b", ["b", [*from_b, *from_c, not_ours], True, host_source("b")], 0.0)
        assert got == from_b
        assert v.counters["adopt_refused_origin"] == len(from_c)
        assert v.counters["adopt_refused_owner"] == 1

    def test_a_vanished_workers_records_go_to_their_owner_without_it(self) -> None:
        """Rule 3 for a vanished worker: ours without it, its before; rule 4 marks it."""
        v = view_on_c()
        with_b1 = v.ring()
        without = WorkerSet.fixed({i: "" for i in (B2, C1, C2)})
        moved = [rec(c) for c in (f"v{i}" for i in range(3000))
                 if with_b1.owner(c.encode()) == B1 and without.owner(c.encode()) == C2]  # fmt: skip
        stays = rec(cid_owned(with_b1, B2))
        assert moved
        got = v.check_adopt("b", ["b", [*moved, stays], True, vanished_source(B1)], 0.0)
        assert got == moved and B1 not in v.view()
        assert v.counters["adopt_refused_owner"] == 1

    def test_a_copy_to_keep_is_checked_as_if_the_owner_took_it(self) -> None:
        """Rule 5: C2 keeps for C1 what a vanished B1 handed C1 (C1's in the view without
        B1), nothing C2 or another host's worker owns, and only for a worker of its host."""
        v = view_on_c()
        with_b1 = v.ring()
        without = WorkerSet.fixed({i: "" for i in (B2, C1, C2)})
        moved = [rec(c) for c in (f"v{i}" for i in range(3000))
                 if with_b1.owner(c.encode()) == B1 and without.owner(c.encode()) == C1]  # fmt: skip
        to_me = [rec(c) for c in (f"v{i}" for i in range(3000))
                 if with_b1.owner(c.encode()) == B1 and without.owner(c.encode()) == C2][:1]  # fmt: skip
        assert moved and to_me
        header = ["b", [*moved, *to_me], True, vanished_source(B1), C1]
        assert v.check_adopt("b", header, 0.0) == moved
        assert v.counters["adopt_refused_owner"] == 1
        for other in (B2, "c.worker-9", ""):  # not a worker of this host
            got = v.check_adopt("b", ["b", moved, True, vanished_source(B1), other], 0.0)
            assert got == [], other

    def test_a_host_cannot_hand_over_what_is_not_its_own(self) -> None:
        """Another host's node name, another host's worker, our own name: all refused."""
        v = view_on_c()
        r = rec(cid_owned(v.ring(), C2))
        for header in (["edge", [r], True, host_source("b")],  # node is not the peer
                       ["b", [r], True, vanished_source(C1)],  # our worker, not b's
                       ["b", [r], True, host_source("edge")],  # another host's source
                       ["b", [r], True],  # no source
                       ["b", [r], True, 3]):  # fmt: skip
            assert v.check_adopt("b", header, 0.0) == [], header
        assert v.counters["adopt_refused_source"] == 5 and C1 in v.view()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.sampled_from([B1, B2, C1, C2, "edge.worker-1"]), max_size=5),
           st.sampled_from(["b", "c", "edge", ""]), st.text(max_size=30),
           st.lists(st.lists(st.text(max_size=8), min_size=1, max_size=3), max_size=20))  # fmt: skip
    def test_whatever_a_peer_sends_only_owned_records_pass(
        self, ring: list[str], peer: str, source: str, records: list[list[Any]]
    ) -> None:
        """Invariant: every record accepted is owned by this worker in the view afterwards,
        and was sent by a peer naming itself; nothing raises."""
        v = HostView("c", C2)
        v.set_local({C2: "", C1: "ipc://c1"})
        v.set_ring({i: EPS.get(i, "tcp://127.0.0.2:1") for i in ring}, 0.0)
        for src in (source, host_source(peer), *(vanished_source(i) for i in ring)):
            got = v.check_adopt(peer, [peer, records, True, src], 0.0)
            for r in got:
                assert v.owner(r[0]) == C2 and peer not in ("c", "")
            v.check_handed(peer, src, 0.0)
