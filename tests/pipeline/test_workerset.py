"""Worker liveness and Call-ID ownership (rendezvous hashing), with time as an argument."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from conf.workerset import WorkerSet

CALLS = [f"{n}-4242@127.0.0.1".encode() for n in range(3000)]


def _set(*idents: str, now: float = 0.0) -> WorkerSet:
    ws = WorkerSet(heartbeat_s=0.25, liveness=4)
    for i in idents:
        ws.heartbeat(i, f"ipc:///{i}", True, now)
    return ws


class TestLiveness:
    def test_join_and_leave(self) -> None:
        """First heartbeat joins; a 'down' heartbeat leaves at once."""
        ws = WorkerSet(0.25, 4)
        assert ws.heartbeat("w-1", "e", True, 0.0) == "joined"
        assert ws.heartbeat("w-1", "e", True, 0.1) is None
        assert ws.heartbeat("w-1", "e", False, 0.2) == "left"
        assert len(ws) == 0 and ws.owner(b"x") is None

    def test_expiry_after_missed_heartbeats(self) -> None:
        """A worker silent for liveness x heartbeat is dropped, not before."""
        ws = _set("w-1", "w-2")
        ws.heartbeat("w-2", "e", True, 0.9)
        assert ws.expire(0.99) == []
        dead = ws.expire(1.01)
        assert [w.ident for w in dead] == ["w-1"]
        assert ws.idents == ["w-2"]

    def test_no_workers_no_owner(self) -> None:
        """With nobody alive there is no owner."""
        assert WorkerSet(0.25, 4).owner(b"call") is None


class TestOwnership:
    def test_same_owner_everywhere(self) -> None:
        """Two ingresses with the same live set pick the same worker for every call."""
        a = _set("worker.1-10", "worker.2-11", "worker.3-12")
        b = _set("worker.3-12", "worker.1-10", "worker.2-11")
        assert all(a.owner(c) == b.owner(c) for c in CALLS)

    def test_balance(self) -> None:
        """Calls spread evenly over three and four workers (within 10 %)."""
        for n in (3, 4):
            ws = _set(*[f"worker.{i}-{100 + i}" for i in range(n)])
            counts = Counter(ws.owner(c) for c in CALLS)
            assert len(counts) == n
            assert max(counts.values()) < len(CALLS) / n * 1.1

    def test_leaving_moves_only_its_calls(self) -> None:
        """When a worker leaves, only the calls it owned change owner."""
        ws = _set("w-1", "w-2", "w-3")
        before = {c: ws.owner(c) for c in CALLS}
        ws.heartbeat("w-2", "e", False, 1.0)
        for c in CALLS:
            if before[c] != "w-2":
                assert ws.owner(c) == before[c]

    @settings(max_examples=50, deadline=None)
    @given(st.sets(st.text("abcdef0123456789.-", min_size=1, max_size=12), min_size=1, max_size=6))
    def test_joining_takes_only_new_calls(self, idents: set[str]) -> None:
        """A joining worker only takes calls for itself; others keep theirs."""
        ws = _set(*idents)
        before = {c: ws.owner(c) for c in CALLS[:300]}
        ws.heartbeat("newcomer", "e", True, 0.0)
        for c, owner in before.items():
            assert ws.owner(c) in (owner, "newcomer")
