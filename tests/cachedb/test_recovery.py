"""Failure and recovery on every backend: a stopped server gives 503-class CacheErrors, never
a crash, and the same client's calls work again once it is back; a paused server gives
CacheTimeout and a ``cachedb_slow`` log line.

The client's deadline is short (``TIMEOUT_S``) because the failures are what is tested. A call
that must succeed is therefore tried again, on the same client, until it does, within
``CALL_S`` (``answered``): on the 2-core CI box under load a reconnect to a server that has
just started took longer than ``TIMEOUT_S`` (the ZeroMQ reconnect interval and handshake for
``local://``, a TCP connect and the slot map for redis-cluster), and so, now and then, did a
single round trip. Only 503-class errors are tried again; a wrong answer fails at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from structlog.testing import capture_logs

from tests.cachedb.conftest import BACKENDS
from tests.cachedb.helpers import CALL_S, run
from tests.cachedb.servers import Server
from workers.cachedb import CacheError, CacheTimeout, CacheUnavailable, open_cachedb

T = TypeVar("T")

TIMEOUT_S = 0.3
#: between two tries of a call that must succeed (each try is bounded by ``TIMEOUT_S``)
RETRY_S = 0.05


async def answered(call: Callable[[], Awaitable[T]]) -> tuple[T, list[CacheError]]:
    """``call()``'s result once it succeeds, and the 503-class errors of the tries before it
    (any other error fails the test). Fails if it has not succeeded within ``CALL_S``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CALL_S
    failed: list[CacheError] = []
    while True:
        try:
            return await call(), failed
        except (CacheUnavailable, CacheTimeout) as exc:
            assert exc.status == 503
            failed.append(exc)
            if loop.time() > deadline:
                raise AssertionError(f"no answer within {CALL_S} s: {failed[-3:]}") from exc
        await asyncio.sleep(RETRY_S)


def may_have_applied(failed: list[CacheError]) -> int:
    """How many of these failed tries the server may still have applied: a CacheTimeout's
    request may have reached it (errors.py); a CacheUnavailable's never left, or met no server."""
    return sum(isinstance(exc, CacheTimeout) for exc in failed)


@pytest.mark.parametrize("name", BACKENDS)
def test_stop_then_restart(own_server: Callable[[str], Server], name: str) -> None:
    """While the server is down every op raises CacheUnavailable/CacheTimeout (status 503);
    once it is back the same client's calls succeed again, and none of the calls that failed
    while it was down is applied afterwards."""
    server = own_server(name)

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=TIMEOUT_S, run_dir=server.run_dir)
        try:
            await answered(lambda: db.set("k", b"before"))
            assert (await answered(lambda: db.get("k")))[0] == b"before"
            server.stop()
            for call in (db.get("k"), db.set("k", b"x"), db.add("a", b"x"), db.incr("n"),
                         db.decr("n"), db.delete("k")):  # fmt: skip
                with pytest.raises((CacheUnavailable, CacheTimeout)) as info:
                    await call
                assert info.value.status == 503
            server.start()
            await answered(lambda: db.set("k", b"after"))  # the same client reconnects
            assert (await answered(lambda: db.get("k")))[0] == b"after"
            # the restarted server is empty: an incr/decr/add that failed above and was
            # still sent or replayed after the restart would show here
            assert (await answered(lambda: db.get("n")))[0] is None
            assert (await answered(lambda: db.get("a")))[0] is None
            n, failed = await answered(lambda: db.incr("n"))
            assert 1 <= n <= 1 + may_have_applied(failed)
        finally:
            await db.close()

    run(main)


@pytest.mark.parametrize("name", BACKENDS)
def test_paused_server_times_out(own_server: Callable[[str], Server], name: str) -> None:
    """A server that stops answering (SIGSTOP) makes calls raise CacheTimeout after the
    timeout and log ``cachedb_slow``; once it answers again so do calls (no reply is ever
    taken for another call's). A timed-out write may still be applied, after later writes
    from other connections even, so the test does not read the key it wrote."""
    server = own_server(name)

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=TIMEOUT_S, slow_ms=100, run_dir=server.run_dir)
        try:
            await answered(lambda: db.set("k", b"v1"))
            server.pause()
            with capture_logs() as logs:
                with pytest.raises(CacheTimeout):
                    await db.get("k")
                with pytest.raises(CacheTimeout):
                    await db.set("other", b"lost?")  # may still be applied, and late
            slow = [e for e in logs if e["event"] == "cachedb_slow"]
            assert [(e["backend"], e["op"]) for e in slow] == [(name, "get"), (name, "set")]
            assert all(
                e["ms"] >= 0.9 * TIMEOUT_S * 1000 for e in slow
            )  # loop timers may fire ~1 ms early
            server.resume()
            await answered(lambda: db.set("k", b"v2"))
            # a late reply to the get that timed out would say v1
            assert (await answered(lambda: db.get("k")))[0] == b"v2"
            added, failed = await answered(lambda: db.add("fresh", b"x"))
            assert added is True or may_have_applied(failed)
            assert (await answered(lambda: db.get("fresh")))[0] == b"x"
        finally:
            await db.close()

    run(main)


def test_unknown_scheme_and_missing_run_dir() -> None:
    """open_cachedb refuses URLs it cannot serve, naming the problem."""
    with pytest.raises(ValueError, match="scheme"):
        open_cachedb("mongodb://127.0.0.1")
    with pytest.raises(ValueError, match="run_dir"):
        open_cachedb("local://")


def test_errors_form_one_tree() -> None:
    """Every error a call raises is a CacheError carrying a SIP status."""
    assert issubclass(CacheTimeout, CacheError) and CacheTimeout.status == 503
    assert issubclass(CacheUnavailable, CacheError) and CacheUnavailable.status == 503
    assert CacheError.status == 500
