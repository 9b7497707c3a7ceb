"""Destinations by host name end to end: a real nameserver on loopback, RFC 3263 in the worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.workers.test_dns_resolver import ZoneServer

from .conftest import StartNode
from .node import LOCALHOST, Proc, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]


@pytest.fixture
def nameserver() -> Iterator[Callable[[dict[tuple[str, str], list[str]]], tuple[int, ZoneServer]]]:
    """``nameserver(zone)`` serves ``zone`` on a loopback UDP port from its own thread."""
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread, asyncio.BaseTransport]] = []

    def start(zone: dict[tuple[str, str], list[str]]) -> tuple[int, ZoneServer]:
        loop = asyncio.new_event_loop()
        transport, server = loop.run_until_complete(loop.create_datagram_endpoint(
            lambda: ZoneServer(zone), local_addr=(LOCALHOST, 0)))  # fmt: skip
        t = threading.Thread(target=loop.run_forever, daemon=True)
        t.start()
        loops.append((loop, t, transport))
        return int(transport.get_extra_info("sockname")[1]), server

    yield start
    for loop, t, transport in loops:
        asyncio.run_coroutine_threadsafe(_close(transport), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
        loop.close()


async def _close(transport: asyncio.BaseTransport) -> None:
    transport.close()
    await asyncio.sleep(0)  # connection_lost runs on the next turn and releases the socket


def test_calls_to_a_destination_found_by_srv(start_node: StartNode, uas: Uas, tmp_path: Path,
                                             nameserver: Callable[..., tuple[int, ZoneServer]],
                                             ) -> None:  # fmt: skip
    """The destination set names ``uas.example.test``: its SRV record gives the port and its A
    record the address, and calls complete; the answer is cached (few queries for 50 calls)."""
    port, _ = uas("u1", "uas_rr")
    ns_port, server = nameserver({
        ("_sip._udp.uas.example.test", "SRV"): [f"10 10 {port} host.example.test."],
        ("host.example.test", "A"): ["127.0.0.1"],
    })  # fmt: skip
    node = start_node(["sip:uas.example.test"], "worker=1", f'\n[proxy]\nmode = "stateful"\n'
                      f'\n[dns]\nnameservers = ["127.0.0.1:{ns_port}"]\n')  # fmt: skip
    res = sipp_uac(node.port, "u1", 50, 25, tmp_path, scenario="uac_rr")
    assert (res.successful, res.failed) == (50, 0), res.output
    assert server.count("SRV") <= 2 and server.count("A") <= 2, server.queries


def test_naptr_picks_the_transport_when_switched_on(
        start_node: StartNode, uas: Uas, tmp_path: Path,
        nameserver: Callable[..., tuple[int, ZoneServer]]) -> None:  # fmt: skip
    """``[dns] naptr = true``: the destination's NAPTR record (RFC 3263 §4.1) names the UDP
    SRV record, whose port is the UAS's; calls complete, and NAPTR was asked (not the SRV of
    the TCP transport that NAPTR did not name)."""
    port, _ = uas("u1", "uas_rr")
    ns_port, server = nameserver({
        ("uas.example.test", "NAPTR"): ['10 10 "s" "SIP+D2U" "" _sip._udp.pool.example.test.'],
        ("_sip._udp.pool.example.test", "SRV"): [f"10 10 {port} host.example.test."],
        ("host.example.test", "A"): ["127.0.0.1"],
    })  # fmt: skip
    node = start_node(["sip:uas.example.test"], "worker=1", f'\n[proxy]\nmode = "stateful"\n'
                      f'\n[dns]\nnameservers = ["127.0.0.1:{ns_port}"]\nnaptr = true\n')  # fmt: skip
    res = sipp_uac(node.port, "u1", 20, 20, tmp_path, scenario="uac_rr")
    assert (res.successful, res.failed) == (20, 0), res.output
    assert server.count("NAPTR") >= 1, server.queries
    assert server.queries.get(("_sip._tcp.uas.example.test", "SRV"), 0) == 0, server.queries


def test_unresolvable_destination_gets_478(start_node: StartNode, tmp_path: Path,
                                          nameserver: Callable[..., tuple[int, ZoneServer]],
                                          ) -> None:  # fmt: skip
    """A destination whose name does not exist: the caller gets 478, once per call."""
    ns_port, _ = nameserver({("other.example.test", "A"): ["127.0.0.1"]})
    node = start_node(["sip:nx.example.test"], "worker=1", f'\n[proxy]\nmode = "stateful"\n'
                      f'\n[dns]\nnameservers = ["127.0.0.1:{ns_port}"]\n')  # fmt: skip
    res = sipp_uac(node.port, "u1", 3, 3, tmp_path, scenario="uac_unresolvable")
    assert (res.successful, res.failed) == (3, 0), res.output
    assert any(e["reason"] == "no_address" for e in node.proc.events("dns_failed"))
