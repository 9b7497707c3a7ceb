"""What only a Redis Cluster adds to the contract (workers/cachedb/backend_redis_cluster.py):
keys spread over the masters and reached from any seed, one shared start per client, and a
slot moved under a running client followed without applying a write twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis
from redis.cluster import key_slot

from tests.cachedb.helpers import run
from tests.cachedb.servers import RedisCluster, Server
from workers.cachedb import CacheDB, CacheTimeout, CacheUnavailable, open_cachedb
from workers.cachedb.backend_redis_cluster import RedisClusterCacheDB


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)


def owner(cluster: RedisCluster, key: str) -> int:
    """The port of the master serving ``key``'s slot."""
    slot = key_slot(key.encode())
    with client(cluster.ports[0]) as r:
        for start, end, master, *_ in r.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    raise AssertionError(f"slot {slot} is not served")


def test_keys_spread_and_any_seed_reaches_all(own_server: Callable[[str], Server]) -> None:
    """60 keys written through a client seeded with the first master land on all three, and a
    client seeded with only the last master reads every one (it follows the slot map)."""
    cluster = own_server("redis-cluster")
    assert isinstance(cluster, RedisCluster)
    keys = [f"spread-{i}" for i in range(60)]

    async def main() -> None:
        first = open_cachedb(f"redis-cluster://127.0.0.1:{cluster.ports[0]}/", timeout_s=5.0)
        last = open_cachedb(f"redis-cluster://127.0.0.1:{cluster.ports[-1]}/", timeout_s=5.0)
        try:
            for k in keys:
                await first.set(k, k.encode())
            assert [await last.get(k) for k in keys] == [k.encode() for k in keys]
        finally:
            await first.close()
            await last.close()

    run(main)
    sizes = []
    for port in cluster.ports:
        with client(port) as r:
            sizes.append(int(r.dbsize()))
    assert sum(sizes) == len(keys) and all(sizes), sizes


def test_first_calls_share_one_start(own_server: Callable[[str], Server]) -> None:
    """50 first calls at once on a fresh client all succeed and read the command table once
    (one ``COMMAND`` across the masters); a client whose deadline is shorter than that read
    still gets its first answer."""
    cluster = own_server("redis-cluster")
    assert isinstance(cluster, RedisCluster)

    def commands() -> int:
        total = 0
        for port in cluster.ports:
            with client(port) as r:
                total += int(r.info("commandstats").get("cmdstat_command", {}).get("calls", 0))
        return total

    before = commands()

    async def main() -> None:
        # the 50 calls queue on the client's connection gate after the start, inside their own
        # deadlines: 0.25 s is too little for the last of them on a loaded box, and the deadline
        # is not what this half tests (the start shared once is)
        db = open_cachedb(cluster.url, timeout_s=5.0)
        try:
            got = await asyncio.gather(*(db.incr(f"first-{i % 5}") for i in range(50)))
            assert sorted(got) == sorted(n for _ in range(5) for n in range(1, 11))
        finally:
            await db.close()

    run(main)
    assert commands() - before == 1

    async def tight() -> None:
        # the start (0.13 s idle here) is longer than this deadline: it has its own
        db = open_cachedb(cluster.url, timeout_s=0.05)
        try:
            try:
                assert await db.get("first-0") == b"10"
            except CacheTimeout:
                # a loaded box may take over 0.05 s for the get itself: what is tested is that
                # the start finished past that deadline; the get is then asked again
                assert isinstance(db, RedisClusterCacheDB) and db._ready, "start cut by the deadline"
                assert await eventually_get(db, "first-0") == b"10"
        finally:
            await db.close()

    run(tight)


def test_moved_slot_is_followed_once(own_server: Callable[[str], Server]) -> None:
    """A slot migrated to another master while a client holds the old map: the client's next
    calls get MOVED, follow it and refresh; the value moved with the slot and an ``incr``
    counts exactly once."""
    cluster = own_server("redis-cluster")
    assert isinstance(cluster, RedisCluster)
    key = "moving"
    slot = key_slot(key.encode())

    async def main() -> None:
        db = open_cachedb(cluster.url, timeout_s=2.0)
        try:
            assert await db.incr(key, 5) == 5
            migrate(cluster, slot, key)
            assert await db.incr(key, 1) == 6
            assert await db.get(key) == b"6"
        finally:
            await db.close()

    run(main)
    with client(owner(cluster, key)) as r:
        assert r.get(key) == b"6"


def migrate(cluster: RedisCluster, slot: int, key: str) -> None:
    """Move ``slot`` (holding ``key``) to another master, the way redis-cli --cluster reshard
    does: IMPORTING/MIGRATING, MIGRATE the key, then SETSLOT NODE on every master."""
    src = owner(cluster, key)
    dst = next(p for p in cluster.ports if p != src)
    with client(src) as s, client(dst) as d:
        src_id, dst_id = s.execute_command("CLUSTER MYID"), d.execute_command("CLUSTER MYID")
        d.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        s.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        s.execute_command("MIGRATE", "127.0.0.1", dst, key, 0, 5000)
        for port in (dst, src, *(p for p in cluster.ports if p not in (src, dst))):
            with client(port) as r:
                r.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    assert owner(cluster, key) == dst


def test_start_against_a_down_cluster_is_tried_again(own_server: Callable[[str], Server]) -> None:
    """A client whose first call finds every master down gets a 503-class error, not a
    crash; once the cluster is back, its next call starts it and succeeds."""
    cluster = own_server("redis-cluster")
    assert isinstance(cluster, RedisCluster)
    cluster.stop()

    async def main() -> None:
        db = open_cachedb(cluster.url, timeout_s=0.3)
        try:
            with pytest.raises((CacheUnavailable, CacheTimeout)) as info:
                await db.set("k", b"v")
            assert info.value.status == 503
            cluster.start()
            await db.set("k", b"v")
            assert await db.get("k") == b"v"
        finally:
            await db.close()

    run(main)


async def eventually_get(db: CacheDB, key: str, within_s: float = 10.0) -> bytes | None:
    """``db.get(key)`` asked again past each short deadline's timeout, within ``within_s``."""
    end = asyncio.get_running_loop().time() + within_s
    while True:
        try:
            return await db.get(key)
        except CacheTimeout:
            if asyncio.get_running_loop().time() >= end:
                raise
