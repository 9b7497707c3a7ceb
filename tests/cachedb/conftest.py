"""Fixtures: one real server per backend for the session, fresh ones for tests that stop them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.cachedb.servers import Server

BACKENDS = ["local", "redis", "memcached"]


@pytest.fixture(scope="session")
def _shared() -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    yield started
    for server in started.values():
        server.cleanup()


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest, _shared: dict[str, Server]) -> Server:
    """The session's running server of each backend (tests use keys of their own)."""
    name: str = request.param
    if name not in _shared:
        _shared[name] = Server(name)
        _shared[name].start()
    return _shared[name]


@pytest.fixture
def own_server() -> Iterator[Callable[[str], Server]]:
    """Start a server this test alone uses (and may stop, pause or restart)."""
    made: list[Server] = []

    def start(name: str) -> Server:
        s = Server(name)
        made.append(s)
        s.start()
        return s

    yield start
    for s in made:
        s.cleanup()
