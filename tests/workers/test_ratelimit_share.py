"""Shared ratelimit pipes (workers/ratelimit/pipes.py rules 5-6, workers/ratelimit/peers.py) in
simulated time: participants in memory, the test moving their counts between them."""

from __future__ import annotations

import heapq
import random
from typing import Any, Literal, cast

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.load import ConfigError, from_dict
from conf.settings import RateLimit
from workers.ratelimit.peers import SHARE_MAX_PEERS, SHARE_PEER_TIMEOUT_S, SLIDING
from workers.ratelimit.pipes import SHARE_INTERVAL_S, RateLimiter
from workers.ratelimit.share import decode

Algorithm = Literal["taildrop", "red", "sliding", "feedback"]
LIMIT = 100.0
DURATION_S = 20.0
T0 = 1000.0  # monotonic clocks start far from 0


def limiter(algorithm: str = "sliding", shared: bool = True, window_s: float = 1.0,
            seed: int = 1) -> RateLimiter:  # fmt: skip
    cfg = RateLimit(name="p", algorithm=cast(Algorithm, algorithm), limit_per_s=LIMIT,
                    window_s=window_s, shared=shared)  # fmt: skip
    return RateLimiter([cfg], random.Random(seed))


class Cluster:
    """Participants of one pipe in simulated time: each ticks every interval at its own
    phase, and its counts reach the others ``delay_s`` later (the test is the network)."""

    def __init__(self, n: int, algorithm: str = "sliding", shared: bool = True) -> None:
        self.members = [limiter(algorithm, shared, seed=i) for i in range(n)]

    def exchange(self, now: float) -> None:
        """Every participant ticks at ``now`` and the others hear it at once."""
        out = [(f"w{i}", m.tick(now)) for i, m in enumerate(self.members)]
        for i, m in enumerate(self.members):
            for sender, counts in out:
                if sender != f"w{i}":
                    m.receive(sender, counts, now)

    def offer(self, rates: list[float], duration_s: float = DURATION_S, delay_s: float = 0.005,
              phase_s: float = 0.0317, seed: int = 0, start: float = T0) -> int:  # fmt: skip
        """Participant i offered ``rates[i]`` requests/s (evenly, each jittered by up to half
        a gap) for ``duration_s``: how many passed in all."""
        rng = random.Random(seed)
        events: list[tuple[float, int, int, Any]] = []
        for i, rate in enumerate(rates):
            heapq.heappush(events, (start + (phase_s * (i + 1)) % SHARE_INTERVAL_S, 1, i, None))
            for k in range(int(rate * duration_s)):
                heapq.heappush(events, (start + (k + rng.random() / 2) / rate, 0, i, None))
        passed, end = 0, start + duration_s
        while events:
            t, kind, i, payload = heapq.heappop(events)
            m = self.members[i]
            if kind == 0:
                passed += m.check("p", t)
            elif kind == 1:
                counts = m.tick(t)
                for j in range(len(self.members)):
                    if j != i:
                        heapq.heappush(events, (t + delay_s, 2, j, (f"w{i}", counts)))
                if t + SHARE_INTERVAL_S < end:
                    heapq.heappush(events, (t + SHARE_INTERVAL_S, 1, i, None))
            else:
                m.receive(*payload, t)
        return passed


SPLITS = {"even-2": [0.5, 0.5], "uneven-2": [0.8, 0.2], "even-3": [1 / 3] * 3,
          "uneven-3": [0.6, 0.3, 0.1]}  # fmt: skip


@pytest.mark.parametrize("delay_s", [0.001, 0.01])
@pytest.mark.parametrize("factor", [1.2, 2, 5])
@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("algorithm", ["taildrop", "sliding"])
def test_shared_pipe_holds_the_limit_cluster_wide(algorithm: str, split: str, factor: float,
                                                  delay_s: float) -> None:  # fmt: skip
    """Two or three participants, ticking out of phase, counts arriving 1-10 ms late, offered
    together 1.2x, 2x or 5x the limit (split evenly or not) for 20 s: the cluster passes the
    limit within 5 %."""
    rates = [LIMIT * factor * w for w in SPLITS[split]]
    rate = Cluster(len(rates), algorithm).offer(rates, delay_s=delay_s) / DURATION_S
    assert abs(rate - LIMIT) <= 0.05 * LIMIT, rate


