"""workers/dialogs/profileshare.py: other workers' counts, summed for the limits (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conf.settings import DialogProfile
from dialogstate.profiles import Profiles
from workers.dialogs.profileshare import ProfileShare

DEFS = [DialogProfile(name="trunk", limit=3),
        DialogProfile(name="caller", with_value=True, value_from="from_user", limit=1),
        DialogProfile(name="all")]  # fmt: skip


def share() -> ProfileShare:
    return ProfileShare(Profiles(DEFS), timeout_s=1.0)


def test_limits_count_the_other_workers() -> None:
    s = share()
    p = s.profiles
    p.add((("trunk", ""),))
    assert p.check((("trunk", ""),)) is None
    s.receive("w2", "node-a", True, [["trunk", "", 2]], 0.0)
    assert p.check((("trunk", ""),)) == (486, "Busy Here")  # 1 here + 2 there = 3
    s.receive("w2", "node-a", False, [["trunk", "", 1]], 0.1)
    assert p.check((("trunk", ""),)) is None
    s.receive("w3", "node-b", True, [["caller", "bob", 1]], 0.1)
    assert p.check((("caller", "bob"),)) is not None and p.check((("caller", "al"),)) is None


def test_only_limited_profiles_are_tracked_and_sent() -> None:
    s = share()
    p = s.profiles
    p.add((("all", ""), ("trunk", ""), ("caller", "bob")))
    assert sorted(s.update()) == [["caller", "bob", 1], ["trunk", "", 1]]
    assert s.update() == []
    p.remove((("caller", "bob"),))
    assert s.update() == [["caller", "bob", 0]]
    assert s.full() == [["trunk", "", 1]]
    s.receive("w2", "n", True, [["all", "", 7], ["nope", "", 1], ["trunk", "", -1]], 0.0)
    assert s.remote == {}


def test_silent_senders_are_forgotten_and_a_taken_over_node_at_once() -> None:
    s = share()
    s.receive("w2", "node-a", True, [["trunk", "", 2]], 0.0)
    s.receive("w3", "node-b", True, [["trunk", "", 1]], 0.9)
    assert s.expire(1.5) == ["w2"] and s.remote == {("trunk", ""): 1}
    assert s.forget_node("node-b") == 1 and s.remote == {}


entry = st.tuples(st.sampled_from(["trunk", "caller"]), st.sampled_from(["", "a", "b"]),
                  st.integers(0, 5))  # fmt: skip
step = st.tuples(st.sampled_from(["w1", "w2", "w3"]), st.booleans(), st.lists(entry, max_size=4))


@given(st.lists(step, max_size=40))
def test_remote_is_the_sum_of_each_senders_latest_counts(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    s = share()
    latest: dict[str, dict[tuple[str, str], int]] = {}
    for sender, full, entries in steps:
        held = latest.setdefault(sender, {})
        if full:
            held.clear()
        for name, value, n in entries:
            held[(name, value)] = n
        s.receive(sender, "n", full, [list(e) for e in entries], 0.0)
    want: dict[tuple[str, str], int] = {}
    for held in latest.values():
        for key, n in held.items():
            want[key] = want.get(key, 0) + n
    assert s.remote == {k: n for k, n in want.items() if n}


def test_senders_are_bounded() -> None:
    """A peer naming ever new senders fills the table to ``MAX_SENDERS`` and no further; the
    senders already known keep being updated."""
    from workers.dialogs.profileshare import MAX_SENDERS

    s = share()
    for i in range(MAX_SENDERS + 10):
        s.receive(f"n/w{i}", "n", True, [["trunk", "", 1]], 0.0)
    assert len(s.senders) == MAX_SENDERS and s.refused == 10
    assert s.remote == {("trunk", ""): MAX_SENDERS}
    s.receive("n/w0", "n", True, [["trunk", "", 0]], 0.1)
    assert s.remote == {("trunk", ""): MAX_SENDERS - 1}
