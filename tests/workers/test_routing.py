"""The routing table: first matching rule wins; destination sets pick per Call-ID."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.settings import DestinationSet as SetCfg
from conf.settings import Route as RouteCfg
from workers.routing.table import DestinationSet, RoutingTable

from .helpers import parsed_req, request, settings


def table(routes: list[RouteCfg], sets: list[SetCfg] | None = None) -> RoutingTable:
    sets = sets or [SetCfg(name=n, destinations=[f"sip:127.0.0.1:{7000 + i}"])
                    for i, n in enumerate("abcd")]  # fmt: skip
    return RoutingTable(settings(sets=sets, routes=routes))


def route_of(t: RoutingTable, raw: bytes, src: str = "10.0.0.1") -> str | None:
    found = t.lookup(parsed_req(raw), src)
    return None if found is None else found[0]


class TestRules:
    def test_methods(self) -> None:
        """A method list matches only those methods."""
        t = table([RouteCfg(name="reg", to="a", methods=["REGISTER"]),
                   RouteCfg(name="rest", to="b")])  # fmt: skip
        assert route_of(t, request("REGISTER")) == "reg"
        assert route_of(t, request("INVITE")) == "rest"

    def test_ruri_user_full_match(self) -> None:
        """ruri_user must match the whole user part."""
        t = table([RouteCfg(name="intl", to="a", ruri_user=r"00\d+")])
        assert route_of(t, request(uri="sip:0044123@example.com")) == "intl"
        assert route_of(t, request(uri="sip:x0044123@example.com")) is None
        assert route_of(t, request(uri="sip:example.com")) is None

    def test_ruri_host_ignores_case(self) -> None:
        """ruri_host is a full match, case-insensitive."""
        t = table([RouteCfg(name="h", to="a", ruri_host=r"example\.com")])
        assert route_of(t, request(uri="sip:bob@EXAMPLE.com")) == "h"
        assert route_of(t, request(uri="sip:bob@sub.example.com")) is None

    def test_ruri_host_ipv6_without_brackets(self) -> None:
        """An IPv6 Request-URI host is matched without its brackets."""
        t = table([RouteCfg(name="v6", to="a", ruri_host=r"2001:db8::10")])
        assert route_of(t, request("REGISTER", uri="sip:[2001:db8::10]")) == "v6"

    @pytest.mark.parametrize(("src", "hit"), [("10.1.2.3", True), ("11.0.0.1", False),
                                              ("2001:db8::1", False)])  # fmt: skip
    def test_source_cidr(self, src: str, hit: bool) -> None:
        """source matches addresses inside the CIDR only, of either family."""
        t = table([RouteCfg(name="lan", to="a", source="10.0.0.0/8")])
        assert (route_of(t, request(), src) == "lan") is hit

    def test_first_match_wins(self) -> None:
        """Rules are tried in order; the first that matches wins."""
        t = table([RouteCfg(name="one", to="a", methods=["INVITE"]),
                   RouteCfg(name="two", to="b", methods=["INVITE"]),
                   RouteCfg(name="default", to="c")])  # fmt: skip
        assert route_of(t, request()) == "one"
        assert route_of(t, request("BYE")) == "default"

    def test_all_conditions_must_hold(self) -> None:
        """A rule with several conditions needs every one."""
        t = table([RouteCfg(name="x", to="a", methods=["INVITE"], ruri_user="1.*",
                            source="10.0.0.0/8")])  # fmt: skip
        assert route_of(t, request(uri="sip:123@h")) == "x"
        assert route_of(t, request(uri="sip:123@h"), "11.0.0.1") is None
        assert route_of(t, request("BYE", uri="sip:123@h")) is None

    def test_default_route(self) -> None:
        """A rule with no condition matches everything."""
        t = table([RouteCfg(name="default", to="d")])
        found = t.lookup(parsed_req(request("MESSAGE")), "192.0.2.1")
        assert found is not None and found[1].port == 7003

    def test_no_route(self) -> None:
        """No rule matching gives None."""
        assert table([]).lookup(parsed_req(request()), "10.0.0.1") is None


def dset(algorithm: str, n: int = 3, weights: list[int] | None = None) -> DestinationSet:
    return DestinationSet(SetCfg(
        name="s", destinations=[f"sip:127.0.0.1:{7000 + i}" for i in range(n)],
        algorithm=algorithm, weights=weights or [],  # type: ignore[arg-type]
    ))  # fmt: skip


class TestDestinationSets:
    def test_round_robin_turns(self) -> None:
        """round_robin hands new calls to each destination in turn."""
        s = dset("round_robin")
        assert [s.pick(f"c{i}").port for i in range(6)] == [7000, 7001, 7002] * 2

    def test_round_robin_sticky_per_call(self) -> None:
        """Every request of a call (CANCEL, ACK, BYE) goes where its INVITE went."""
        s = dset("round_robin")
        first = {f"c{i}": s.pick(f"c{i}") for i in range(5)}
        for _ in range(3):
            for cid, d in first.items():
                assert s.pick(cid) == d

    def test_round_robin_cancel_through_table(self) -> None:
        """Through the table: the CANCEL of an INVITE goes to the INVITE's destination."""
        sets = [SetCfg(name="rr", algorithm="round_robin",
                       destinations=["sip:127.0.0.1:7000", "sip:127.0.0.1:7001"])]  # fmt: skip
        t = table([RouteCfg(name="d", to="rr")], sets)
        for i in range(4):
            inv = t.lookup(parsed_req(request(call_id=f"k{i}")), "10.0.0.1")
            cancel = t.lookup(parsed_req(request("CANCEL", call_id=f"k{i}")), "10.0.0.1")
            ack = t.lookup(parsed_req(request("ACK", call_id=f"k{i}", to_tag="t")), "10.0.0.1")
            assert inv == cancel == ack

    def test_weighted_distribution(self) -> None:
        """weighted splits calls in proportion to the weights."""
        s = dset("weighted", 2, [1, 3])
        counts = Counter(s.pick(f"call-{i}@host").port for i in range(8000))
        share = counts[7001] / 8000
        assert 0.70 < share < 0.80

    def test_weighted_sticky(self) -> None:
        """weighted is a function of the Call-ID: the same call, the same destination."""
        s = dset("weighted", 3, [5, 1, 1])
        assert all(s.pick(f"x{i}") == s.pick(f"x{i}") for i in range(100))

    def test_hash_spreads(self) -> None:
        """hash_call_id uses every destination."""
        s = dset("hash_call_id")
        assert {s.pick(f"call-{i}").port for i in range(300)} == {7000, 7001, 7002}

    @given(st.text(min_size=1, max_size=64).filter(lambda t: t.isprintable()))
    def test_hash_call_id_stable(self, call_id: str) -> None:
        """hash_call_id gives the same destination for a Call-ID in any process (no seed)."""
        cid = call_id.encode("utf-8").decode("latin-1")
        assert dset("hash_call_id").pick(cid) == dset("hash_call_id").pick(cid)

    def test_single_destination(self) -> None:
        """A one-destination set always picks it."""
        s = dset("round_robin", 1)
        assert {s.pick(f"c{i}").port for i in range(5)} == {7000}

    def test_transport_param(self) -> None:
        """A destination's transport param is kept, lower-cased; None when absent."""
        s = DestinationSet(SetCfg(name="t", destinations=["sip:10.0.0.1:5070;transport=TCP",
                                                          "sip:10.0.0.2"]))  # fmt: skip
        assert [(d.host, d.port, d.transport) for d in s.destinations] == [
            ("10.0.0.1", 5070, "tcp"), ("10.0.0.2", 5060, None)]  # fmt: skip
