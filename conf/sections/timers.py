"""``[timers]``: the timer service and how its clients send it their timers."""

from __future__ import annotations

from dataclasses import dataclass, field

from conf.sections.fields import _range

#: a worker's timer ops wait this long to leave together (``Timers.ops_flush_ms``): the
#: timers it arms are dialog lifetimes (at least a second), so 50 ms costs their deadlines
#: nothing while a busy worker sends a message per 50 ms instead of one per loop iteration
#: (10 ms before: the timers process took 36 µs of CPU per call at 500 calls/s, 22 with 50,
#: docs/benchmarks.md "Sixth sitting")
DEFAULT_TIMER_OPS_FLUSH_MS = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class Timers:
    """``[timers]``: the timer service (``sipline timers``) that holds long timers (dialog
    lifetimes, registration expiries, ban and profile TTLs) and fires them to their owners."""

    max_batch: int = field(default=1000, metadata=_range(1, 1_000_000))
    """Timers fired per wake-up at most while lateness is low (OpenSIPS ``timer_bulk_del_no``);
    the rest wait for the next loop iteration, so arms and cancels are never starved."""
    max_batch_cap: int = field(default=16_000, metadata=_range(1, 1_000_000))
    """Widest batch the service widens to when lateness grows; a cap below ``max_batch`` is
    taken as ``max_batch`` (no widening)."""
    late_threshold_ms: float = field(default=20.0, metadata=_range(0.1, 60_000))
    """When the p99 lateness of the last second is above this, or a wake-up left due timers
    behind, the service widens its batches and coalesces near deadlines (and logs
    ``timers_adapted``); a quarter of it for three seconds running narrows them back."""
    max_coalesce_ms: float = field(default=10.0, metadata=_range(0, 10_000))
    """Longest the service delays a wake-up so that near deadlines fire together, when
    adapting; 0 never coalesces. Timers never fire early."""
    ops_flush_ms: int = field(default=DEFAULT_TIMER_OPS_FLUSH_MS, metadata=_range(0, 100))
    """A worker's arms and cancels leave for the timer service this long after the first of
    them (one message per timers process, an arm and a cancel of one key in it folded into
    the last); 0: with the worker's ``[bus] flush_ms`` flush (at the end of the event-loop
    iteration that made them when that is 0 too). Each message wakes
    the worker's ZeroMQ thread and the service's, whatever it holds (``docs/benchmarks.md``
    "State plane, timers and log volume per call"). A timer fires at its deadline however
    late its arm left; a worker that dies meanwhile loses nothing the state plane's mirror
    does not re-arm (``docs/timers.md``)."""
