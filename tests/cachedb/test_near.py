"""NearCache with an injected timer, over a real sans-IO store wrapped as a CacheDB that
counts what reaches it (near-cache logic needs no server; the backends are tested apart)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from stateplane.kv import KvStore
from tests.cachedb.helpers import eventually, run
from workers.cachedb import CacheDB, CacheUnavailable, NearCache


class CountingStore:
    """A CacheDB over an in-memory KvStore that counts calls and can be made to fail."""

    def __init__(self) -> None:
        self.store = KvStore()
        self.calls: Counter[str] = Counter()
        self.down = False
        self.gate: asyncio.Event | None = None  # when set, get() waits for it

    def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if self.down:
            raise CacheUnavailable("down")

    async def get(self, key: str) -> bytes | None:
        self._enter("get")
        value = self.store.get(key, 0.0)
        if self.gate is not None:
            await self.gate.wait()
        return value

    async def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._enter("set")
        self.store.set(key, value, ttl_s, 0.0)

    async def add(self, key: str, value: bytes, ttl_s: float | None = None) -> bool:
        self._enter("add")
        return self.store.add(key, value, ttl_s, 0.0)

    async def incr(self, key: str, by: int = 1, ttl_s: float | None = None) -> int:
        self._enter("incr")
        return self.store.incr(key, by, ttl_s, 0.0)

    async def decr(self, key: str, by: int = 1) -> int:
        self._enter("decr")
        return self.store.decr(key, by, 0.0)

    async def delete(self, key: str) -> bool:
        self._enter("delete")
        return self.store.delete(key, 0.0)

    async def close(self) -> None:
        self.calls["close"] += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(maxsize: int = 100, **kw: bool) -> tuple[NearCache, CountingStore, Clock]:
    backend, clock = CountingStore(), Clock()
    return NearCache(backend, ttl_s=5.0, maxsize=maxsize, timer=clock, **kw), backend, clock


def test_is_a_cachedb() -> None:
    """NearCache offers the CacheDB interface."""
    near, _, _ = make()
    assert isinstance(near, CacheDB)


def test_reads_served_until_ttl() -> None:
    """Repeated reads hit the backend once per TTL; another writer is seen after the TTL."""
    near, backend, clock = make()

    async def main() -> None:
        backend.store.set("k", b"v1", None, 0.0)
        assert [await near.get("k") for _ in range(3)] == [b"v1"] * 3
        assert backend.calls["get"] == 1 and near.hits == 2
        backend.store.set("k", b"v2", None, 0.0)  # another process writes
        clock.now += 4.9
        assert await near.get("k") == b"v1"  # stale, within the allowed TTL
        clock.now += 0.1
        assert await near.get("k") == b"v2"
        assert backend.calls["get"] == 2

    run(main)


def test_misses_cached_or_not() -> None:
    """A miss is remembered by default, and not with cache_misses=False."""

    async def main() -> None:
        for cache_misses, expected in ((True, 1), (False, 2)):
            near, backend, _ = make(cache_misses=cache_misses)
            assert await near.get("k") is None
            assert await near.get("k") is None
            assert backend.calls["get"] == expected

    run(main)


@pytest.mark.parametrize("op", ["set", "add", "incr", "decr", "delete"])
def test_writes_go_through_and_invalidate(op: str) -> None:
    """Every write reaches the backend and the next read asks the backend again."""
    near, backend, _ = make()

    async def main() -> None:
        backend.store.set("k", b"5", None, 0.0)
        assert await near.get("k") == b"5"
        calls = {"set": near.set("k", b"7"), "add": near.add("k", b"x"), "incr": near.incr("k"),
                 "decr": near.decr("k"), "delete": near.delete("k")}  # fmt: skip
        await calls.pop(op)
        for c in calls.values():
            c.close()
        assert backend.calls[op] == 1
        assert await near.get("k") == backend.store.get("k", 0.0)
        assert backend.calls["get"] == 2

    run(main)


def test_failed_write_still_invalidates() -> None:
    """A write that fails leaves the backend unknown: the key is dropped here anyway."""
    near, backend, _ = make()

    async def main() -> None:
        backend.store.set("k", b"old", None, 0.0)
        assert await near.get("k") == b"old"
        backend.down = True
        with pytest.raises(CacheUnavailable):
            await near.set("k", b"new")
        backend.down = False
        await near.get("k")
        assert backend.calls["get"] == 2

    run(main)


def test_read_overlapping_a_write_is_not_kept() -> None:
    """A read that started before a write and ends after it is not remembered."""
    near, backend, _ = make()

    async def main() -> None:
        backend.store.set("k", b"old", None, 0.0)
        backend.gate = asyncio.Event()
        reading = asyncio.ensure_future(near.get("k"))

        async def read_reached_backend() -> bool:  # and took "old" there
            return backend.calls["get"] == 1

        await eventually(read_reached_backend, within_s=2.0)
        backend.gate.set()
        await near.set("k", b"new")
        assert await reading == b"old"
        backend.gate = None
        assert await near.get("k") == b"new"

    run(main)


def test_bounded_by_maxsize() -> None:
    """At most maxsize keys are held; older ones are asked for again."""
    near, backend, _ = make(maxsize=2)

    async def main() -> None:
        for k in ("a", "b", "c"):
            await near.get(k)
        await near.get("a")
        assert backend.calls["get"] == 4

    run(main)


def test_close_closes_backend() -> None:
    """close() closes the backend."""
    near, backend, _ = make()
    run(near.close)
    assert backend.calls["close"] == 1
