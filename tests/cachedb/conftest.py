"""Fixtures: one real server per backend for the session, fresh ones for tests that stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cachedb.servers import RedisCluster, Server

BACKENDS = ["local", "redis", "redis-cluster", "memcached"]


def make(name: str) -> Server | RedisCluster:
    return RedisCluster() if name == "redis-cluster" else Server(name)


@pytest.fixture(scope="session")
def _shared() -> Iterator[dict[str, Server | RedisCluster]]:
    started: dict[str, Server | RedisCluster] = {}
    yield started
    for server in started.values():
        server.cleanup()


@pytest.fixture(params=BACKENDS)
def server(
    request: pytest.FixtureRequest, _shared: dict[str, Server | RedisCluster]
) -> Server | RedisCluster:
    """The session's running server of each backend (tests use keys of their own)."""
    name: str = request.param
    if name not in _shared:
        # shared only once ready: a start that failed (CI: "local not ready in 10.0 s") was
        # kept, and the worker's next tests got a stateplane still importing ("no stateplane")
        started = make(name)
        try:
            started.start()
        except BaseException:  # pytest.fail is a BaseException
            started.cleanup()
            raise
        _shared[name] = started
    return _shared[name]


@pytest.fixture
def own_server() -> Iterator[Callable[[str], Server | RedisCluster]]:
    """Start a server this test alone uses (and may stop, pause or restart)."""
    made: list[Server | RedisCluster] = []

    def start(name: str) -> Server | RedisCluster:
        s = make(name)
        made.append(s)
        s.start()
        return s

    yield start
    for s in made:
        s.cleanup()
