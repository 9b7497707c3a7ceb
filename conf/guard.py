"""No exception ends a process: the one place that catches, counts and logs them.

Rules:
1. Everything the loop runs on its own goes through here: periodic tasks
   (``conf.process.every`` calls ``report``), ZeroMQ readers (``add_reader``), callbacks a
   protocol must survive (``guarded``: the ingress's TCP message handlers, since uvloop closes
   a connection whose ``data_received`` raised) and every other loop callback: ``install``
   makes this the loop's exception handler, which asyncio (and uvloop) call for a callback,
   timer or datagram handler that raised (the UDP listener stays open). An ``Exception`` is
   counted by kind and the loop goes on; a ``BaseException`` that is not one (cancellation,
   ``SystemExit``, ``KeyboardInterrupt``) passes: that is how a process stops.
2. The log is bounded: the first exception of a kind is logged at once with its traceback
   (``exception_caught``); the next ones within ``LOG_INTERVAL_S`` are only counted, and the
   next line says how many were (``suppressed``). A kind is where it happened and the type
   (``worker_bus:OSError``); at most ``MAX_KINDS`` kinds, later ones count as ``other``.
3. A reader that raised is called again after ``REARM_S``: a ZeroMQ FD is edge-triggered, so
   a reader stopped part way through its queue would not be woken again while messages wait.
   Not at once: a reader that raises before consuming anything would spin.
4. ``counts`` are in every process's ``load_stats`` and ``ctl stats`` (``errors``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec

from conf.logging import LazyLogger

#: structlog is loaded at the first line: the commands import this module (conf/logging.py)
log = LazyLogger()

P = ParamSpec("P")

#: one log line per kind per this many seconds at most (rule 2)
LOG_INTERVAL_S = 10.0
#: kinds counted separately at most (rule 2)
MAX_KINDS = 256
#: a reader that raised runs again after this long (rule 3)
REARM_S = 0.01


class Throttle:
    """Says when to log an event that may repeat per packet: at once for a new key, then at
    most once per ``interval_s``, with the number of occurrences swallowed in between.
    Holds at most ``max_keys`` keys; past that, unknown keys share one slot."""

    __slots__ = ("_clock", "_last", "_max_keys", "_suppressed", "interval_s")

    def __init__(self, interval_s: float = LOG_INTERVAL_S, max_keys: int = MAX_KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._clock = clock
        self._last: dict[Hashable, float] = {}
        self._suppressed: Counter[Hashable] = Counter()

    def hit(self, key: Hashable) -> int | None:
        """None: swallow this occurrence. Else log it, with the returned number of
        occurrences swallowed since the last line of ``key``."""
        if key not in self._last and len(self._last) >= self._max_keys:
            key = None
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] += 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)


class Guard:
    """One process's exception guard (rules 1-4); ``GUARD`` is the process's."""

    __slots__ = ("counts", "throttle")

    def __init__(self, throttle: Throttle | None = None) -> None:
        #: exceptions caught, by kind (rule 2)
        self.counts: Counter[str] = Counter()
        self.throttle = throttle or Throttle()

    def report(self, where: str, exc: BaseException) -> None:
        """Count ``exc`` raised in ``where`` and log it unless its kind logged recently.
        Never raises: it is the last line."""
        kind = f"{where}:{type(exc).__name__}"
        if kind not in self.counts and len(self.counts) >= MAX_KINDS:
            kind = "other"
        self.counts[kind] += 1
        suppressed = self.throttle.hit(kind)
        if suppressed is None:
            return
        try:
            log.error("exception_caught", where=where, kind=kind, count=self.counts[kind],
                      suppressed=suppressed, exc_info=exc)  # fmt: skip
        except Exception:  # noqa: BLE001, S110 - stdout itself failing: the count tells
            pass

    def guarded(self, where: str, fn: Callable[P, object]) -> Callable[P, None]:
        """``fn`` with every ``Exception`` reported instead of raised (rule 1)."""

        def call(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - the guard (rule 1)
                self.report(where, exc)

        return call

    def add_reader(self, loop: asyncio.AbstractEventLoop, fd: int, where: str,
                   fn: Callable[[], object]) -> Reader:  # fmt: skip
        """Register ``fn`` as the reader of ``fd`` (guarded, re-armed: rule 3) and run it
        once soon, since the FD may have fired before we registered. Returns the callable
        to use wherever the owner calls its reader again (``call_soon``), and to ``remove``."""
        reader = Reader(self, loop, fd, where, fn)
        loop.add_reader(fd, reader)
        loop.call_soon(reader)
        return reader

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler (``install``): a callback that raised is reported
        under its own name; a message without an exception is logged, throttled."""
        task = context.get("task") or context.get("future")
        if task is not None:  # "Task exception was never retrieved"
            cb: object = getattr(task, "get_coro", lambda: None)()
        else:
            cb = getattr(context.get("handle"), "_callback", None)
        where = "loop:" + getattr(cb, "__qualname__", type(cb).__name__ if cb else "callback")
        exc = context.get("exception")
        if isinstance(exc, BaseException):
            self.report(where, exc)
            return
        message = str(context.get("message", ""))[:200]
        if self.throttle.hit(message) is not None:
            log.warning("loop_error", message=message)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make this the loop's exception handler (rule 1)."""
        loop.set_exception_handler(self.loop_handler)

    def totals(self) -> dict[str, int]:
        """``counts`` as ``load_stats`` and ``ctl stats`` show them (rule 4)."""
        return dict(self.counts)


class Reader:
    """A guarded reader that runs again after ``REARM_S`` when it raised (rule 3)."""

    __slots__ = ("_again", "_fd", "_fn", "_guard", "_loop", "_where")

    def __init__(self, guard: Guard, loop: asyncio.AbstractEventLoop, fd: int, where: str,
                 fn: Callable[[], object]) -> None:  # fmt: skip
        self._guard, self._loop, self._fd, self._where, self._fn = guard, loop, fd, where, fn
        self._again: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        try:
            self._fn()
        except Exception as exc:  # noqa: BLE001 - the guard (rule 1)
            self._guard.report(self._where, exc)
            if self._again is None and not self._loop.is_closed():
                self._again = self._loop.call_later(REARM_S, self._rearm)

    def _rearm(self) -> None:
        self._again = None
        self()

    def remove(self) -> None:
        """Stop reading: unregister the FD and forget a pending re-run (before the owner
        closes its socket)."""
        self._loop.remove_reader(self._fd)
        if self._again is not None:
            self._again.cancel()
            self._again = None


#: the process's guard
GUARD = Guard()
