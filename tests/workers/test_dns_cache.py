"""The DNS answer cache with a hand-moved clock: TTL bounds, negative and failure TTLs, size."""

from __future__ import annotations

import pytest

from workers.dns.cache import AnswerCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Clock, **kw: float) -> AnswerCache:
    args = {"min_ttl_s": 1.0, "max_ttl_s": 100.0, "negative_ttl_s": 30.0, "failure_ttl_s": 5.0}
    args.update(kw)
    size = int(args.pop("maxsize", 100))
    return AnswerCache(size, timer=clock, **args)


KEY = ("example.test", "A")


class TestTtl:
    @pytest.mark.parametrize(("ttl", "kept"), [(0, 1.0), (10, 10.0), (10**6, 100.0)])
    def test_positive_clamped(self, ttl: float, kept: float) -> None:
        """A positive answer lives its TTL, bounded by [min_ttl_s, max_ttl_s]."""
        clock = Clock()
        c = cache(clock)
        c.put_positive(KEY, ("127.0.0.1",), ttl)
        clock.now = kept - 0.01
        answer = c.get(KEY)
        assert answer is not None and answer.records == ("127.0.0.1",)
        clock.now = kept
        assert c.get(KEY) is None

    @pytest.mark.parametrize(("soa", "kept"), [(None, 30.0), (12, 12.0), (3600, 30.0), (0, 1.0)])
    def test_negative(self, soa: float | None, kept: float) -> None:
        """NXDOMAIN/NODATA live min(SOA, negative_ttl_s), or negative_ttl_s without SOA."""
        clock = Clock()
        c = cache(clock)
        c.put_negative(KEY, soa)
        answer = c.get(KEY)
        assert answer is not None and answer.negative and answer.records == ()
        clock.now = kept
        assert c.get(KEY) is None

    def test_failure(self) -> None:
        """A server failure lives failure_ttl_s and says why."""
        clock = Clock()
        c = cache(clock)
        c.put_failure(KEY, "timeout")
        answer = c.get(KEY)
        assert answer is not None and answer.failure == "timeout" and not answer.negative
        clock.now = 5.0
        assert c.get(KEY) is None

    def test_failure_not_cached_when_zero(self) -> None:
        """failure_ttl_s = 0 never stores a failure."""
        c = cache(Clock(), failure_ttl_s=0)
        assert c.put_failure(KEY, "servfail").failure == "servfail"
        assert c.get(KEY) is None and len(c) == 0


class TestBounds:
    def test_size_bounded_lru(self) -> None:
        """Past maxsize the least recently used entry goes."""
        c = cache(Clock(), maxsize=3)
        for i in range(3):
            c.put_positive((f"h{i}", "A"), ("127.0.0.1",), 50)
        assert c.get(("h0", "A")) is not None  # h0 used: h1 is now the oldest
        c.put_positive(("h3", "A"), ("127.0.0.1",), 50)
        assert len(c) == 3
        assert c.get(("h1", "A")) is None and c.get(("h0", "A")) is not None

    def test_bad_bounds_refused(self) -> None:
        """min_ttl_s above max_ttl_s is a configuration error."""
        with pytest.raises(ValueError, match="min_ttl_s"):
            cache(Clock(), min_ttl_s=10, max_ttl_s=5)
