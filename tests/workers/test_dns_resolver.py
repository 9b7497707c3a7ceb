"""The resolver against a real authoritative DNS server on loopback (UDP, free port).

``ZoneServer`` answers from a zone dict the test controls, counts every query it gets, and
can drop queries or answer late. Cache time is a ``Clock`` the test moves by hand.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from structlog.testing import capture_logs

from ingress.sip.grammar import parse_uri
from tests.aio import run
from workers.dns import DnsError, Resolver, ResolverConfig, Target

ORIGIN = "example.test"
SOA = f"ns.{ORIGIN}. admin.{ORIGIN}. 1 3600 600 86400 {{minimum}}"

Zone = dict[tuple[str, str], list[str]]


class Clock:
    """The cache's time, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ZoneServer(asyncio.DatagramProtocol):
    """A tiny authoritative server: answers from ``zone``, counts queries per (name, type).

    ``zone`` maps (name, type) to rdata texts; a name present under any type gets NODATA
    for the others, an absent name NXDOMAIN; both carry the SOA (TTL ``soa_ttl``, MINIMUM
    ``soa_minimum``). ``ttls`` overrides the default TTL of 300 per (name, type). With
    ``hold`` set, answers wait in ``held`` until ``release()``: a query kept in flight for as
    long as the test needs, whatever the box's load.
    """

    def __init__(self, zone: Zone, *, soa_ttl: int = 3600, soa_minimum: int = 30) -> None:
        self.zone = zone
        self.ttls: dict[tuple[str, str], int] = {}
        self.soa_ttl = soa_ttl
        self.soa_minimum = soa_minimum
        self.queries: collections.Counter[tuple[str, str]] = collections.Counter()
        self.drop = False
        self.servfail: set[tuple[str, str]] = set()
        self.delay_s = 0.0
        self.hold = False
        self.held: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        key = (question.name.to_text(True).lower(), dns.rdatatype.to_text(question.rdtype))
        self.queries[key] += 1
        if self.drop:
            return
        wire = self._answer(query, key).to_wire()
        assert self.transport is not None
        if self.hold:
            self.held.append((wire, addr))
        elif self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self._send, wire, addr)
        else:
            self.transport.sendto(wire, addr)

    def release(self) -> None:
        """Send the held answers, and answer at once from now on."""
        self.hold = False
        held, self.held = self.held, []
        for wire, addr in held:
            self._send(wire, addr)

    def _send(self, wire: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(wire, addr)

    def _answer(self, query: dns.message.Message, key: tuple[str, str]) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if key in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        name, rdtype = key
        while (name, "CNAME") in self.zone and rdtype != "CNAME":  # follow the chain
            self._add(response, name, "CNAME")
            name = self.zone[(name, "CNAME")][0].rstrip(".")
        if self.zone.get((name, rdtype)):
            self._add(response, name, rdtype)
            return response
        if not any(name == key[0] for name, _ in self.zone):
            response.set_rcode(dns.rcode.NXDOMAIN)
        soa = SOA.format(minimum=self.soa_minimum)
        response.authority.append(dns.rrset.from_text(ORIGIN + ".", self.soa_ttl, "IN", "SOA", soa))
        return response

    def _add(self, response: dns.message.Message, name: str, rdtype: str) -> None:
        ttl = self.ttls.get((name, rdtype), 300)
        rrset = dns.rrset.from_text_list(name + ".", ttl, "IN", rdtype, self.zone[(name, rdtype)])
        response.answer.append(rrset)

    def count(self, rdtype: str | None = None) -> int:
        return sum(n for (_, t), n in self.queries.items() if rdtype is None or t == rdtype)


@asynccontextmanager
async def serving(zone: Zone, **kw: Any) -> AsyncIterator[ZoneServer]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: ZoneServer(zone, **kw), local_addr=("127.0.0.1", 0)
    )
    try:
        yield server
    finally:
        transport.close()


def port_of(server: ZoneServer) -> int:
    assert server.transport is not None
    return int(server.transport.get_extra_info("sockname")[1])


