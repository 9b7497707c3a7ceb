"""Prefix tables in a cacheDB key space (workers/routing/prefix_cachedb.py), on real servers."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable

import pytest

from tests.cachedb.conftest import make
from tests.cachedb.helpers import run
from tests.cachedb.servers import RedisCluster, Server
from workers.cachedb import CacheDB, open_cachedb
from workers.routing import prefix_cachedb
from workers.routing.prefix_csv import PrefixFileError
from workers.routing.prefixes import Gateway

GROUPS = ["a", "b"]
_n = itertools.count()


@pytest.fixture(params=["redis", "memcached"])
def kv(request: pytest.FixtureRequest,
       _shared: dict[str, Server | RedisCluster]) -> Server | RedisCluster:  # fmt: skip
    name: str = request.param
    if name not in _shared:
        _shared[name] = make(name)
        _shared[name].start()
    return _shared[name]


def with_db(server: Server | RedisCluster, body: Callable[[CacheDB, str], Awaitable[None]]) -> None:
    key = f"prefixes-{os.getpid()}-{next(_n)}"

    async def main() -> None:
        db = open_cachedb(server.url, timeout_s=2.0, run_dir=getattr(server, "run_dir", None))
        try:
            await body(db, key)
        finally:
            await db.close()

    run(main)


def big_table(n: int) -> bytes:
    return b"".join(b"+%d,%s,%d\n" % (10**6 + i, b"ab"[i % 2 : i % 2 + 1], i % 3) for i in range(n))


def test_push_then_load_across_chunks(kv: Server) -> None:
    """A table larger than one chunk comes back whole and routes as the file would."""
    data = big_table(80_000)
    assert len(prefix_cachedb.chunks(data)) > 1

    async def body(db: CacheDB, key: str) -> None:
        await prefix_cachedb.push(db, key, data, GROUPS, 100_000)
        t = await prefix_cachedb.load(db, key, "t", GROUPS, 100_000)
        assert len(t) == 80_000
        assert t.lookup("+1000001999").gateways == (Gateway("b", 1),)  # type: ignore[union-attr]

    with_db(kv, body)


def test_refused_push_changes_nothing(kv: Server) -> None:
    """A bad table is refused before anything is written: readers keep the old one."""

    async def body(db: CacheDB, key: str) -> None:
        await prefix_cachedb.push(db, key, b"44,a\n", GROUPS, 10)
        with pytest.raises(PrefixFileError) as info:
            await prefix_cachedb.push(db, key, b"44,b\n45,c\n", GROUPS, 10)
        assert (info.value.file, info.value.line, info.value.field) == (f"cachedb:{key}", 2, "group")
        assert await prefix_cachedb.fetch(db, key) == b"44,a\n"

    with_db(kv, body)


def test_new_version_replaces_and_old_chunks_go(kv: Server) -> None:
    """A push switches readers to the new text and deletes the previous version's chunks."""

    async def body(db: CacheDB, key: str) -> None:
        old = await prefix_cachedb.push(db, key, b"44,a\n", GROUPS, 10)
        await prefix_cachedb.push(db, key, b"44,b\n", GROUPS, 10)
        assert await prefix_cachedb.fetch(db, key) == b"44,b\n"
        assert await db.get(f"{key}:{old}:0") is None

    with_db(kv, body)


def test_missing_or_forged_key_space_is_refused(kv: Server) -> None:
    """No table, a forged ``current`` or a chunk gone: refused with what was found."""

    async def body(db: CacheDB, key: str) -> None:
        with pytest.raises(PrefixFileError, match="no key"):
            await prefix_cachedb.fetch(db, key)
        await db.set(f"{key}:current", b"1 99999 " + b"0" * 64)
        with pytest.raises(PrefixFileError, match="VERSION CHUNKS SHA256"):
            await prefix_cachedb.fetch(db, key)
        version = await prefix_cachedb.push(db, key, b"44,a\n", GROUPS, 10)
        await db.delete(f"{key}:{version}:0")
        with pytest.raises(PrefixFileError, match="chunk 0 of version"):
            await prefix_cachedb.fetch(db, key)
        await db.set(f"{key}:{version}:0", b"44,b\n")  # not what the digest says
        with pytest.raises(PrefixFileError, match="another digest"):
            await prefix_cachedb.fetch(db, key)

    with_db(kv, body)
