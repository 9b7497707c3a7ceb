"""The schedule alone: injected time, no clock, no sockets."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from timers.schedule import COMPACT_SLACK, Schedule, Timer


class TestSchedule:
    def test_fires_due_timers_in_deadline_order(self) -> None:
        """expire returns what is due at now, earliest first, and keeps the rest."""
        s = Schedule()
        s.arm("c", 3.0, "k")
        s.arm("a", 1.0, "k")
        s.arm("b", 2.0, "k")
        assert [t.key for t in s.expire(2.5, 10)] == ["a", "b"]
        assert s.next_deadline() == 3.0
        assert len(s) == 1

    def test_never_before_the_deadline(self) -> None:
        """A timer due at 1.0 does not fire at 0.999, and fires at 1.0 exactly."""
        s = Schedule()
        s.arm("a", 1.0, "k")
        assert s.expire(0.999, 10) == []
        assert [t.key for t in s.expire(1.0, 10)] == ["a"]

    def test_batches_are_bounded(self) -> None:
        """At most max_batch per call; the rest stay due for the next call."""
        s = Schedule()
        for i in range(10):
            s.arm(f"k{i}", float(i), "k")
        assert len(s.expire(100.0, 4)) == 4
        assert len(s.expire(100.0, 4)) == 4
        assert len(s.expire(100.0, 4)) == 2
        assert s.next_deadline() is None

    def test_refresh_replaces(self) -> None:
        """Arming an armed key moves its deadline; the old deadline fires nothing."""
        s = Schedule()
        s.arm("a", 1.0, "k", b"old")
        s.arm("a", 5.0, "k", b"new")
        assert s.expire(2.0, 10) == []
        assert s.next_deadline() == 5.0
        (t,) = s.expire(5.0, 10)
        assert t.payload == b"new"

    def test_cancel(self) -> None:
        """A cancelled timer never fires, and cancel says what it removed."""
        s = Schedule()
        s.arm("a", 1.0, "k")
        assert s.cancel("a") is not None
        assert s.cancel("a") is None
        assert s.expire(10.0, 10) == [] and s.next_deadline() is None

    def test_refreshes_do_not_grow_the_heap(self) -> None:
        """Dead heap entries are compacted away: memory tracks live timers."""
        s = Schedule()
        for i in range(20_000):
            s.arm("same", float(i), "k")
        assert len(s._heap) <= 2 + COMPACT_SLACK + 1
        assert len(s) == 1

    def test_compaction_waits_for_the_slack_then_keeps_every_live_timer(self) -> None:
        """Dead entries pile up until the heap holds more than 2 x live + COMPACT_SLACK
        (rule 3: a small schedule does not rebuild on every refresh); the rebuild keeps each
        live timer's current entry, so every key still fires once, at its last deadline."""
        s = Schedule()
        live = 100
        for i in range(live):
            s.arm(f"k{i}", 1000.0 + i, "k")
        sizes = []
        for n in range(2 * COMPACT_SLACK):
            s.arm(f"k{n % live}", 2000.0 + n, "k")  # a refresh: one more dead entry
            sizes.append(len(s._heap))
        limit = 2 * live + COMPACT_SLACK
        assert max(sizes) == limit  # grew one entry per refresh up to the limit ...
        assert sizes[sizes.index(limit) + 1] == live  # ... then the next arm rebuilt it
        fired = s.expire(1e9, 10 * live)
        assert sorted(t.key for t in fired) == sorted(f"k{i}" for i in range(live))
        last = {f"k{n % live}": 2000.0 + n for n in range(2 * COMPACT_SLACK)}
        assert all(t.deadline == last[t.key] for t in fired)
        assert s.next_deadline() is None and len(s) == 0

    def test_a_timer_keeps_what_it_was_armed_with(self) -> None:
        """get/timers/cancel/expire return the fields given to arm, and the defaults for
        the bookkeeping ones left out."""
        s = Schedule()
        s.arm("a", 1.0, "kind-a", b"pa", armer="w1", gen=7, epoch=3, since=0.5)
        s.arm("b", 2.0, "kind-b")
        a, b = s.get("a"), s.get("b")
        assert a is not None and b is not None
        assert a[:8] == ("a", 1.0, "kind-a", b"pa", "w1", 7, 3, 0.5)
        assert b[:8] == ("b", 2.0, "kind-b", b"", "", 0, 0, 0.0)
        assert s.get("c") is None
        assert "a" in s and "b" in s and "c" not in s
        assert sorted(s.timers()) == sorted([a, b])
        assert s.cancel("b") == b
        assert s.expire(5.0, 10) == [a]
        assert s.get("a") is None and list(s.timers()) == []

    def test_set_epoch_changes_the_epoch_alone(self) -> None:
        """A re-stamped timer keeps its other fields and its heap entry: it still fires."""
        s = Schedule()
        s.arm("a", 1.0, "kind", b"p", armer="w1", gen=7, epoch=3, since=0.5)
        before = s.get("a")
        s.set_epoch("a", 9)
        after = s.get("a")
        assert before is not None and after == before._replace(epoch=9)
        assert s.next_deadline() == 1.0
        assert s.expire(1.0, 10) == [after]

    def test_equal_deadlines_keep_arming_order(self) -> None:
        """Ties fire in the order they were armed."""
        s = Schedule()
        for k in "xyz":
            s.arm(k, 1.0, "k")
        assert [t.key for t in s.expire(1.0, 10)] == ["x", "y", "z"]


ops = st.lists(
    st.tuples(
        st.sampled_from(["arm", "arm", "cancel", "expire"]),
        st.integers(0, 15),  # key
        st.floats(0, 100, allow_nan=False),  # deadline, or how far now advances
        st.integers(1, 8),  # max_batch
    ),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_every_armed_timer_fires_exactly_once_never_early_in_order(
    steps: list[tuple[str, int, float, int]],
) -> None:
    """Arm/cancel/refresh in any order: each surviving arm fires once, at or after its
    deadline, and every batch is in deadline order."""
    s = Schedule()
    now = 0.0
    live: dict[str, float] = {}  # the model: key -> deadline of its current arm
    fired: Counter[int] = Counter()
    for n, (op, k, x, batch) in enumerate(steps):
        key = f"k{k}"
        if op == "arm":
            s.arm(key, now + x, "kind", str(n).encode())  # the payload names this arm
            live[key] = now + x
        elif op == "cancel":
            assert (s.cancel(key) is not None) == (key in live)
            live.pop(key, None)
        else:
            now += x
            out = s.expire(now, batch)
            _check_batch(out, now, live, fired)
    while (nd := s.next_deadline()) is not None:  # drain: nothing is lost
        now = max(now, nd)
        _check_batch(s.expire(now, 3), now, live, fired)
    assert not live, "armed timers that never fired"
    assert all(n == 1 for n in fired.values())


def _check_batch(out: list[Timer], now: float, live: dict[str, float], fired: Counter[int]) -> None:
    deadlines = [t.deadline for t in out]
    assert deadlines == sorted(deadlines)
    for t in out:
        assert t.deadline <= now
        assert live.pop(t.key) == t.deadline  # it was armed, with this deadline, and is gone
        fired[int(t.payload)] += 1