@pytest.mark.parametrize("algorithm", ["taildrop", "sliding"])
def test_below_the_limit_all_pass_and_a_lone_busy_participant_gets_it_all(
        algorithm: str) -> None:  # fmt: skip
    """Budgets never refuse what the limit allows: 0.9x split three ways all passes, and a
    participant alone with traffic passes the whole limit."""
    n = int(0.63 * LIMIT * DURATION_S) + int(0.18 * LIMIT * DURATION_S) + int(
        0.09 * LIMIT * DURATION_S)  # fmt: skip
    assert Cluster(3, algorithm).offer([0.63 * LIMIT, 0.18 * LIMIT, 0.09 * LIMIT]) == n
    rate = Cluster(2, algorithm).offer([2 * LIMIT, 0.0]) / DURATION_S
    assert abs(rate - LIMIT) <= 0.01 * LIMIT, rate


def test_load_moving_between_participants() -> None:
    """The traffic moves from one participant to the other: the one taking over gets the
    room within about a second, and the cluster holds the limit throughout."""
    c = Cluster(2, "sliding")
    first = c.offer([2 * LIMIT, 0.0], duration_s=10.0)
    second = c.offer([0.0, 2 * LIMIT], duration_s=10.0, start=T0 + 10.0)
    assert abs(first / 10 - LIMIT) <= 0.02 * LIMIT, first
    assert LIMIT * 0.9 <= second / 10 <= LIMIT * 1.05, second


@pytest.mark.parametrize("n", [2, 3])
def test_unshared_pipes_are_per_worker(n: int) -> None:
    """The default: each worker holds its own limit, so n workers pass n x the limit."""
    rate = Cluster(n, "sliding", shared=False).offer([2 * LIMIT] * n) / DURATION_S
    assert abs(rate - n * LIMIT) <= 0.05 * n * LIMIT, rate


def test_red_shared_counts_offered() -> None:
    """A shared RED pipe counts what the others were offered, so the cluster follows the
    single pipe's curve (1.5x the limit at 2x and more)."""
    rate = Cluster(2, "red").offer([LIMIT, LIMIT]) / DURATION_S
    assert abs(rate - 1.5 * LIMIT) <= 0.05 * 1.5 * LIMIT, rate


def test_a_silent_participant_ages_out() -> None:
    """Counts of a participant not heard for SHARE_PEER_TIMEOUT_S stop counting."""
    a = limiter()
    p = a.pipes["p"]
    assert p.peers is not None
    a.receive("b", [["p", SLIDING, 60, 0]], T0)
    assert p.peers.others == 60
    assert sum(a.check("p", T0 + 0.01) for _ in range(100)) == 40
    a.tick(T0 + SHARE_PEER_TIMEOUT_S / 2)
    assert p.peers.others == 60
    a.tick(T0 + SHARE_PEER_TIMEOUT_S + 0.01)
    assert p.peers.others == 0 and len(p.peers) == 0


def test_fixed_window_counts_meet_only_their_window() -> None:
    """Fixed windows of a shared pipe are aligned to multiples of window_s; a count made in
    another window does not count."""
    a = limiter("taildrop")
    p = a.pipes["p"]
    assert p.peers is not None
    now = 2000.25
    assert a.tick(now) == [["p", 2000, 0, 0]]
    a.receive("b", [["p", 2000, 30, 0]], now)
    assert p.peers.others == 30
    a.receive("c", [["p", 1999, 50, 0]], now)  # c is a window behind: not counted
    assert p.peers.others == 30
    assert sum(a.check("p", now) for _ in range(100)) == 70
    assert a.tick(now + 0.8) == [["p", 2001, 0, 100]]  # a new window: everyone from 0
    assert p.peers.others == 0


def test_budget_splits_the_room_left_by_demand() -> None:
    """When the cluster could take more than half the room left in one interval, each
    participant's count may rise only by its share of it, by demand (rule 6)."""
    a = limiter("taildrop")
    now = 3000.0
    a.tick(now)
    for _ in range(50):
        a.check("p", now + 0.01)  # 50 offered and passed
    a.receive("b", [["p", 3000, 30, 150]], now + 0.05)  # b passed 30, was offered 150
    a.tick(now + 0.1)
    # room left 100 - 50 - 30 = 20; a's share (50 + 1) / (50 + 150 + 2)
    p = a.pipes["p"]
    assert p.cap == pytest.approx(50 + 20 * 51 / 202)
    assert sum(a.check("p", now + 0.11) for _ in range(20)) == 6  # 50 -> 55.05
    a.receive("b", [["p", 3000, 30, 0]], now + 0.15)
    a.tick(now + 0.2)  # b's demand is gone: the room is a's, without a budget (56 + 14)
    assert sum(a.check("p", now + 0.21) for _ in range(20)) == 20 - 6


