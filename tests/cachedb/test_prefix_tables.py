"""Prefix tables in a cacheDB key space (workers/routing/prefix_cachedb.py), on real servers."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conf.load import from_dict
from conf.settings import Settings
from sipline import cli
from tests.cachedb.conftest import make
from tests.cachedb.helpers import CALL_S, run
from tests.cachedb.servers import RedisCluster, Server
from workers.cachedb import CacheDB, CacheError, open_cachedb
from workers.routing import prefix_cachedb
from workers.routing.prefix_csv import PrefixFileError
from workers.routing.prefix_route import load_all
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
        db = open_cachedb(server.url, timeout_s=CALL_S, run_dir=getattr(server, "run_dir", None))
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


def settings_for(server: Server | RedisCluster | None, key: str, tmp_path: Path) -> Settings:
    csv = tmp_path / "local.csv"
    csv.write_text("33,b\n")
    return from_dict({
        "node": {"run_dir": str(tmp_path / "run")},
        "registrar": {"cachedb_url": server.url if server else "local://"},
        "destination_set": [{"name": "a", "destinations": ["sip:127.0.0.1:5080"]},
                            {"name": "b", "destinations": ["sip:127.0.0.1:5081"]}],
        "prefix_table": [{"name": "remote", "cachedb_key": key},
                         {"name": "local", "file": str(csv)}],
        "route": [{"name": "r", "prefix_table": "remote"}],
    })  # fmt: skip


def test_worker_start_reads_file_and_cachedb_tables(kv: Server, tmp_path: Path) -> None:
    """``load_all`` (what a worker does at start) builds both kinds of table; ``sipline
    prefix-push`` is what stores the cacheDB one, and refuses a bad file."""

    async def body(db: CacheDB, key: str) -> None:
        s = settings_for(kv, key, tmp_path)
        conf = tmp_path / "s.toml"
        conf.write_text(f'[node]\nrun_dir = "{tmp_path / "run"}"\n[registrar]\n'
                        f'cachedb_url = "{kv.url}"\n'
                        '[[destination_set]]\nname = "a"\ndestinations = ["sip:127.0.0.1:5080"]\n'
                        f'[[prefix_table]]\nname = "remote"\ncachedb_key = "{key}"\n')  # fmt: skip
        bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
        bad.write_text("44,a\n45,zz\n")
        good.write_text("44,a\n")
        loop = asyncio.get_running_loop()
        rc = await loop.run_in_executor(None, cli.main, ["--conf", str(conf), "prefix-push", "remote", str(bad)])
        assert rc == 2 and await db.get(f"{key}:current") is None
        rc = await loop.run_in_executor(None, cli.main, ["--conf", str(conf), "prefix-push", "remote", str(good)])
        assert rc == 0
        tables = await load_all(s, db)
        assert tables["remote"].lookup("4471") is not None
        assert tables["local"].lookup("3312") is not None

    with_db(kv, body)


def test_cachedb_down_at_start_stops_after_the_wait(tmp_path: Path) -> None:
    """A cacheDB that never answers: ``load_all`` gives up with CacheError after its wait."""
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"

    async def main() -> None:
        s = settings_for(None, "k", tmp_path)
        db = open_cachedb(url, timeout_s=0.2)
        try:
            t0 = asyncio.get_running_loop().time()
            with pytest.raises(CacheError):
                await load_all(s, db, within_s=0.5)
            assert asyncio.get_running_loop().time() - t0 >= 0.5
        finally:
            await db.close()

    run(main)
