"""Helpers for async tests of the ZeroMQ hop: a bounded uvloop runner and a wait-until."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import uvloop

TIMEOUT_S = 5.0

def run(fn: Callable[[], Awaitable[None]]) -> None:
    """Run a test coroutine on uvloop, bounded by TIMEOUT_S."""

    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT_S):
            await fn()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(bounded())

async def until(predicate: Callable[[], bool], step_s: float = 0.002) -> None:
    """Let the loop run until ``predicate`` holds (the test's timeout bounds it)."""
    while not predicate():
        await asyncio.sleep(step_s)