def resolver_for(server: ZoneServer, clock: Clock | None = None, **kw: Any) -> Resolver:
    """A resolver asking ``server`` only. Its bounds are generous unless the test sets them:
    on a loaded box a resolve of 1 s (50 callers at once: 1.06 s at load 15) timed out, and
    an answer later than the 0.5 s attempt timeout is asked again, doubling the query count
    a test asserts; a test about timeouts passes its own."""
    port = port_of(server)
    kw.setdefault("timeout_s", 30.0)
    kw.setdefault("attempt_timeout_s", 30.0)
    cfg = ResolverConfig(nameservers=("127.0.0.1",), port=port, **kw)
    return Resolver(cfg, timer=clock or Clock(), rng=random.Random(7))


def srv(priority: int, weight: int, port: int, target: str) -> str:
    return f"{priority} {weight} {port} {target}."


def host(name: str) -> str:
    return f"{name}.{ORIGIN}"


#: a domain with UDP and TCP SRV records and the hosts they name
SRV_ZONE: Zone = {
    ("_sip._udp." + ORIGIN, "SRV"): [
        srv(20, 0, 5072, host("backup")),
        srv(10, 0, 5070, host("primary")),
    ],
    ("_sip._tcp." + ORIGIN, "SRV"): [srv(10, 0, 5080, host("primary"))],
    (host("primary"), "A"): ["127.0.0.10"],
    (host("primary"), "AAAA"): ["::10"],
    (host("backup"), "A"): ["127.0.0.20"],
    (ORIGIN, "A"): ["127.0.0.99"],
}


class TestSrv:
    def test_priority_order_then_transports(self) -> None:
        """SRV targets come by priority, UDP before TCP, each with its A then AAAA."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                found = await resolver_for(server).resolve(parse_uri(f"sip:{ORIGIN}"))
                assert found == [
                    Target("udp", "127.0.0.10", 5070),
                    Target("udp", "::10", 5070),
                    Target("udp", "127.0.0.20", 5072),
                    Target("tcp", "127.0.0.10", 5080),
                    Target("tcp", "::10", 5080),
                ]

        run(body)

    def test_transport_param_asks_only_that_srv(self) -> None:
        """transport=tcp asks _sip._tcp only (§4.2) and never the UDP service."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                uri = parse_uri(f"sip:{ORIGIN};transport=tcp")
                found = await resolver_for(server).resolve(uri)
                assert found == [Target("tcp", "127.0.0.10", 5080), Target("tcp", "::10", 5080)]
                assert server.queries[("_sip._udp." + ORIGIN, "SRV")] == 0

        run(body)

    def test_sips_asks_sips_tcp(self) -> None:
        """A SIPS URI asks _sips._tcp only and gets TLS targets."""
        zone: Zone = {
            ("_sips._tcp." + ORIGIN, "SRV"): [srv(0, 0, 5071, host("tls"))],
            (host("tls"), "A"): ["127.0.0.30"],
        }

        async def body() -> None:
            async with serving(zone) as server:
                r = resolver_for(server, transports=("udp", "tcp", "tls"))
                found = await r.resolve(parse_uri(f"sips:{ORIGIN}"))
                assert found == [Target("tls", "127.0.0.30", 5071)]
                assert {name for name, t in server.queries if t == "SRV"} == {
                    "_sips._tcp." + ORIGIN
                }

        run(body)

    def test_weights_spread_first_choice(self) -> None:
        """Within a priority, the first target is drawn in proportion to weight (RFC 2782)."""
        weights = {"a": 60, "b": 30, "c": 10}
        zone: Zone = {("_sip._udp." + ORIGIN, "SRV"): []}
        for i, (name, w) in enumerate(weights.items()):
            zone[("_sip._udp." + ORIGIN, "SRV")].append(srv(1, w, 6000 + i, host(name)))
            zone[(host(name), "A")] = [f"127.0.1.{i}"]

        async def body() -> None:
            async with serving(zone) as server:
                r = resolver_for(server, transports=("udp",), address_types=("A",))
                firsts: collections.Counter[int] = collections.Counter()
                draws = 3000
                for _ in range(draws):  # cached after the first: only the order is drawn
                    firsts[(await r.resolve_host(ORIGIN))[0].port] += 1
                assert server.count() == 4
                for i, w in enumerate(weights.values()):
                    assert abs(firsts[6000 + i] / draws - w / 100) < 0.04

        run(body)

    def test_srv_dot_target_means_no_service(self) -> None:
        """An SRV answer of "." means no SIP here: no A fallback (RFC 2782)."""
        zone: Zone = {
            ("_sip._udp." + ORIGIN, "SRV"): ["0 0 0 ."],
            (ORIGIN, "A"): ["127.0.0.99"],
        }

        async def body() -> None:
            async with serving(zone) as server:
                r = resolver_for(server, transports=("udp",))
                with pytest.raises(DnsError) as info:
                    await r.resolve_host(ORIGIN)
                assert info.value.reason == "no_address"
                assert server.queries[(ORIGIN, "A")] == 0

        run(body)

    def test_target_without_address_is_skipped(self) -> None:
        """An SRV target with no A/AAAA is left out; the others still resolve."""
        zone: Zone = {
            ("_sip._udp." + ORIGIN, "SRV"): [
                srv(1, 0, 5070, host("gone")),
                srv(2, 0, 5071, host("here")),
            ],
            (host("here"), "A"): ["127.0.0.40"],
        }

        async def body() -> None:
            async with serving(zone) as server:
                r = resolver_for(server, transports=("udp",))
                assert await r.resolve_host(ORIGIN) == [Target("udp", "127.0.0.40", 5071)]

        run(body)


