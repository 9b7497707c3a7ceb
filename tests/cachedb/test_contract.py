"""The cacheDB contract (workers/cachedb/interface.py), run against every backend on a real
server: local (``python -m stateplane.main``), redis-server and memcached."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.cachedb.helpers import CALL_S, eventually, run
from tests.cachedb.servers import RedisCluster, Server
from workers.cachedb import (
    MAX_VALUE_BYTES,
    CacheDB,
    CacheKeyError,
    CacheUnavailable,
    CacheValueError,
    open_cachedb,
)

_n = itertools.count()
Body = Callable[[CacheDB, str], Awaitable[None]]

#: the bound of a whole test body (a hang fails here, not at pytest-timeout's 600 s)
BODY_S = 120.0


def with_db(server: Server, body: Body, timeout_s: float = CALL_S) -> None:
    """Run ``body(db, prefix)`` with a fresh client and a key prefix no other test uses."""
    prefix = f"t{os.getpid()}-{next(_n)}-"

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=timeout_s, run_dir=server.run_dir)
        try:
            await body(db, prefix)
        finally:
            await db.close()

    run(main, BODY_S)


def test_get_missing(server: Server) -> None:
    """A key never set reads as None."""

    async def body(db: CacheDB, p: str) -> None:
        assert await db.get(p + "nothing") is None

    with_db(server, body)


def test_set_get_overwrite(server: Server) -> None:
    """set stores, a second set replaces the value."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "k", b"one")
        assert await db.get(p + "k") == b"one"
        await db.set(p + "k", b"two")
        assert await db.get(p + "k") == b"two"

    with_db(server, body)


@pytest.mark.parametrize(
    "value",
    [b"", bytes(range(256)), b"\r\nEND\r\n", b"VALUE x 0 1\r\n", b"\x00" * 10, "é☎".encode()],
    ids=["empty", "all-bytes", "end-marker", "value-line", "nuls", "utf8"],
)
def test_binary_values(server: Server, value: bytes) -> None:
    """Any bytes come back exactly, protocol look-alikes included."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "bin", value)
        assert await db.get(p + "bin") == value

    with_db(server, body)


def test_large_value(server: Server) -> None:
    """A value of MAX_VALUE_BYTES round-trips; one byte more is refused before any I/O."""
    big = os.urandom(MAX_VALUE_BYTES)

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "big", big)
        assert await db.get(p + "big") == big
        with pytest.raises(CacheValueError):
            await db.set(p + "big", big + b"x")
        assert await db.get(p + "big") == big

    with_db(server, body)


def test_unicode_key(server: Server) -> None:
    """Non-ASCII keys are their UTF-8 bytes; 250 of them is the limit."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "sip:alicé@example.com", b"1")
        assert await db.get(p + "sip:alicé@example.com") == b"1"
        longest = (p + "x" * 250)[:250]
        await db.set(longest, b"2")
        assert await db.get(longest) == b"2"

    with_db(server, body)


@pytest.mark.parametrize(
    "key",
    ["", "a b", "a\r\nset x", "tab\t", "nul\x00", "del\x7f", "x" * 251, "é" * 126],
    ids=["empty", "space", "crlf", "tab", "nul", "del", "251-ascii", "252-utf8"],
)
def test_bad_keys_refused(server: Server, key: str) -> None:
    """Keys memcached could not carry are refused on every backend, for every op."""

    async def body(db: CacheDB, p: str) -> None:
        for call in (db.get(key), db.set(key, b"v"), db.add(key, b"v"), db.incr(key),
                     db.decr(key), db.delete(key)):  # fmt: skip
            with pytest.raises(CacheKeyError):
                await call

    with_db(server, body)


def test_add_only_if_absent(server: Server) -> None:
    """add stores only a missing key and never changes an existing one."""

    async def body(db: CacheDB, p: str) -> None:
        assert await db.add(p + "a", b"first") is True
        assert await db.add(p + "a", b"second") is False
        assert await db.get(p + "a") == b"first"
        assert await db.delete(p + "a") is True
        assert await db.add(p + "a", b"third") is True
        assert await db.get(p + "a") == b"third"

    with_db(server, body)


def test_delete(server: Server) -> None:
    """delete says whether the key existed; afterwards it reads as None."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "d", b"x")
        assert await db.delete(p + "d") is True
        assert await db.get(p + "d") is None
        assert await db.delete(p + "d") is False

    with_db(server, body)


def test_counters(server: Server) -> None:
    """incr creates at ``by``, decr stops at 0, a missing key decrements to 0 and stays
    missing, ``incr(k, 0)`` reads, a set decimal value counts on."""

    async def body(db: CacheDB, p: str) -> None:
        assert await db.incr(p + "c") == 1
        assert await db.incr(p + "c", 5) == 6
        assert await db.incr(p + "c", 0) == 6
        assert await db.decr(p + "c", 2) == 4
        assert await db.decr(p + "c", 10) == 0
        assert await db.decr(p + "c") == 0
        assert await db.incr(p + "c", 10) == 10
        assert await db.decr(p + "c") == 9
        assert int(await db.get(p + "c") or b"x") == 9  # memcached may pad: "9 "
        assert await db.decr(p + "missing", 3) == 0
        assert await db.get(p + "missing") is None
        assert await db.incr(p + "new", 7) == 7
        await db.set(p + "s", b"41")
        assert await db.incr(p + "s") == 42
        big = 2**62
        assert await db.incr(p + "big", big) == big
        assert await db.incr(p + "big", big - 1) == 2**63 - 1

    with_db(server, body)


def test_counter_of_non_counter(server: Server) -> None:
    """incr/decr of a value that is not a decimal counter is CacheValueError; the value stays."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "text", b"hello")
        with pytest.raises(CacheValueError):
            await db.incr(p + "text")
        with pytest.raises(CacheValueError):
            await db.decr(p + "text")
        assert await db.get(p + "text") == b"hello"
        with pytest.raises(CacheValueError):
            await db.incr(p + "text", -1)

    with_db(server, body)


