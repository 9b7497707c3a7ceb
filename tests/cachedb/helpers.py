"""The cacheDB tests' bound on the shared runner, and deadline polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests import aio

TIMEOUT_S = 10.0


def run(fn: Callable[[], Awaitable[None]], timeout_s: float = TIMEOUT_S) -> None:
    """``tests.aio.run`` with this package's bound (real servers, reconnects)."""
    aio.run(fn, timeout_s)


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float,
                     step_s: float = 0.02) -> float:  # fmt: skip
    """Poll ``check`` until it holds; returns the seconds it took. Fails past ``within_s``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await check():
        if loop.time() - start > within_s:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(step_s)
    return loop.time() - start