NAPTR_ZONE: Zone = {
    (ORIGIN, "NAPTR"): [
        f'20 10 "s" "SIP+D2U" "" _sip._udp.{ORIGIN}.',
        f'10 10 "s" "SIP+D2T" "" _sip._tcp.{ORIGIN}.',
        f'5 10 "s" "SIP+D2X" "" _sip._x.{ORIGIN}.',
    ],
    **SRV_ZONE,
}


class TestNaptr:
    def test_naptr_order_picks_services(self) -> None:
        """With NAPTR on, services come in NAPTR order and unknown ones are skipped."""

        async def body() -> None:
            async with serving(NAPTR_ZONE) as server:
                r = resolver_for(server, naptr=True, address_types=("A",))
                found = await r.resolve_host(ORIGIN)
                assert found[0] == Target("tcp", "127.0.0.10", 5080)
                assert found[1:] == [
                    Target("udp", "127.0.0.10", 5070),
                    Target("udp", "127.0.0.20", 5072),
                ]
                assert server.queries[("_sip._x." + ORIGIN, "SRV")] == 0

        run(body)

    def test_no_naptr_falls_back_to_srv(self) -> None:
        """With NAPTR on but no NAPTR records, SRV is asked as without NAPTR."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                r = resolver_for(server, naptr=True, address_types=("A",))
                found = await r.resolve_host(ORIGIN)
                assert found[0] == Target("udp", "127.0.0.10", 5070)
                assert server.queries[(ORIGIN, "NAPTR")] == 1

        run(body)


class TestAddresses:
    def test_no_srv_falls_back_to_a_and_aaaa(self) -> None:
        """Without SRV records, A then AAAA of the host at the default port 5060 over UDP."""
        zone: Zone = {(ORIGIN, "A"): ["127.0.0.1", "127.0.0.2"], (ORIGIN, "AAAA"): ["::1"]}

        async def body() -> None:
            async with serving(zone) as server:
                found = await resolver_for(server).resolve(parse_uri(f"sip:bob@{ORIGIN}"))
                # the records of one RRset have no order (RFC 2181 §5); A comes before AAAA
                assert set(found[:2]) == {
                    Target("udp", "127.0.0.1", 5060),
                    Target("udp", "127.0.0.2", 5060),
                }
                assert found[2] == Target("udp", "::1", 5060)

        run(body)

    def test_sips_fallback_uses_5061(self) -> None:
        """A SIPS URI without SRV gets TLS at 5061."""
        zone: Zone = {(ORIGIN, "A"): ["127.0.0.1"]}

        async def body() -> None:
            async with serving(zone) as server:
                r = resolver_for(server, transports=("udp", "tcp", "tls"))
                found = await r.resolve(parse_uri(f"sips:{ORIGIN}"))
                assert found == [Target("tls", "127.0.0.1", 5061)]

        run(body)

    def test_explicit_port_skips_srv(self) -> None:
        """A port in the URI means A/AAAA only: no SRV (nor NAPTR) query at all."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                r = resolver_for(server, naptr=True)
                found = await r.resolve(parse_uri(f"sip:{ORIGIN}:5090;transport=TCP"))
                assert found == [Target("tcp", "127.0.0.99", 5090)]
                assert server.count("SRV") == server.count("NAPTR") == 0

        run(body)

    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("sip:10.1.2.3", Target("udp", "10.1.2.3", 5060)),
            ("sip:10.1.2.3:5070;transport=tcp", Target("tcp", "10.1.2.3", 5070)),
            ("sip:[2001:db8::1]", Target("udp", "2001:db8::1", 5060)),
            ("sips:[2001:db8::1]:5081", Target("tls", "2001:db8::1", 5081)),
        ],
        ids=["v4", "v4-port-tcp", "v6", "v6-sips"],
    )
    def test_numeric_ip_skips_dns(self, uri: str, expected: Target) -> None:
        """A numeric host is the target itself; the DNS server hears nothing."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                r = resolver_for(server, transports=("udp", "tcp", "tls"))
                assert await r.resolve(parse_uri(uri)) == [expected]
                assert server.count() == 0

        run(body)

    def test_unsupported_transport(self) -> None:
        """A transport the caller cannot send on fails before any query."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                r = resolver_for(server)
                for uri in (f"sips:{ORIGIN}", f"sip:{ORIGIN};transport=sctp"):
                    with pytest.raises(DnsError) as info:
                        await r.resolve(parse_uri(uri))
                    assert info.value.reason == "unsupported_transport"
                assert server.count() == 0

        run(body)


