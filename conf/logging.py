"""The one place structlog is configured: JSON lines on stdout (structlog docs/performance.md).

Every line carries ``proc`` (honcho's process name, e.g. ``worker.2``), ``pid``, ``node``,
``level``, ``timestamp`` and an ``event`` name; fields are facts, not prose.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip


def configure(level: str, proc: str | None, node: str, *, cache: bool = True) -> None:
    """Configure structlog for this process; call once, before the first log line."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.bind_contextvars(proc=proc or "sipline", pid=os.getpid(), node=node)
