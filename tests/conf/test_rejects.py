"""The tally of refused input: counts per source, one summary each per interval, bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from conf.rejects import OTHERS, SAMPLE_CHARS, RejectTally, log_rejects


class TestRejectTally:
    def test_one_summary_per_source_with_counts_by_reason(self) -> None:
        """1 000 refusals from two sources are two summaries, counted by reason."""
        t = RejectTally(10.0, now=0.0)
        for i in range(1000):
            t.add("10.0.0.1" if i % 4 else "10.0.0.2", "bad_request" if i % 2 else "tcp_idle",
                  f"detail {i}", answered=i % 2 == 1)  # fmt: skip
        out = {s["src"]: s for s in t.take(10.0)}
        assert set(out) == {"10.0.0.1", "10.0.0.2"}
        one = out["10.0.0.1"]
        assert (one["count"], one["answered"]) == (750, 500)
        assert one["reasons"] == {"bad_request": 500, "tcp_idle": 250}
        assert one["sample"] == "detail 1" and one["interval_s"] == 10.0
        assert out["10.0.0.2"]["reasons"] == {"tcp_idle": 250}

    def test_due_at_the_end_of_each_interval(self) -> None:
        """The interval restarts at each take; a quiet interval yields nothing to log."""
        t = RejectTally(10.0, now=100.0)
        assert not t.due(109.9) and t.due(110.0)
        t.add("a", "bad_request")
        assert [s["count"] for s in t.take(110.0)] == [1]
        assert not t.due(119.9) and t.due(120.0)
        assert t.take(120.0) == []

    def test_sources_past_the_cap_share_the_others_summary(self) -> None:
        """Past ``max_sources`` sources, refusals are counted in one ``others`` summary."""
        t = RejectTally(10.0, now=0.0, max_sources=3)
        for i in range(100):
            t.add(f"10.0.0.{i}", "bad_request")
            t.add(f"10.0.0.{i}", "too_many_headers")
        out = t.take(10.0)
        assert [s["src"] for s in out] == ["10.0.0.0", "10.0.0.1", "10.0.0.2", OTHERS]
        assert out[-1]["count"] == 194
        assert out[-1]["reasons"] == {"bad_request": 97, "too_many_headers": 97}

    def test_totals_survive_each_interval(self) -> None:
        """``totals`` (load_stats, ctl stats) keeps counting across intervals and the cap."""
        t = RejectTally(1.0, now=0.0, max_sources=1)
        t.add("a", "bad_request")
        t.add("b", "bad_request")
        t.take(1.0)
        t.add("a", "tcp_idle")
        assert t.totals == {"bad_request": 2, "tcp_idle": 1}

    def test_sample_is_truncated(self) -> None:
        """The sample detail may quote the peer: it is cut to SAMPLE_CHARS."""
        t = RejectTally(1.0, now=0.0)
        t.add("a", "bad_request", "x" * 10_000)
        assert len(t.take(1.0)[0]["sample"]) == SAMPLE_CHARS

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(["r1", "r2", "r3"])),
                    max_size=3000))  # fmt: skip
    def test_bounded_whatever_the_sources(self, events: list[tuple[int, str]]) -> None:
        """Any flood: at most max_sources + 1 lines, and their counts add up to the events."""
        t = RejectTally(1.0, now=0.0, max_sources=16)
        for src, reason in events:
            t.add(str(src), reason)
        out = t.take(1.0)
        assert len(out) <= 17
        assert sum(s["count"] for s in out) == len(events)
        assert sum(t.totals.values()) == len(events)

    def test_log_rejects_writes_one_info_line_per_summary(self) -> None:
        """``log_rejects`` writes the summaries as ``rejected`` INFO lines and starts over."""
        t = RejectTally(1.0, now=0.0)
        t.add("a", "bad_request")
        t.add("b", "tcp_idle")
        with capture_logs() as logs:
            log_rejects(t, 1.0)
            log_rejects(t, 2.0)
        assert [(e["event"], e["log_level"], e["src"]) for e in logs] == [
            ("rejected", "info", "a"), ("rejected", "info", "b")]  # fmt: skip
