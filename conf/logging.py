"""The one place structlog is configured: JSON lines on stdout (structlog docs/performance.md).

Every line carries ``proc`` (honcho's process name, e.g. ``worker.2``), ``pid``, ``node``,
``level``, ``timestamp`` and an ``event`` name; fields are facts, not prose.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import stat
import sys
from typing import TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


class LoopFlushedLogger:
    """structlog's ``WriteLogger`` but the lines of one event-loop iteration leave in one
    write(2), not one each (a worker logs a CDR line per call). Flushed when the loop next
    gets to it, at once where no loop runs (start-up, the CLI), and by Python at exit; a
    SIGKILL loses at most that iteration's lines."""

    __slots__ = ("_file", "_pending")

    def __init__(self, file: TextIO) -> None:
        self._file = file
        #: the loop a flush is scheduled on: one that closed before running it is not waited for
        self._pending: asyncio.AbstractEventLoop | None = None

    def msg(self, message: str) -> None:
        self._file.write(message + "\n")
        try:
            loop = asyncio.get_running_loop()
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


def configure(level: str, proc: str | None, node: str, *, cache: bool = True) -> None:
    """Configure structlog for this process; call once, before the first log line."""
    out = sys.stdout
    widen_pipe(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=lambda *args: LoopFlushedLogger(out),
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.bind_contextvars(proc=proc or "sipline", pid=os.getpid(), node=node)
