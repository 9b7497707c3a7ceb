"""Fixtures for the ZeroMQ hop (the context, `ctx`, is tests/conftest.py's): sockets a test
opens, closed with linger 0 after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq


@pytest.fixture
def opened() -> Iterator[list[zmq.Socket[bytes]]]:
    """Sockets a test opens; closed with linger 0 when it ends."""
    socks: list[zmq.Socket[bytes]] = []
    yield socks
    for s in socks:
        s.close(linger=0)
