"""The service's "adapts under load and does not drift" (docs/timers.md "Adaptation"), with
an injected clock: arms go in as TOPS headers, wake-ups run where the service asked for them
(or late, as on a busy box), so every figure is exact and no test waits on real time."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
from structlog.testing import capture_logs

from conf import sockets
from tests.timers.helpers import fast_settings, run
from timers.policy import CALM_WINDOWS
from timers.service import TimerService

WORKER = f"worker.1-{os.getpid()}"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _service(ctx: zmq.Context[Any], run_dir: Path, clock: Clock) -> TimerService:
    svc = TimerService(ctx, fast_settings(str(run_dir)), f"timers.1-{os.getpid()}", clock)
    svc._on_heartbeat(WORKER, sockets.endpoint(str(run_dir), "worker", WORKER), "up")
    return svc


def _arm(svc: TimerService, deadlines: list[float], prefix: str = "k") -> None:
    arms = [[f"{prefix}{i}", d, "ttl", b"", i + 1] for i, d in enumerate(deadlines)]
    svc._apply_ops([WORKER, 1, False, arms, []])
    svc._reschedule()


def _wake(svc: TimerService, clock: Clock, late_s: float = 0.0) -> float:
    """Run the wake-up the service asked for, ``late_s`` after it asked (the loop's real
    handle is cancelled: the test is the loop). Returns when it was asked for."""
    assert svc._wake is not None
    at = svc._wake_at
    svc._wake.cancel()
    clock.now = max(clock.now, at + late_s)
    svc._on_wake()
    return at


def _drain(svc: TimerService, clock: Clock, late_s: float = 0.0) -> list[float]:
    asked = []
    while len(svc.schedule):
        asked.append(_wake(svc, clock, late_s))
    return asked


def _adapted(fn: Callable[[], None]) -> list[dict[str, Any]]:
    with capture_logs() as logs:
        fn()
    return [e for e in logs if e["event"] == "timers_adapted"]


def test_wake_ups_follow_the_deadlines_and_do_not_drift(ctx: zmq.Context[Any],
                                                        tmp_path: Path) -> None:  # fmt: skip
    """300 timers 13 ms apart over 4 s: the service asks to wake at each deadline exactly,
    never at "last wake-up plus a period", so the 300th is as punctual as the first (lateness
    0 throughout) and every wake-up fires exactly one timer."""

    async def body() -> None:
        clock = Clock(1000.0)
        svc = _service(ctx, tmp_path, clock)
        deadlines = [1001.0 + i * 0.013 for i in range(300)]
        _arm(svc, deadlines)
        asked = _drain(svc, clock)
        assert asked == deadlines
        stats = svc.stats(1.0)
        assert stats["fired"] == 300 and stats["late_max_ms"] == 0.0 and svc.overruns == 0
        svc.close()

    run(body)


def test_late_wake_ups_widen_coalesce_and_calm_narrows_back(ctx: zmq.Context[Any],
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A loop that wakes 50 ms late (over the 20 ms threshold): one window later the service
    doubles its batch and coalesces by 1 ms, wakes at deadline + 1 ms (never before the
    deadline), and after CALM_WINDOWS punctual windows narrows back to its base."""

    async def body() -> None:
        clock = Clock(1000.0)
        svc = _service(ctx, tmp_path, clock)
        base = svc.policy.max_batch
        _arm(svc, [1001.0 + i * 0.01 for i in range(50)], "late")
        _drain(svc, clock, late_s=0.050)
        (ev,) = _adapted(svc.adapt)
        assert ev["reason"] == "late" and ev["late_p99_ms"] == 50.0
        assert (svc.policy.max_batch, svc.policy.coalesce_s) == (2 * base, 0.001)
        deadlines = [clock.now + 1 + i * 0.01 for i in range(50)]
        _arm(svc, deadlines, "punctual")
        asked = _drain(svc, clock)
        assert asked == [d + 0.001 for d in deadlines]  # coalesced: a little later, not early
        events = []
        for w in range(CALM_WINDOWS):
            _arm(svc, [clock.now + 1 + i * 0.01 for i in range(10)], f"calm{w}-")
            _drain(svc, clock)
            events += _adapted(svc.adapt)
        assert [e["reason"] for e in events] == ["calm"]
        assert (svc.policy.max_batch, svc.policy.coalesce_s) == (base, 0.0)
        svc.close()

    run(body)


def test_overdue_arrivals_fire_at_once_and_do_not_make_it_adapt(ctx: zmq.Context[Any],
                                                                tmp_path: Path) -> None:  # fmt: skip
    """Timers re-armed after a restart arrive already due (by up to 10 s here): they fire on
    the first wake-up, their lateness is counted from their arrival (0), and the policy does
    not widen for what was not this process's doing."""

    async def body() -> None:
        clock = Clock(1000.0)
        svc = _service(ctx, tmp_path, clock)
        clock.now = 1010.0  # past the start-up wait
        _arm(svc, [1000.0 + i * 0.01 for i in range(500)])
        assert svc.meter.counters["arms_overdue"] == 500
        _drain(svc, clock)
        stats = svc.stats(1.0)
        assert stats["fired"] == 500 and stats["late_max_ms"] == 0.0
        assert _adapted(svc.adapt) == [] and svc.policy.coalesce_s == 0.0
        svc.close()

    run(body)