def test_counts_for_unknown_or_unshared_pipes_are_ignored() -> None:
    """A count for a pipe this participant does not have, or does not share, is ignored and
    counted; so is a participant past SHARE_MAX_PEERS."""
    rl = RateLimiter([RateLimit(name="s", shared=True), RateLimit(name="u")])
    rl.receive("b", [["u", SLIDING, 5, 0], ["nope", SLIDING, 5, 0], ["s", 0, 5, 0]], T0)
    assert rl.share_ignored == 2 and rl.pipes["u"].peers is None
    for i in range(SHARE_MAX_PEERS + 5):
        rl.receive(f"x{i}", [["s", 0, 1, 0]], T0)
    assert len(rl.pipes["s"].peers or ()) == SHARE_MAX_PEERS
    assert rl.share_ignored == 2 + 6  # "b" holds one of the places
    assert rl.tick(T0) == [["s", rl.pipes["s"].window_idx, 0, 0]]


def test_status_shows_the_share() -> None:
    """``ctl ratelimit`` rows of a shared pipe add the others' count and participants."""
    a = limiter()
    a.receive("b", [["p", SLIDING, 7, 0]], T0)
    (row,) = a.status(T0)
    assert (row["shared"], row["others"], row["participants"]) == (True, 7, 2)
    (plain,) = limiter(shared=False).status(T0)
    assert "shared" not in plain


OPS = st.lists(st.tuples(st.sampled_from(["req", "exchange", "wait"]), st.integers(0, 2),
                         st.floats(0, 0.5)), max_size=300)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["taildrop", "sliding"])
@given(ops=OPS)
def test_exchange_after_every_request_never_exceeds_the_allowance(algorithm: str,
                                                                  ops: list[Any]) -> None:  # fmt: skip
    """Any interleaving of requests at three participants, pauses and extra exchanges, with
    counts exchanged after every request (nothing stale): the cluster never passes more than
    the allowance in a window, and no sum goes negative."""
    c = Cluster(3, algorithm)
    now = T0
    passed: list[float] = []
    for op, who, dt in ops:
        if op == "wait":
            now += dt
            continue
        if op == "req" and c.members[who].check("p", now):
            passed.append(now)
        c.exchange(now)
        for m in c.members:
            peers = m.pipes["p"].peers
            assert peers is not None and peers.others >= 0 and peers.demand >= 0
    for t in passed:
        if algorithm == "taildrop":
            same = [x for x in passed if x // 1.0 == t // 1.0]
        else:
            same = [x for x in passed if t - 1.0 < x <= t]
        assert len(same) <= LIMIT


@given(frame=st.binary(max_size=200))
def test_decode_never_raises(frame: bytes) -> None:
    """Whatever arrives decodes to a well-formed count list or None."""
    got = decode(frame)
    assert got is None or (isinstance(got[0], str) and all(len(e) == 4 for e in got[1]))


@pytest.mark.parametrize("msg", [
    ["w", [["p", 1, -1, 0]]], ["w", [["p", 1, 1, -1]]], ["w", [["p", 1.5, 1, 0]]],
    ["w", [["p", 1, True, 0]]], ["w"], {"w": 1}, ["w", [["p", 1, 1]]], [1, []],
])  # fmt: skip
def test_decode_refuses_bad_shapes(msg: object) -> None:
    """Negative, float or boolean numbers, missing fields and other shapes are refused."""
    assert decode(msgpack.packb(msg)) is None


def test_decode_accepts_a_count_list() -> None:
    """A well-formed frame gives its sender and entries."""
    assert decode(msgpack.packb(["n/w1", [["p", 3, 4, 5]]])) == ("n/w1", [["p", 3, 4, 5]])


def test_config_shared_window_at_least_five_exchanges() -> None:
    """A shared pipe's window must hold several exchanges, or every count is stale."""
    base = {"name": "p", "shared": True, "limit_per_s": 100}
    with pytest.raises(ConfigError, match=r"ratelimit\[0\].window_s: expected at least 0.5 on "
                                          r"a shared pipe \(counts are exchanged every 0.1 s\)"):
        from_dict({"ratelimit": [{**base, "window_s": 0.2}]})
    assert from_dict({"ratelimit": [{**base, "window_s": 0.5}]}).ratelimit[0].shared
