"""The one place structlog is configured: JSON lines on stdout (structlog docs/performance.md).

Every line carries ``proc`` (honcho's process name, e.g. ``worker.2``), ``pid``, ``node``,
``level``, ``timestamp`` and an ``event`` name; fields are facts, not prose.

structlog itself is imported by ``configure`` and by a ``LazyLogger``'s first line, not by
importing this module: with rich installed (the dev lock has it, through mutmut) structlog
imports it, ~0.1 s of CPU, and the operator's commands (``sipline ctl``, polled by the e2e
tests and by scripts) import the modules that log (``conf.guard``, ``conf.refused``) only
for their constants and clients, never to log.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import logging
import os
import stat
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from structlog.typing import EventDict, WrappedLogger

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


class LazyLogger:
    """``structlog.get_logger()``, got at the first line logged: what a module the commands
    import binds at module scope (see the module docstring). Every attribute is the proxy's,
    so ``structlog.testing.capture_logs`` sees these lines as any other."""

    __slots__ = ("_log",)

    def __init__(self) -> None:
        self._log: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._log is None:
            import structlog

            self._log = structlog.get_logger()
        return getattr(self._log, name)


class LoopFlushedLogger:
    """structlog's ``WriteLogger`` but the lines of one event-loop iteration leave in one
    write(2), not one each (a worker logs a CDR line per call). Flushed when the loop next
    gets to it, at once where no loop runs (start-up, the CLI), and by Python at exit; a
    SIGKILL loses at most that iteration's lines."""

    __slots__ = ("_file", "_pending", "_running_loop")

    def __init__(self, file: TextIO) -> None:
        import asyncio  # a process's, not the commands' (module docstring)

        self._file = file
        self._running_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.get_running_loop
        #: the loop a flush is scheduled on: one that closed before running it is not waited for
        self._pending: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        self._file.write(message + "\n")
        try:
            loop = self._running_loop()
        except RuntimeError:
            self._file.flush()
            return
        if self._pending is not loop:
            self._pending = loop
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._pending = None
        self._file.flush()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


#: what a pipe on stdout is grown to: ~2 s of a busy worker's lines (CDRs)
PIPE_BYTES = 1 << 20


def widen_pipe(file: TextIO, size: int = PIPE_BYTES) -> int:
    """Grow the pipe behind ``file`` (honcho reads every process's stdout through one): Linux's
    64 KiB hold ~0.1 s of a busy worker's lines (a CDR line per call), so a honcho reader
    thread that late on a loaded box would block the worker in write(2); 1 MiB holds ~2 s.
    Returns the pipe's size, 0 when ``file`` is no pipe; a size over ``pipe-max-size`` falls
    back to it."""
    try:
        fd = file.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        try:
            return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except PermissionError:  # an unprivileged process may grow it up to pipe-max-size
            with open("/proc/sys/fs/pipe-max-size") as f:
                return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, min(size, int(f.read())))
    except (OSError, ValueError):
        return 0


def stamp_utc(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """``TimeStamper(fmt="iso", utc=True)``'s ``timestamp``, for a third of its cost: the lines
    of one second share its date and time, formatted once (a worker logs a CDR line per
    call). tests/conf/test_log_format.py holds the text to structlog's."""
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def iso_utc(ns: int) -> str:
    """Epoch nanoseconds as ``datetime.now(UTC).isoformat()`` writes that instant, "Z" for
    "+00:00": microseconds floored as ``datetime.now`` floors the clock, and left out when 0."""
    sec, rest = divmod(ns, 1_000_000_000)
    cached = _SECOND
    if cached[0] != sec:
        if not 0 <= sec < _FAST_UNTIL:  # strftime's %Y is four digits from 1000 to 9999 only
            when = datetime.datetime.fromtimestamp(sec, datetime.UTC)
            return when.replace(microsecond=rest // 1000).isoformat().replace("+00:00", "Z")
        cached[0], cached[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    us = rest // 1000
    return f"{cached[1]}.{us:06d}Z" if us else f"{cached[1]}Z"


#: the second ``iso_utc`` formatted last, and its text
_SECOND: list[Any] = [None, ""]
#: 10000-01-01T00:00:00Z
_FAST_UNTIL = 253_402_300_800


def _fallback(obj: Any) -> Any:
    """structlog's JSON fallback: ``__structlog__()`` if the object has it, else its repr."""
    try:
        return obj.__structlog__()
    except AttributeError:
        return repr(obj)


#: ``json.dumps(d, default=...)`` builds a ``JSONEncoder`` per call (~1.5 µs a line); one
#: built once writes the same text
_ENCODE = json.JSONEncoder(default=_fallback).encode


def dumps(event_dict: EventDict, **_kw: Any) -> str:
    """The ``JSONRenderer`` serializer: ``json.dumps(event_dict, default=...)``'s text."""
    return _ENCODE(event_dict)


def configure(level: str, proc: str | None, node: str, *, cache: bool = True) -> None:
    """Configure structlog for this process; call once, before the first log line."""
    import structlog

    out = sys.stdout
    widen_pipe(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp_utc,  # TimeStamper(fmt="iso", utc=True), cheaper
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *args: LoopFlushedLogger(out),
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.bind_contextvars(proc=proc or "sipline", pid=os.getpid(), node=node)