def test_ttl_holds_then_expires(server: Server) -> None:
    """Keys written with a TTL (set, add, incr) are there for at least ttl_s, an incr counts on
    within it, and they are gone within the backend's granularity (memcached counts whole
    seconds: up to ~1 s late by design, interface.py rule 2); a key without TTL stays."""
    ttl = 1.0

    async def body(db: CacheDB, p: str) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # before the writes: no key may be gone before t0 + ttl
        await db.set(p + "s", b"v", ttl)
        await db.add(p + "a", b"v", ttl)
        await db.incr(p + "c", 1, ttl)
        await db.set(p + "forever", b"v")
        keys = [p + "s", p + "a", p + "c"]
        counted = b"1"
        while loop.time() - t0 < 0.9 * ttl:
            if counted == b"1" and loop.time() - t0 > 0.4 * ttl:
                n = await db.incr(p + "c", 1, ttl)  # counts on; the TTL only applies to a new key
                if loop.time() < t0 + ttl:  # (a loaded box may have taken us past it)
                    assert n == 2
                    counted = b"2"
            values = [await db.get(k) for k in keys]
            if loop.time() < t0 + ttl:  # an answer received before the TTL must find them
                assert values == [b"v", b"v", counted]
            await asyncio.sleep(0.05)

        async def all_gone() -> bool:
            return all([await db.get(k) is None for k in keys])

        await eventually(all_gone, within_s=3.5 * ttl)
        assert await db.get(p + "forever") == b"v"
        assert await db.add(p + "a", b"again", ttl) is True  # expired counts as absent

    with_db(server, body)


def test_short_ttl_expires(server: Server) -> None:
    """A sub-second TTL is honoured (rounded up to whole seconds on memcached): no read sent
    0.5 s or more after the set returned finds the key (a read's own latency, seconds on a
    loaded box, cannot fail this: the key was born before the set returned, and the server
    answered the read after it was sent)."""

    async def body(db: CacheDB, p: str) -> None:
        loop = asyncio.get_running_loop()
        await db.set(p + "short", b"v", 0.05)
        born_by = loop.time()
        found_at: list[float] = []  # when each read that still found the key was sent

        async def gone() -> bool:
            sent = loop.time() - born_by
            if await db.get(p + "short") is None:
                return True
            found_at.append(sent)
            return False

        await eventually(gone, within_s=CALL_S)
        if server.name != "memcached":  # whole seconds there (interface.py rule 2)
            last = max(found_at, default=0.0)
            assert last < 0.5, f"a read sent {last:.2f} s after the set still found the key"

    with_db(server, body)


def test_concurrent_clients(server: Server) -> None:
    """Several clients hammering one counter concurrently lose no increment, and each sees the
    others' writes."""

    async def body(db: CacheDB, p: str) -> None:
        others = [open_cachedb(server.url, timeout_s=CALL_S, run_dir=server.run_dir)
                  for _ in range(3)]  # fmt: skip
        clients = [db, *others]
        try:
            await asyncio.gather(*(c.incr(p + "n") for c in clients for _ in range(50)))
            assert [await c.incr(p + "n", 0) for c in clients] == [200] * 4
            await others[0].set(p + "w", b"from-0")
            assert await others[2].get(p + "w") == b"from-0"
            results = await asyncio.gather(*(c.add(p + "once", b"x") for c in clients))
            assert sorted(results) == [False, False, False, True]
        finally:
            for c in others:
                await c.close()

    with_db(server, body)


def test_many_in_flight(server: Server) -> None:
    """One client with hundreds of concurrent calls gets every answer to the right call."""

    async def body(db: CacheDB, p: str) -> None:
        await asyncio.gather(*(db.set(f"{p}{i}", b"%d" % i) for i in range(300)))
        got = await asyncio.gather(*(db.get(f"{p}{i}") for i in range(300)))
        assert got == [b"%d" % i for i in range(300)]

    with_db(server, body)


def _connections_to(server: Server | RedisCluster) -> int:
    """This process's established TCP connections to the server's ports (from /proc)."""
    ports = {n.port for n in server.nodes} if isinstance(server, RedisCluster) else {server.port}
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if target.startswith("socket:["):
            ours.add(target[8:-1])
    found = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if cols[3] == "01" and remote_port in ports and cols[9] in ours:
                found += 1
    return found


@pytest.mark.parametrize("server", ["redis", "redis-cluster", "memcached"], indirect=True)
def test_close_ends_calls_in_flight_and_refuses_later_ones(server: Server) -> None:
    """close() returns once the calls in flight have ended, a later call is CacheUnavailable
    without I/O, and no connection is left open (guard.py rule 5: redis-py reconnected a closed
    client, the leaked connection then hung uvloop's close under pytest)."""

    async def body(db: CacheDB, p: str) -> None:
        await db.set(p + "k", b"v")  # connected (a cluster client's start is done)
        calls = [asyncio.ensure_future(db.get(p + "k")) for _ in range(30)]
        calls += [asyncio.ensure_future(db.delete(f"{p}x{i}")) for i in range(30)]
        await asyncio.sleep(0)  # every call has started: in flight across the close
        await db.close()
        assert all(c.done() for c in calls)
        with pytest.raises(CacheUnavailable):
            await db.get(p + "k")
        with pytest.raises(CacheUnavailable):
            await db.add(p + "late", b"x")
        assert _connections_to(server) == 0

    with_db(server, body)
