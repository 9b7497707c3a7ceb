"""Rate limit pipes (workers/ratelimit/pipes.py) in simulated time, and their configuration."""

from __future__ import annotations

import random
from typing import Any, Literal, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.load import ConfigError, from_dict
from conf.settings import RateLimit
from workers.ratelimit.pipes import FEEDBACK_FLOOR, RateLimiter, feedback_share

Algorithm = Literal["taildrop", "red", "sliding", "feedback"]
LIMIT = 100.0
DURATION_S = 20.0


def limiter(algorithm: str, limit: float = LIMIT, window_s: float = 1.0, seed: int = 1,
            **kw: Any) -> RateLimiter:  # fmt: skip
    cfg = RateLimit(name="p", algorithm=cast(Algorithm, algorithm), limit_per_s=limit,
                    window_s=window_s, **kw)  # fmt: skip
    return RateLimiter([cfg], random.Random(seed))


def offer(rl: RateLimiter, rate: float, duration_s: float = DURATION_S, load: float = 0.0,
          start: float = 0.0) -> int:  # fmt: skip
    """Requests evenly spaced at ``rate`` for ``duration_s``: how many passed."""
    n = int(rate * duration_s)
    return sum(rl.check("p", start + i / rate, load) for i in range(n))


def red_expected(allowance: float) -> float:
    """Passed per window under a steady overload of 2x or more (module rule 2)."""
    return allowance + (allowance - 1) / 2


@pytest.mark.parametrize("factor", [2, 5])
@pytest.mark.parametrize("algorithm", ["taildrop", "sliding"])
def test_hold_rate_within_5_percent(algorithm: str, factor: int) -> None:
    """Offered at 2x and 5x the limit for 20 simulated seconds, taildrop and sliding pipes
    pass the limit within 5 %."""
    rate = offer(limiter(algorithm), LIMIT * factor) / DURATION_S
    assert abs(rate - LIMIT) <= 0.05 * LIMIT, rate


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("factor", [2, 5])
def test_red_follows_its_curve(factor: int, seed: int) -> None:
    """RED under 2x and 5x passes its expected 1.5x the limit within 5 %."""
    rate = offer(limiter("red", seed=seed), LIMIT * factor) / DURATION_S
    expected = red_expected(LIMIT)
    assert abs(rate - expected) <= 0.05 * expected, rate


@pytest.mark.parametrize(("factor", "expected"), [(0.5, 0.5), (1.0, 1.0), (1.5, 1.375)])
def test_red_below_twice(factor: float, expected: float) -> None:
    """RED starts dropping at the limit, not at 2x: at 1.5x it passes
    1 + 0.5 - 0.5**2 / 2 = 1.375x the limit (the integral of 1 - p)."""
    rl = limiter("red", seed=3)
    rate = offer(rl, LIMIT * factor) / DURATION_S
    assert abs(rate - expected * LIMIT) <= 0.05 * expected * LIMIT, rate
    if factor > 1:
        assert rl.pipes["p"].dropped > 0


@pytest.mark.parametrize("algorithm", ["taildrop", "red", "sliding", "feedback"])
def test_under_the_limit_all_pass(algorithm: str) -> None:
    """At 90 % of the limit nothing is dropped, whatever the algorithm (feedback at low load)."""
    rl = limiter(algorithm)
    assert offer(rl, LIMIT * 0.9) == int(LIMIT * 0.9 * DURATION_S)
    assert rl.pipes["p"].dropped == 0


def test_taildrop_allows_a_boundary_burst_sliding_does_not() -> None:
    """Two bursts of the allowance either side of a fixed window's end: taildrop passes both
    (199 in 0.1 s), sliding holds the allowance over any window (the request at 0 has slid
    out by 1.05, so one more passes)."""
    bursts = [0.95 + i * 1e-4 for i in range(100)] + [1.05 + i * 1e-4 for i in range(100)]
    td, sl = limiter("taildrop"), limiter("sliding")
    td.check("p", 0.0)
    sl.check("p", 0.0)
    assert sum(td.check("p", t) for t in bursts) == 199
    assert sum(sl.check("p", t) for t in bursts) == 100


@pytest.mark.parametrize(("load", "share"), [(0.0, 1.0), (0.7, 1.0), (0.85, 0.5),
                                              (1.0, FEEDBACK_FLOOR)])  # fmt: skip
def test_feedback_scales_with_load(load: float, share: float) -> None:
    """Feedback passes the limit up to 70 % busy, half at 85 %, the floor at 100 %."""
    assert feedback_share(load) == pytest.approx(share)
    rate = offer(limiter("feedback"), LIMIT * 5, load=load) / DURATION_S
    assert abs(rate - LIMIT * share) <= 0.05 * LIMIT * share + 0.5, rate


@settings(max_examples=200, deadline=None)
@given(load=st.floats(0.0, 1.0), other=st.floats(0.0, 1.0))
def test_feedback_monotonic(load: float, other: float) -> None:
    """More load never lets more through."""
    lo, hi = sorted((load, other))
    assert feedback_share(hi) <= feedback_share(lo)


@settings(max_examples=200, deadline=None)
@given(base=st.integers(1, 3600), seed=st.integers(0, 2**32))
def test_retry_after_jittered_within_bounds(base: int, seed: int) -> None:
    """Retry-After stays within +-20 % of the pipe's (rounded), and is at least 1."""
    rl = limiter("taildrop", seed=seed, retry_after_s=base)
    values = {rl.retry_after("p") for _ in range(20)}
    assert all(max(1, round(base * 0.8)) <= v <= max(1, round(base * 1.2)) for v in values)


