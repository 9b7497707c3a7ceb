"""Failure and recovery on every backend: a stopped server gives 503-class CacheErrors, never
a crash, and calls work again as soon as it is back; a paused server gives CacheTimeout and
a ``cachedb_slow`` log line."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from tests.cachedb.conftest import BACKENDS
from tests.cachedb.helpers import run
from tests.cachedb.servers import Server
from workers.cachedb import CacheError, CacheTimeout, CacheUnavailable, open_cachedb

TIMEOUT_S = 0.3


@pytest.mark.parametrize("name", BACKENDS)
def test_stop_then_restart(own_server: Callable[[str], Server], name: str) -> None:
    """While the server is down every op raises CacheUnavailable/CacheTimeout (status 503);
    the first call after it is back succeeds on the same client."""
    server = own_server(name)

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=TIMEOUT_S, run_dir=server.run_dir)
        try:
            await db.set("k", b"before")
            assert await db.get("k") == b"before"
            server.stop()
            for call in (db.get("k"), db.set("k", b"x"), db.add("a", b"x"), db.incr("n"),
                         db.decr("n"), db.delete("k")):  # fmt: skip
                with pytest.raises((CacheUnavailable, CacheTimeout)) as info:
                    await call
                assert info.value.status == 503
            server.start()
            await db.set("k", b"after")
            assert await db.get("k") == b"after"
            assert await db.incr("n") == 1
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
            await db.set("k", b"v1")
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
            await db.set("k", b"v2")
            assert await db.get("k") == b"v2"
            assert await db.add("fresh", b"x") is True
            assert await db.get("fresh") == b"x"
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
