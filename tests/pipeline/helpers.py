"""Helpers for async tests of the ZeroMQ hop: the bounded uvloop runner and a wait-until."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.aio import run  # noqa: F401 - re-exported: the tests here import it from here (5 s)


async def until(predicate: Callable[[], bool], step_s: float = 0.002) -> None:
    """Let the loop run until ``predicate`` holds (the test's timeout bounds it)."""
    while not predicate():
        await asyncio.sleep(step_s)
