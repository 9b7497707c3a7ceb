"""The cacheDB tests' bound on the shared runner, and deadline polling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tests import aio

#: the bound of a whole test body (a hang fails here, not at pytest-timeout's 600 s); a body
#: makes calls of up to ``CALL_S`` each, so this is no measure of their speed either
TIMEOUT_S = 120.0
#: a client's deadline for each call, in tests not about the client's timeout
#: (test_recovery.py, test_redis_cluster.py and test_local.py's late replies are): a deadline
#: for answers that come, not a measure. 1-3 s was overstepped on the 2-core CI box at load
#: 15-20 (a redis-cluster client's one-time start, bounded at 2 s, took longer; 200
#: concurrent incrs took over 2 s)
CALL_S = 30.0


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