def test_retry_after_actually_varies() -> None:
    rl = limiter("taildrop", retry_after_s=100)
    assert len({rl.retry_after("p") for _ in range(50)}) > 5


@pytest.mark.parametrize(
    ("kw", "request_", "matched"),
    [
        ({}, ("OPTIONS", "10.0.0.1", "r"), True),
        ({"methods": ["INVITE"]}, ("INVITE", "10.0.0.1", "r"), True),
        ({"methods": ["INVITE"]}, ("OPTIONS", "10.0.0.1", "r"), False),
        ({"source": "10.0.0.0/8"}, ("INVITE", "10.9.9.9", "r"), True),
        ({"source": "10.0.0.0/8"}, ("INVITE", "192.0.2.1", "r"), False),
        ({"source": "10.0.0.0/8"}, ("INVITE", "garbage", "r"), False),
        ({"route": "trunk"}, ("INVITE", "10.0.0.1", "trunk"), True),
        ({"route": "trunk"}, ("INVITE", "10.0.0.1", "other"), False),
        ({"methods": ["INVITE"], "route": "trunk"}, ("INVITE", "1.2.3.4", "trunk"), True),
    ],
    ids=["any", "method", "other-method", "cidr", "other-cidr", "bad-src", "route",
         "other-route", "both"],
)  # fmt: skip
def test_match(kw: dict[str, Any], request_: tuple[str, str, str], matched: bool) -> None:
    """A pipe matches a request when every condition it sets holds."""
    assert (limiter("taildrop", **kw).match(*request_) == ["p"]) is matched


def test_admit_names_the_refusing_pipe_and_status() -> None:
    """admit returns the first pipe that refuses; status shows counters per pipe."""
    rl = RateLimiter([RateLimit(name="all", limit_per_s=1000.0),
                      RateLimit(name="invites", limit_per_s=2.0, methods=["INVITE"])])  # fmt: skip
    verdicts = [rl.admit("INVITE", "10.0.0.1", "r", 0.1 * i) for i in range(5)]
    assert verdicts == [None, None, "invites", "invites", "invites"]
    assert rl.admit("BYE", "10.0.0.1", "r", 0.5) is None
    rows = {r["pipe"]: r for r in rl.status(0.5)}
    assert (rows["invites"]["passed"], rows["invites"]["dropped"]) == (2, 3)
    assert rows["all"]["passed"] == 6


def test_window_over_its_span_resets() -> None:
    """A long silence empties every window (no stale counts)."""
    for algo in ("taildrop", "red", "sliding", "feedback"):
        rl = limiter(algo, limit=5.0)
        offer(rl, 50.0, 1.0)
        assert offer(rl, 4.0, 1.0, start=100.0) == 4


# -- configuration ----------------------------------------------------------------------------

BASE: dict[str, object] = {
    "destination_set": [{"name": "uas", "destinations": ["sip:127.0.0.1:5080"]}],
    "route": [{"name": "default", "to": "uas"}],
}


def test_config_loads() -> None:
    s = from_dict({**BASE, "ratelimit": [
        {"name": "inv", "algorithm": "red", "limit_per_s": 50, "methods": ["INVITE"],
         "source": "10.0.0.0/8", "route": "default", "retry_after_s": 10}]})  # fmt: skip
    assert s.ratelimit[0].algorithm == "red" and s.ratelimit[0].limit_per_s == 50.0


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ({"name": "a", "algorithm": "fifo"}, "ratelimit[0].algorithm", "one of"),
        ({"name": "a", "limit_per_s": 0.5, "window_s": 1.0}, "ratelimit[0].window_s", "at least"),
        ({"name": "a", "methods": ["invite"]}, "ratelimit[0].methods[0]", "upper case"),
        ({"name": "a", "source": "10.0.0.300"}, "ratelimit[0].source", "CIDR"),
        ({"name": "a", "route": "nope"}, "ratelimit[0].route", "[[route]] (default)"),
        ({"name": "a b"}, "ratelimit[0].name", "a name"),
        ({"limit_per_s": 5}, "ratelimit[0].name", "required"),
    ],
    ids=["algorithm", "window", "method", "source", "route", "name", "no-name"],
)
def test_config_errors(entry: dict[str, object], key: str, expected: str) -> None:
    """A bad [[ratelimit]] names the file, the key and what was expected."""
    with pytest.raises(ConfigError) as info:
        from_dict({**BASE, "ratelimit": [entry]}, "t.toml")
    assert info.value.key == key and expected in info.value.expected, str(info.value)


def test_config_duplicate_names() -> None:
    with pytest.raises(ConfigError, match=r"ratelimit\[1\].name: expected a unique name"):
        from_dict({**BASE, "ratelimit": [{"name": "a"}, {"name": "a"}]})


def test_pike_whitelist_checked() -> None:
    with pytest.raises(ConfigError, match=r"pike.whitelist\[1\]: expected an address or CIDR"):
        from_dict({"pike": {"enabled": True, "whitelist": ["10.0.0.0/8", "ten"]}})
    s = from_dict({"pike": {"enabled": True, "whitelist": ["10.0.0.0/8", "::1"]}})
    assert s.pike.reqs_density_per_unit == 30 and s.pike.remove_latency_s == 120.0
