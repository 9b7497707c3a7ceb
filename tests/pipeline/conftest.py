"""Fixtures for the ZeroMQ hop: a context destroyed with linger 0 after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def opened() -> Iterator[list[zmq.Socket[bytes]]]:
    """Sockets a test opens; closed with linger 0 when it ends."""
    socks: list[zmq.Socket[bytes]] = []
    yield socks
    for s in socks:
        s.close(linger=0)