class TestCaching:
    def test_positive_ttl_honoured(self) -> None:
        """An answer is reused until its TTL runs out, then asked again."""
        zone: Zone = {(ORIGIN, "A"): ["127.0.0.1"]}

        async def body() -> None:
            async with serving(zone) as server:
                server.ttls[(ORIGIN, "A")] = 30
                clock = Clock()
                r = resolver_for(server, clock, address_types=("A",))
                for _ in range(3):
                    await r.resolve_host(ORIGIN, 5070)
                clock.now += 29.9
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "A")] == 1
                clock.now += 0.2
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "A")] == 2

        run(body)

    def test_ttl_clamped(self) -> None:
        """A TTL above max_ttl_s is cut to it."""
        zone: Zone = {(ORIGIN, "A"): ["127.0.0.1"]}

        async def body() -> None:
            async with serving(zone) as server:
                server.ttls[(ORIGIN, "A")] = 86400
                clock = Clock()
                r = resolver_for(server, clock, address_types=("A",), max_ttl_s=60)
                await r.resolve_host(ORIGIN, 5070)
                clock.now += 61
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "A")] == 2

        run(body)

    def test_cname_chain_uses_smallest_ttl(self) -> None:
        """An answer through a CNAME lives as long as the shortest TTL along the chain."""
        zone: Zone = {
            (host("alias"), "CNAME"): [host("real") + "."],
            (host("real"), "A"): ["127.0.0.7"],
        }

        async def body() -> None:
            async with serving(zone) as server:
                server.ttls[(host("alias"), "CNAME")] = 10
                clock = Clock()
                r = resolver_for(server, clock, address_types=("A",))
                assert await r.resolve_host(host("alias"), 5070) == [
                    Target("udp", "127.0.0.7", 5070)
                ]
                clock.now += 9
                await r.resolve_host(host("alias"), 5070)
                assert server.queries[(host("alias"), "A")] == 1
                clock.now += 2
                await r.resolve_host(host("alias"), 5070)
                assert server.queries[(host("alias"), "A")] == 2

        run(body)

    def test_nxdomain_cached_by_soa_minimum(self) -> None:
        """NXDOMAIN is kept for min(SOA TTL, MINIMUM) (RFC 2308), then asked again."""

        async def body() -> None:
            async with serving({}, soa_minimum=20) as server:
                clock = Clock()
                r = resolver_for(server, clock, address_types=("A",), transports=("udp",))
                name = host("nowhere")
                for step in (0.0, 19.0):
                    clock.now += step
                    with pytest.raises(DnsError) as info:
                        await r.resolve_host(name)
                    assert info.value.reason == "no_address"
                assert server.queries == {("_sip._udp." + name, "SRV"): 1, (name, "A"): 1}
                clock.now += 1.5
                with pytest.raises(DnsError):
                    await r.resolve_host(name)
                assert server.queries[(name, "A")] == 2

        run(body)

    def test_nodata_cached_and_capped(self) -> None:
        """NODATA (AAAA missing) is cached; negative_ttl_s caps a long SOA MINIMUM."""
        zone: Zone = {(ORIGIN, "A"): ["127.0.0.1"]}

        async def body() -> None:
            async with serving(zone, soa_minimum=86400) as server:
                clock = Clock()
                r = resolver_for(server, clock, negative_ttl_s=60)
                await r.resolve_host(ORIGIN, 5070)
                clock.now += 59
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "AAAA")] == 1
                clock.now += 2
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "AAAA")] == 2

        run(body)

    def test_concurrent_lookups_coalesce(self) -> None:
        """N concurrent resolutions of one name send one query per (name, type)."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.delay_s = 0.05  # keep the first query in flight while the rest arrive
                r = resolver_for(server)
                uri = parse_uri(f"sip:{ORIGIN}")
                results = await asyncio.gather(*(r.resolve(uri) for _ in range(50)))
                assert all(res == results[0] for res in results)
                assert server.queries and set(server.queries.values()) == {1}
                assert r.queries_sent == len(server.queries)

        run(body, timeout_s=60)  # 50 callers' CPU: 0.15 s idle, over 1 s at load 15

    def test_cancelled_caller_leaves_query_for_others(self) -> None:
        """A caller that gives up does not cancel the shared query; the answer is cached."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.hold = True
                r = resolver_for(server, address_types=("A",))
                quitter = asyncio.create_task(r.resolve_host(ORIGIN, 5070))
                stayer = asyncio.create_task(r.resolve_host(ORIGIN, 5070))
                while not server.held:  # polling step, bounded by run()
                    await asyncio.sleep(0.005)
                quitter.cancel()
                await asyncio.wait([quitter])
                server.release()
                assert await stayer == [Target("udp", "127.0.0.99", 5070)]
                assert quitter.cancelled()
                await r.resolve_host(ORIGIN, 5070)
                assert server.queries[(ORIGIN, "A")] == 1

        run(body)

    def test_loop_keeps_running_while_waiting(self) -> None:
        """While a slow answer is awaited, other work on the loop goes on."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.hold = True
                r = resolver_for(server, address_types=("A",))
                lookup = asyncio.create_task(r.resolve_host(ORIGIN, 5070))
                # this coroutine and the server (on the same loop) run while the lookup
                # waits; a resolver that blocked the loop would never let the query in
                while not server.held:  # polling step, bounded by run()
                    await asyncio.sleep(0.005)
                assert not lookup.done()
                server.release()
                assert await lookup == [Target("udp", "127.0.0.99", 5070)]

        run(body)


class TestFailures:
    def test_next_nameserver_after_attempt_timeout(self) -> None:
        """A silent first nameserver costs attempt_timeout_s; the second one answers."""

        async def body() -> None:
            async with serving(SRV_ZONE) as silent, serving(SRV_ZONE) as good:
                silent.drop = True
                ports = [port_of(s) for s in (silent, good)]
                cfg = ResolverConfig(
                    nameservers=tuple(f"127.0.0.1:{p}" for p in ports),
                    timeout_s=4.0,
                    attempt_timeout_s=0.1,
                    address_types=("A",),
                )
                r = Resolver(cfg, timer=Clock())
                start = time.monotonic()
                assert await r.resolve_host(ORIGIN, 5070) == [Target("udp", "127.0.0.99", 5070)]
                # far from the whole timeout_s the first server would cost without attempts
                # (20x attempt_timeout_s: a busy box stays well inside it)
                assert time.monotonic() - start < 2.0
                assert silent.count() == good.count() == 1

        run(body)

    @pytest.mark.parametrize(
        "text", ["example.test", "127.0.0.1:0", "127.0.0.1:x", "[::1", "127.0.0.1:", ""]
    )
    def test_bad_nameserver_refused(self, text: str) -> None:
        """A nameserver that is not ip[:port] is a configuration error at construction."""
        with pytest.raises(ValueError, match="nameserver"):
            Resolver(ResolverConfig(nameservers=(text,)))

    def test_nameserver_forms(self) -> None:
        """ip, ip:port and [v6]:port are accepted."""
        Resolver(ResolverConfig(nameservers=("127.0.0.1", "127.0.0.1:5353", "[::1]:53", "::1")))

    def test_silent_server_times_out(self) -> None:
        """A server that drops queries gives DnsError("timeout") within timeout_s."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.drop = True
                # attempts of 10 s: only timeout_s can end the wait within the bound below
                r = resolver_for(server, timeout_s=0.3, attempt_timeout_s=10.0)
                start = time.monotonic()
                with pytest.raises(DnsError) as info:
                    await r.resolve_host(ORIGIN)
                assert info.value.reason == "timeout"
                assert time.monotonic() - start < 3.0  # generous: 10x timeout_s
                assert server.count() >= 1

        run(body)

    def test_failure_cached_briefly(self) -> None:
        """After a timeout, the same name fails from the cache until failure_ttl_s passes."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.drop = True
                clock = Clock()
                # 2 s: the last resolve must answer within it; 0.2 s failed 8 of 25 at load 24
                r = resolver_for(server, clock, timeout_s=2.0, failure_ttl_s=5)
                with pytest.raises(DnsError):
                    await r.resolve_host(ORIGIN, 5070)
                while r._inflight:  # the shared query ends at its own lifetime
                    await asyncio.sleep(0.01)
                server.drop = False
                sent = server.count()
                with pytest.raises(DnsError) as info:
                    await r.resolve_host(ORIGIN, 5070)
                assert info.value.reason == "timeout"
                assert server.count() == sent
                clock.now += 5.1
                assert await r.resolve_host(ORIGIN, 5070) == [Target("udp", "127.0.0.99", 5070)]

        run(body, timeout_s=30)  # two timeouts of 2 s, then the answer

    def test_aaaa_failure_keeps_a(self) -> None:
        """A host whose AAAA query fails still resolves by its A records."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.servfail.add((host("primary"), "AAAA"))
                r = resolver_for(server, transports=("udp",))
                found = await r.resolve_host(ORIGIN)
                assert found[0] == Target("udp", "127.0.0.10", 5070)
                assert Target("udp", "::10", 5070) not in found

        run(body)

    def test_srv_failure_is_not_absence(self) -> None:
        """A failing SRV query raises servfail; it does not fall back to A/AAAA."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.servfail.add(("_sip._udp." + ORIGIN, "SRV"))
                r = resolver_for(server, transports=("udp",))
                with pytest.raises(DnsError) as info:
                    await r.resolve_host(ORIGIN)
                assert info.value.reason == "servfail"
                assert server.queries[(ORIGIN, "A")] == 0

        run(body)

    def test_slow_lookup_logged(self) -> None:
        """A query slower than slow_ms logs dns_slow with name, type and ms."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                server.delay_s = 0.05
                r = resolver_for(server, slow_ms=20, address_types=("A",))
                with capture_logs() as logs:
                    await r.resolve_host(ORIGIN, 5070)
                slow = [e for e in logs if e["event"] == "dns_slow"]
                assert len(slow) == 1
                assert slow[0]["name"] == ORIGIN and slow[0]["type"] == "A"
                assert slow[0]["ms"] >= 20
                assert slow[0]["log_level"] == "warning"

        run(body)

    def test_fast_lookup_not_logged(self) -> None:
        """A quick answer logs nothing."""

        async def body() -> None:
            async with serving(SRV_ZONE) as server:
                r = resolver_for(server, slow_ms=1000)
                with capture_logs() as logs:
                    await r.resolve_host(ORIGIN)
                assert logs == []

        run(body)
