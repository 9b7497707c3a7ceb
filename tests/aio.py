"""The one runner of async test bodies: a fresh uvloop loop (the processes' loop), bounded."""

from __future__ import annotations

import asyncio
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

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(bounded())
