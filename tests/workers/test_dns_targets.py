"""RFC 3263/2782 decisions without I/O: transports, SRV names, NAPTR choice, SRV order."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.dns import DnsError
from workers.dns import targets as t
from workers.dns.targets import Naptr, Srv

SUPPORTED = ("udp", "tcp", "tls")


class TestTransport:
    @pytest.mark.parametrize(
        ("param", "secure", "expected"),
        [
            (None, False, None),
            (None, True, "tls"),
            ("UDP", False, "udp"),
            ("tcp", False, "tcp"),
            ("tls", False, "tls"),
            ("tcp", True, "tls"),
            ("tls", True, "tls"),
        ],
    )
    def test_uri_transport(self, param: str | None, secure: bool, expected: str | None) -> None:
        """The transport parameter forces a transport; SIPS always means TLS (§4.1)."""
        assert t.uri_transport(param, secure) == expected

    @pytest.mark.parametrize(("param", "secure"), [("sctp", False), ("ws", False), ("udp", True)])
    def test_unsupported(self, param: str, secure: bool) -> None:
        """Transports we cannot send on, and SIPS over UDP, are refused."""
        with pytest.raises(DnsError) as info:
            t.uri_transport(param, secure)
        assert info.value.reason == "unsupported_transport"

    def test_default_transport(self) -> None:
        """With nothing to go on: UDP for SIP, TLS over TCP for SIPS (§4.1)."""
        assert (t.default_transport(False), t.default_transport(True)) == ("udp", "tls")


class TestNames:
    @pytest.mark.parametrize(
        ("host", "ip"),
        [
            ("10.0.0.1", "10.0.0.1"),
            ("[2001:DB8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("example.test", None),
            ("10.0.0.1.example.test", None),
        ],
    )
    def test_numeric_ip(self, host: str, ip: str | None) -> None:
        """IPv4, bracketed or bare IPv6 are numeric; names are not."""
        assert t.numeric_ip(host) == ip

    def test_normalise(self) -> None:
        """Names are compared lower-case without the final dot."""
        assert t.normalise("Example.TEST.") == "example.test"

    def test_srv_queries_follow_preference(self) -> None:
        """SIP asks UDP/TCP (and TLS if supported) in the caller's order; SIPS only TLS."""
        assert t.srv_queries("d", None, False, ("tcp", "udp")) == [
            ("tcp", "_sip._tcp.d"),
            ("udp", "_sip._udp.d"),
        ]
        assert t.srv_queries("d", None, True, SUPPORTED) == [("tls", "_sips._tcp.d")]
        assert t.srv_queries("d", None, True, ("udp", "tcp")) == []
        assert t.srv_queries("d", "tcp", False, SUPPORTED) == [("tcp", "_sip._tcp.d")]


class TestNaptr:
    def test_order_then_preference(self) -> None:
        """NAPTR records are taken by order, then preference; unknown services skipped."""
        records = [
            Naptr(20, 1, "S", "SIP+D2U", "_sip._udp.d."),
            Naptr(10, 2, "s", "SIP+D2T", "_sip._tcp.d."),
            Naptr(10, 1, "s", "SIPS+D2T", "_sips._tcp.d."),
            Naptr(5, 1, "s", "SIP+D2S", "_sip._sctp.d."),
            Naptr(5, 1, "a", "SIP+D2U", "host.d."),
        ]
        assert t.naptr_queries(records, False, SUPPORTED) == [
            ("tls", "_sips._tcp.d"),
            ("tcp", "_sip._tcp.d"),
            ("udp", "_sip._udp.d"),
        ]
        assert t.naptr_queries(records, False, ("udp",)) == [("udp", "_sip._udp.d")]

    def test_sips_keeps_only_tls(self) -> None:
        """A SIPS URI may only use SIPS+D2T records."""
        records = [Naptr(1, 1, "s", "SIP+D2U", "u."), Naptr(2, 1, "s", "SIPS+D2T", "s.")]
        assert t.naptr_queries(records, True, SUPPORTED) == [("tls", "s")]


srv_records = st.lists(
    st.builds(
        Srv,
        priority=st.integers(0, 3),
        weight=st.integers(0, 100),
        port=st.integers(1, 65535),
        target=st.sampled_from(["a", "b", "c", "d"]),
    ),
    max_size=12,
)


class TestSrvOrder:
    @given(records=srv_records, seed=st.integers(0, 2**32))
    def test_permutation_sorted_by_priority(self, records: list[Srv], seed: int) -> None:
        """The order is a permutation of the records with priorities never decreasing."""
        ordered = t.order_srv(records, random.Random(seed))
        assert sorted(ordered) == sorted(records)
        priorities = [r.priority for r in ordered]
        assert priorities == sorted(priorities)

    def test_weight_distribution(self) -> None:
        """The first pick within a priority follows the weights (RFC 2782)."""
        records = [Srv(1, 70, 1, "a"), Srv(1, 20, 2, "b"), Srv(1, 10, 3, "c"), Srv(0, 5, 9, "z")]
        rng = random.Random(1)
        draws = 20_000
        second = collections.Counter(t.order_srv(records, rng)[1].port for _ in range(draws))
        assert [round(second[p] / draws, 2) for p in (1, 2, 3)] == pytest.approx(
            [0.7, 0.2, 0.1], abs=0.02
        )

    def test_zero_weight_rarely_first(self) -> None:
        """A weight-0 record comes first only when the draw lands on 0 (1 in sum+1)."""
        records = [Srv(1, 0, 1, "zero"), Srv(1, 99, 2, "heavy")]
        rng = random.Random(3)
        draws = 10_000
        firsts = sum(t.order_srv(records, rng)[0].port == 1 for _ in range(draws))
        assert firsts / draws == pytest.approx(0.01, abs=0.005)

    def test_dot_target(self) -> None:
        """A "." record names no host (RFC 2782: the service is not offered)."""
        assert t.srv_targets([Srv(0, 0, 0, ".")]) == []
        assert t.srv_targets([Srv(0, 0, 0, "."), Srv(0, 0, 1, "a")]) == [Srv(0, 0, 1, "a")]
