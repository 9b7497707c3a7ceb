"""Registrations shared by two nodes through one store (docs/cachedb.md "Redis Cluster"): a
phone registers through node A, a call to its AOR placed through node B reaches it, and an
unregister through B is seen by A. Once on a standalone redis-server, once on a three-master
Redis Cluster the test creates (tests/cachedb/servers.py). The nodes share nothing else:
separate run directories, names and ports, each its own ``[registrar]`` on the same URL.

Both nodes serve 127.0.0.1 and an AOR keeps its explicit port (RFC 3261 §10.3 step 5), so the
calls through B are written to A's address (sipp's ``[remote_port]``) and sent to B with
``-rsa``: the same AOR, another node, as behind one domain name."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cachedb.servers import RedisCluster, Server
from workers.cachedb import open_cachedb

from .conftest import StartNode
from .node import LOCALHOST, free_port, sipp_uac
from .test_stateful import REGISTRAR, Uas, drained

pytestmark = pytest.mark.e2e


@pytest.fixture
def sink() -> Iterator[tuple[int, socket.socket]]:
    """The default route: a UDP port that takes requests and never answers."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, port))
        s.setblocking(False)
        yield port, s


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Server]:
    s = Server("redis")
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    c = RedisCluster()
    c.start()
    yield c
    c.cleanup()


def stored(url: str, key: str) -> bytes | None:
    async def read() -> bytes | None:
        db = open_cachedb(url, timeout_s=5.0)
        try:
            return await db.get(key)
        finally:
            await db.close()

    return asyncio.run(read())


@pytest.mark.parametrize("store", ["redis_server", "redis_cluster"])
def test_register_on_a_call_through_b(request: pytest.FixtureRequest, store: str,
                                      start_node: StartNode, uas: Uas,
                                      sink: tuple[int, socket.socket],
                                      tmp_path: Path) -> None:  # fmt: skip
    """REGISTER through A; 5 calls to the AOR through B reach the phone (none the default
    route); an unregister through B makes calls through A get 480."""
    url = request.getfixturevalue(store).url
    dead, sock = sink
    conf = REGISTRAR + f'cachedb_url = "{url}"\n'
    a = start_node(dead, "worker=1", conf, name="node-a")
    b = start_node(dead, "worker=1", conf, name="node-b")
    via_b = ("-rsa", f"{LOCALHOST}:{b.port}")
    phone = free_port()
    reg = sipp_uac(a.port, "u1", 1, 1, tmp_path, scenario="register", local_port=phone)
    assert (reg.successful, reg.failed) == (1, 0), reg.output
    # the record is in the store itself, not in A's own stateplane
    assert stored(url, f"loc:sip:user1@{LOCALHOST}:{a.port}"), "REGISTER did not reach the store"

    uas_port, _ = uas("u1", "uas_rr", (), phone)
    assert uas_port == phone
    res = sipp_uac(a.port, "u1", 5, 5, tmp_path, scenario="uac_rr", service="user1",
                   extra=via_b)  # fmt: skip
    assert (res.successful, res.failed) == (5, 0), res.output
    assert not drained(sock), "a call to the AOR went to the default route"

    unreg = sipp_uac(a.port, "u1", 1, 1, tmp_path, scenario="unregister", extra=via_b)
    assert (unreg.successful, unreg.failed) == (1, 0), unreg.output
    gone = sipp_uac(a.port, "u1", 3, 3, tmp_path, scenario="uac_unavailable", service="user1")
    assert (gone.successful, gone.failed) == (3, 0), gone.output
    assert not drained(sock)
