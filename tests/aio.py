"""The one runner of async test bodies: a fresh uvloop loop (the processes' loop), bounded."""

from __future__ import annotations

import asyncio
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvloop

T = TypeVar("T")

#: the bound of a test body unless its package states another (tests/timers, tests/cachedb)
TIMEOUT_S = 5.0


def run(fn: Callable[[], Awaitable[T]], timeout_s: float = TIMEOUT_S, *,
        after: Callable[[], Awaitable[None]] | None = None) -> T:  # fmt: skip
    """Run ``fn()`` on a fresh uvloop loop; it fails with TimeoutError past ``timeout_s``.
    ``after()``, if given, runs on the same loop once ``fn`` ended, however it ended."""

    async def bounded() -> T:
        try:
            async with asyncio.timeout(timeout_s):
                return await fn()
        finally:
            if after is not None:
                await after()

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    try:
        return runner.run(bounded())
    finally:
        leaks = _close(runner)
        if leaks and sys.exc_info()[0] is None:
            raise AssertionError(f"left open when the loop closed: {leaks}")


def _close(runner: asyncio.Runner) -> list[str]:
    """Close the loop, returning what uvloop found still open. Its "unclosed resource" warning
    is recorded, not raised: raised as an error (pytest ``filterwarnings``) inside uvloop's
    close walk, it skipped closing the handle and the loop then waited on it forever."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        runner.close()
    for w in caught:  # any other warning goes on as it would have
        if not issubclass(w.category, ResourceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
