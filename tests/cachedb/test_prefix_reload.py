"""A reload reads the cacheDB prefix tables again (workers/routing/reload.py rule 1,
workers/routing/prefix_route.py ``read_all``), on real servers: a pushed table is taken, a
key space whose chunks do not verify refuses the reload naming the key, a cacheDB that does
not answer refuses it within ``CACHEDB_RELOAD_S``."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import time
from pathlib import Path

import pytest

from conf.load import load
from conf.settings import Settings
from tests.cachedb.conftest import make
from tests.cachedb.helpers import CALL_S
from tests.cachedb.servers import RedisCluster, Server
from workers.routing import prefix_cachedb
from workers.routing.dispatcher import Dispatcher
from workers.routing.prefix_route import read_all
from workers.routing.reload import CACHEDB_RELOAD_S, ReloadRefused, Routing, initial, prepare
from workers.routing.table import RoutingTable

GROUPS = ["a", "b"]
_n = itertools.count()


@pytest.fixture(params=["local", "redis", "memcached"])
def kv(request: pytest.FixtureRequest,
       _shared: dict[str, Server | RedisCluster]) -> Server | RedisCluster:  # fmt: skip
    name: str = request.param
    if name not in _shared:
        _shared[name] = make(name)
        _shared[name].start()
    return _shared[name]


def write_conf(tmp_path: Path, url: str, key: str) -> Path:
    path = tmp_path / "sipline.toml"
    path.write_text(f"""
[node]
run_dir = "{tmp_path / "run"}"
[registrar]
cachedb_url = "{url}"
[[destination_set]]
name = "a"
destinations = ["sip:127.0.0.1:5080"]
[[destination_set]]
name = "b"
destinations = ["sip:127.0.0.1:5081"]
[[prefix_table]]
name = "carriers"
cachedb_key = "{key}"
[[route]]
name = "r"
prefix_table = "carriers"
""")
    return path


def push(url: str, key: str, data: bytes) -> None:
    from workers.cachedb import open_cachedb

    async def main() -> None:
        db = open_cachedb(url, timeout_s=CALL_S)
        try:
            await prefix_cachedb.push(db, key, data, GROUPS, 1000)
        finally:
            await db.close()

    asyncio.run(main())


def poke(url: str, key: str, suffix: str, value: bytes) -> None:
    """Write one raw key of the table's key space (a damaged or forged chunk)."""
    from workers.cachedb import open_cachedb

    async def main() -> None:
        db = open_cachedb(url, timeout_s=CALL_S)
        try:
            current = await db.get(f"{key}:current")
            assert current is not None
            await db.set(f"{key}:{current.split()[0].decode()}:{suffix}", value)
        finally:
            await db.close()

    asyncio.run(main())


def new_dispatcher(s: Settings) -> Dispatcher:
    return Dispatcher(s.destination_set, s.listen, instance="t")


def started(path: Path) -> Routing:
    s = load(path)
    seen: dict[str, str] = {}
    return initial(s, RoutingTable(s, new_dispatcher(s), read_all(s, CACHEDB_RELOAD_S, seen)))


def group(r: Routing, user: str) -> str | None:
    rs = r.table.prefixes["carriers"].lookup(user)
    return None if rs is None else rs.order(0)[0]


def test_a_pushed_table_is_taken_by_the_next_reload(kv: Server, tmp_path: Path) -> None:
    """push v1, start; push v2: the current routing still has v1 (nothing re-read until a
    reload), the prepared one has v2 and another digest; preparing again with nothing
    pushed gives the same digest (every worker that reads the same version agrees)."""
    key = f"reload-{os.getpid()}-{next(_n)}"
    path = write_conf(tmp_path, kv.url, key)
    push(kv.url, key, b"+44,a\n")
    current = started(path)
    assert group(current, "+4420") == "a"
    push(kv.url, key, b"+44,b\n+33,a\n")
    new = prepare(str(path), current, True, new_dispatcher)
    assert group(new, "+4420") == "b" and group(new, "+3312") == "a"
    assert group(current, "+4420") == "a"  # the current routing is untouched
    again = prepare(str(path), current, True, new_dispatcher)
    assert again.digest == new.digest
    push(kv.url, key, b"+44,a\n")
    assert prepare(str(path), current, True, new_dispatcher).digest != new.digest


def test_chunks_that_do_not_verify_refuse_the_reload_naming_the_key(kv: Server,
                                                                    tmp_path: Path) -> None:  # fmt: skip
    key = f"reload-{os.getpid()}-{next(_n)}"
    path = write_conf(tmp_path, kv.url, key)
    push(kv.url, key, b"+44,a\n")
    current = started(path)
    poke(kv.url, key, "0", b"+44,b\n")  # same length, another digest than current names
    with pytest.raises(ReloadRefused, match=re.escape(f"cachedb:{key}") + ".*chunks"):
        prepare(str(path), current, True, new_dispatcher)
    assert group(current, "+4420") == "a"


def test_a_bad_line_pushed_behind_the_checks_is_refused(kv: Server, tmp_path: Path) -> None:
    """A key space written by something else than prefix-push (its digest right, a line
    bad): the text goes through the file checks, and the message names the key."""
    key = f"reload-{os.getpid()}-{next(_n)}"
    path = write_conf(tmp_path, kv.url, key)
    push(kv.url, key, b"+44,a\n")
    current = started(path)
    import hashlib

    from workers.cachedb import open_cachedb

    async def forge() -> None:
        db = open_cachedb(kv.url, timeout_s=CALL_S)
        try:
            data = b"+44,zz\n"
            await db.set(f"{key}:7:0", data)
            await db.set(f"{key}:current", f"7 1 {hashlib.sha256(data).hexdigest()}".encode())
        finally:
            await db.close()

    asyncio.run(forge())
    with pytest.raises(ReloadRefused, match=re.escape(f"cachedb:{key}")):
        prepare(str(path), current, True, new_dispatcher)


def test_a_cachedb_that_does_not_answer_refuses_the_reload_in_bounded_time(
        kv: Server, tmp_path: Path) -> None:  # fmt: skip
    key = f"reload-{os.getpid()}-{next(_n)}"
    path = write_conf(tmp_path, kv.url, key)
    push(kv.url, key, b"+44,a\n")
    current = started(path)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"{kv.url.split('://')[0]}://127.0.0.1:{sock.getsockname()[1]}"
    path.write_text(path.read_text().replace(kv.url, dead))
    # the cacheDB URL is not reloadable: point the current settings at it too, so that the
    # only thing refused is the read
    current_dead = started_like(current, dead)
    t0 = time.monotonic()
    with pytest.raises(ReloadRefused, match="prefix table cacheDB"):
        prepare(str(path), current_dead, True, new_dispatcher)
    took = time.monotonic() - t0
    assert CACHEDB_RELOAD_S * 0.9 <= took < CACHEDB_RELOAD_S + 10, took


def started_like(current: Routing, url: str) -> Routing:
    import dataclasses

    s = current.settings
    s2 = dataclasses.replace(s, registrar=dataclasses.replace(s.registrar, cachedb_url=url))
    return dataclasses.replace(current, settings=s2)
