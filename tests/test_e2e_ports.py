"""The e2e tests' ports (tests/e2e/node.py): from below the kernel's ephemeral range, in turn,
each pytest-xdist worker from a share of its own."""

from __future__ import annotations

import socket

import pytest

from tests.e2e import node


def test_ports_are_outside_the_ephemeral_range_distinct_and_free() -> None:
    """50 ports in a row: none from the range the kernel gives outgoing connections (where
    another process could take one before the node binds it), none handed out twice, each
    bindable for UDP and TCP when handed out."""
    ports = node._Ports()
    assert ports.slice is not None
    low = node._ephemeral_first()
    got = [ports.take(node.LOCALHOST, 1) for _ in range(50)]
    assert len(set(got)) == 50
    assert all(node.POOL_FIRST <= p < min(low, node.POOL_END) for p in got), got
    assert all(node._bindable(node.LOCALHOST, p) for p in got)


def test_each_xdist_worker_has_a_share_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """gw0..gw3 of 4 get disjoint shares of the pool, so parallel workers never collide."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    shares = []
    for i in range(4):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{i}")
        share = node._slice()
        assert share is not None and len(share) >= 250
        shares.append(set(share))
    assert set.union(*shares) <= set(range(node.POOL_FIRST, node.POOL_END))
    assert sum(map(len, shares)) == len(set.union(*shares))


def test_a_port_in_use_is_skipped() -> None:
    """A port something holds (here: UDP only) is passed over for the next free one."""
    ports = node._Ports()
    assert ports.slice is not None
    ports.next = 0
    first = ports.slice[0]
    for p in ports.slice:  # a port nobody holds now, with a free one after it
        if node._bindable(node.LOCALHOST, p) and node._bindable(node.LOCALHOST, p + 1):
            first = p
            break
    ports.next = ports.slice.index(first)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind((node.LOCALHOST, first))
        assert ports.take(node.LOCALHOST, 1) == first + 1


def test_a_run_is_handed_out_whole() -> None:
    """sipp binds its -mp port and the one 2 above: no later port falls inside the run."""
    ports = node._Ports()
    media = ports.take(node.LOCALHOST, 3)
    after = [ports.take(node.LOCALHOST, 1) for _ in range(10)]
    assert not set(after) & {media, media + 1, media + 2}
