"""The adaptation policy fed numbers, and the lateness window."""

from __future__ import annotations

from timers.lateness import MAX_SAMPLES, LatenessWindow
from timers.policy import CALM_WINDOWS, BatchPolicy


def _policy() -> BatchPolicy:
    return BatchPolicy(base_batch=100, max_cap=800, late_s=0.020, max_coalesce_s=0.008)


class TestBatchPolicy:
    def test_quiet_changes_nothing(self) -> None:
        """Low lateness and no overrun: no adaptation, base settings."""
        p = _policy()
        assert p.observe(0.001, 0) is None
        assert (p.max_batch, p.coalesce_s) == (100, 0.0)

    def test_late_widens_and_coalesces(self) -> None:
        """p99 over the threshold doubles the batch and starts coalescing."""
        p = _policy()
        a = p.observe(0.050, 0)
        assert a is not None and a.reason == "late"
        assert (a.max_batch, a.coalesce_s) == (200, 0.001)

    def test_overrun_widens_even_when_punctual(self) -> None:
        """A wake-up that left due timers behind widens too."""
        a = _policy().observe(0.0, 3)
        assert a is not None and a.reason == "overrun"

    def test_widening_stops_at_the_caps(self) -> None:
        """Batch and coalescing never pass their maxima; at the caps nothing is reported."""
        p = _policy()
        for _ in range(10):
            p.observe(1.0, 1)
        assert (p.max_batch, p.coalesce_s) == (800, 0.008)
        assert p.observe(1.0, 1) is None

    def test_calm_narrows_back_step_by_step(self) -> None:
        """After CALM_WINDOWS calm windows it narrows one step, and in time returns to base."""
        p = _policy()
        p.observe(1.0, 1)
        p.observe(1.0, 1)  # 400, 2 ms
        for _ in range(CALM_WINDOWS - 1):
            assert p.observe(0.0, 0) is None
        a = p.observe(0.0, 0)
        assert a is not None and a.reason == "calm" and (a.max_batch, a.coalesce_s) == (200, 0.001)
        for _ in range(CALM_WINDOWS * 3):
            p.observe(0.0, 0)
        assert (p.max_batch, p.coalesce_s) == (100, 0.0)

    def test_middling_lateness_holds(self) -> None:
        """Between a quarter of the threshold and the threshold: hold, and reset calm."""
        p = _policy()
        p.observe(1.0, 0)
        for _ in range(CALM_WINDOWS * 2):
            assert p.observe(0.010, 0) is None
        assert p.max_batch == 200

    def test_cap_below_base_means_no_widening(self) -> None:
        """A cap under the base batch is taken as the base."""
        p = BatchPolicy(base_batch=100, max_cap=10, late_s=0.02, max_coalesce_s=0.0)
        assert p.observe(1.0, 1) is None


class TestLatenessWindow:
    def test_percentiles_and_max(self) -> None:
        """p50/p99/max in ms over the window, and a fresh window after a summary."""
        w = LatenessWindow()
        for i in range(1, 101):
            w.add(i / 1000)
        s = w.summary_ms()
        assert s == {"fired": 100, "late_p50_ms": 51.0, "late_p99_ms": 100.0, "late_max_ms": 100.0}
        assert w.summary_ms()["fired"] == 0

    def test_bounded_memory_exact_count_and_max(self) -> None:
        """Past MAX_SAMPLES it samples, but count and max stay exact."""
        w = LatenessWindow()
        for i in range(MAX_SAMPLES * 2):
            w.add(0.001)
        w.add(0.5)
        assert len(w._samples) == MAX_SAMPLES
        assert w.count == MAX_SAMPLES * 2 + 1 and w.max_s == 0.5
        assert w.percentile(0.5) == 0.001
