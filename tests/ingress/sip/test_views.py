"""Typed views on valid messages: Via, From/To, Call-ID, CSeq, Max-Forwards, URIs, lists.

Most inputs are RFC 4475 / RFC 5118 torture messages, whose oddities each view must survive;
the expected values are read off the RFCs' own descriptions.
"""

from __future__ import annotations

import pytest

from ingress.sip.errors import BadRequest
from ingress.sip.grammar import parse_name_addr, parse_uri, parse_via
from ingress.sip.headers import canonical_name, split_commas
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message

INVITE = (
    b"INVITE sip:service@127.0.0.1:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-1-0;rport\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5063>;tag=6655SIPpTag001\r\n"
    b"To: service <sip:service@127.0.0.1:5062>\r\n"
    b"Call-ID: 1-6655@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5063\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   4\r\n\r\n"
    b"v=0\n"
)


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


class TestSippInvite:
    def test_fields(self) -> None:
        """Every field of a plain INVITE is where the proxy looks for it."""
        req = request(INVITE)
        assert (req.method, req.call_id, req.cseq, req.cseq_method) == (
            "INVITE", "1-6655@127.0.0.1", 1, "INVITE"
        )  # fmt: skip
        assert req.max_forwards == 70
        assert req.body == b"v=0\n" and req.body_end == len(INVITE)
        assert req.raw[: req.line_end] == b"INVITE sip:service@127.0.0.1:5062 SIP/2.0\r\n"
        assert req.is_request

    def test_request_uri(self) -> None:
        """The Request-URI splits into scheme, user, host and port."""
        uri = request(INVITE).uri
        assert (uri.raw, uri.scheme, uri.user, uri.host, uri.port) == (
            "sip:service@127.0.0.1:5062", "sip", "service", "127.0.0.1", 5062
        )  # fmt: skip
        assert uri.is_sip and uri.params is None and uri.param("lr") is None
        assert not uri.has_param("lr") and uri.host_plain == "127.0.0.1"

    def test_via(self) -> None:
        """The Via gives transport, sent-by, branch and a valueless rport."""
        (via,) = request(INVITE).vias
        assert (via.transport, via.host, via.port, via.branch) == (
            "UDP", "127.0.0.1", 5063, "z9hG4bK-6655-1-0"
        )  # fmt: skip
        assert via.received is None and "rport" in via.params and via.params["rport"] is None
        assert via.raw == b"SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-1-0;rport"

    def test_from_to(self) -> None:
        """From has a display name and a tag; To has neither tag nor params."""
        req = request(INVITE)
        assert req.from_.display == "sipp" and req.from_.tag == "6655SIPpTag001"
        assert req.from_.uri.user == "sipp" and req.from_.uri.port == 5063
        assert req.to.tag is None and req.to.params == {} and req.to.uri.port == 5062

    def test_header_access(self) -> None:
        """header(), header_values() and has_header() use canonical lower-case names."""
        req = request(INVITE)
        assert req.header("content-type") == b"application/sdp"
        assert req.header("content-length") == b"4"
        assert req.header_values("contact") == [b"sip:sipp@127.0.0.1:5063"]
        assert req.has_header("max-forwards") and not req.has_header("route")
        for name, _, start, end in req.headers:
            line = req.raw[start:end]
            assert line.endswith(b"\r\n") and canonical_name(line.split(b":")[0]) == name


class TestWsinv:
    """RFC 4475 3.1.1.1: folding and LWS everywhere, compact forms, odd case."""

    @pytest.fixture
    def req(self, torture: dict[str, bytes]) -> Request:
        return request(torture["wsinv"])

    def test_folded_singletons(self, req: Request) -> None:
        """Folded To/From/CSeq and leading zeros read as their plain values."""
        assert req.to.tag == "1918181833n" and req.from_.tag == "98asjd8"
        assert req.from_.display == '"J Rosenberg \\\\\\""'
        assert (req.cseq, req.cseq_method, req.max_forwards) == (9, "INVITE", 68)
        assert req.to.uri.host == "chair-dnrc.example.com"

    def test_vias_across_headers_and_commas(self, req: Request) -> None:
        """Three via-parms from a folded Via and a compact v: holding two values."""
        got = [(v.transport, v.host, v.branch) for v in req.vias]
        assert got == [
            ("UDP", "192.0.2.2", "390skdjuw"),
            ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
            ("UDP", "192.168.255.111", "z9hG4bK30239"),
        ]

    def test_unknown_headers_kept(self, req: Request) -> None:
        """Unknown headers keep their value; folding collapses to one SP (§7.3.1)."""
        assert req.header("newfangledheader") == b"newfangled value continued newfangled value"
        assert req.header("unknownheaderwithunusualvalue") == b";;,,;;,;"
        assert req.header("subject") == b""  # "s :" with nothing after it

    def test_uri_param_without_value(self, req: Request) -> None:
        """An unknown R-URI parameter without value is present with value None."""
        assert req.uri.has_param("unknownparam") and req.uri.param("unknownparam") is None

    def test_contact_and_route(self, req: Request) -> None:
        """Contact (compact m:) and Route parse with parse_name_addr."""
        (contact,) = [parse_name_addr(v) for v in req.header_values("contact")]
        assert contact.display == '"Quoted string \\"\\""'
        assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
        (route,) = [parse_name_addr(v) for v in req.header_values("route")]
        assert route.uri.has_param("lr") and route.uri.param("unknownwith") == "value"
        assert route.uri.has_param("unknown-no-value")


class TestOddMessages:
    def test_intmeth(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.2: every token character in method, tag and user part."""
        req = request(torture["intmeth"])
        assert req.method == "!interesting-Method0123456789_*+`.%indeed'~"
        assert req.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
        assert req.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
        assert req.uri.host == "example.com"
        assert req.from_.tag == "_token~1'+`*%!-."
        assert req.from_.display == "token1~` token2'+_ token3*%!.-"
        assert "\\\x00" in (req.to.display or "")
        assert req.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"

    def test_esc02_unknown_header_is_not_contact(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.5: C%6Fntact is an unknown header, so two Contact values."""
        req = request(torture["esc02"])
        assert req.method == "RE%47IST%45R"
        assert len(req.header_values("contact")) == 2
        assert req.has_header("c%6fntact")
        assert req.to.display == '"%Z%45"'

    def test_semiuri_user(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.9: a ";" before "@" belongs to the user part."""
        uri = request(torture["semiuri"]).uri
        assert uri.user == "user;par=u%40example.net" and uri.host == "example.com"
        assert uri.params is None

    def test_transports(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.10: any transport token is kept, upper-cased."""
        req = request(torture["transports"])
        assert [v.transport for v in req.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]

    def test_longreq(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.7: 34 Vias under every case of Via/v, HCOLON with spaces."""
        req = request(torture["longreq"])
        assert len(req.vias) == 34
        assert req.vias[0].host == "sip33.example.com"
        assert req.vias[-1].received == "192.0.2.5"
        assert req.from_.tag is not None and req.from_.display is None
        assert req.to.uri.port == 6000

    def test_cparam01_header_param(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.3.12: after an addr-spec, ;unknownparam is a header parameter."""
        req = request(torture["cparam01"])
        (contact,) = [parse_name_addr(v) for v in req.header_values("contact")]
        assert contact.params == {"unknownparam": None} and contact.uri.params is None

    def test_cparam02_uri_param(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.3.13: inside <>, ;unknownparam is a URI parameter."""
        req = request(torture["cparam02"])
        (contact,) = [parse_name_addr(v) for v in req.header_values("contact")]
        assert contact.params == {} and contact.uri.has_param("unknownparam")

    def test_escaped_route_stays_in_contact(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.3.14: the escaped Route is the Contact URI's header, not a header."""
        req = request(torture["regescrt"])
        (contact,) = [parse_name_addr(v) for v in req.header_values("contact")]
        assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"
        assert not req.has_header("route")

    def test_unknown_schemes_opaque(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.3.2/3.3.4: non-SIP URIs are kept whole and never split."""
        req = request(torture["unkscm"])
        assert req.uri.scheme == "nobodyknowsthisscheme" and not req.uri.is_sip
        assert req.uri.raw == "nobodyKnowsThisScheme:totallyopaquecontent"
        unksm2 = request(torture["unksm2"])
        assert unksm2.to.uri.scheme == "isbn" and unksm2.from_.uri.scheme == "http"

    def test_responses(self, torture: dict[str, bytes]) -> None:
        """RFC 4475 3.1.1.12/13: UTF-8 and empty reason phrases."""
        unreason = parse_message(torture["unreason"])
        assert isinstance(unreason, Response) and unreason.status == 200
        assert unreason.reason.startswith("= 2**3 * 5**2 ") and not unreason.reason.isascii()
        noreason = parse_message(torture["noreason"])
        assert isinstance(noreason, Response) and noreason.reason == ""
        assert not noreason.is_request


class TestIPv6:
    """RFC 5118."""

    @pytest.mark.parametrize(
        ("name", "host", "plain", "port"),
        [
            ("ipv6-good", "[2001:db8::10]", "2001:db8::10", None),
            ("port-ambiguous", "[2001:db8::10:5070]", "2001:db8::10:5070", None),
            ("port-unambiguous", "[2001:db8::10]", "2001:db8::10", 5070),
            ("ipv6-bug-abnf-3-colons", "[2001:db8:::192.0.2.1]", "2001:db8:::192.0.2.1", None),
        ],
        ids=["good", "port-ambiguous", "port-unambiguous", "3-colons"],
    )
    def test_request_uri_host(
        self, torture: dict[str, bytes], name: str, host: str, plain: str, port: int | None
    ) -> None:
        """IPv6 references keep their brackets in host and lose them in host_plain."""
        uri = request(torture[name]).uri
        assert (uri.host, uri.host_plain, uri.port) == (host, plain, port)

    @pytest.mark.parametrize(
        ("name", "received"),
        [
            ("via-received-param-with-delim", "[2001:db8::9:255]"),
            ("via-received-param-no-delim", "2001:db8::9:255"),
        ],
        ids=["brackets", "no-brackets"],
    )
    def test_via_received(self, torture: dict[str, bytes], name: str, received: str) -> None:
        """received= is accepted with or without brackets (RFC 5118 §4.5)."""
        via = request(torture[name]).vias[0]
        assert via.received == received
        assert (via.host, via.host_plain, via.port) == ("[2001:db8::9:1]", "2001:db8::9:1", None)

    def test_mixed_vias(self, torture: dict[str, bytes]) -> None:
        """RFC 5118 §4.7: IPv6 and IPv4 sent-bys in one Via list."""
        vias = request(torture["mult-ip-in-header"]).vias
        assert [(v.host_plain, v.port) for v in vias] == [
            ("2001:db8::9:1", 6050), ("192.0.2.1", None), ("2001:db8::9:255", None)
        ]  # fmt: skip
        assert vias[2].transport == "TCP" and vias[2].received == "192.0.2.200"

    def test_ipv4_mapped(self, torture: dict[str, bytes]) -> None:
        """RFC 5118 §4.9: ::ffff:192.0.2.10 in Via and Contact."""
        req = request(torture["ipv4-mapped-ipv6"])
        assert (req.vias[0].host_plain, req.vias[0].port) == ("::ffff:192.0.2.10", 19823)
        (contact,) = [parse_name_addr(v) for v in req.header_values("contact")]
        assert contact.uri.host == "[::ffff:192.0.2.2]" and contact.display == '"T. desk phone"'


class TestHeaderNames:
    @pytest.mark.parametrize(
        ("raw", "name"),
        [(b"v", "via"), (b"V", "via"), (b"i", "call-id"), (b"m", "contact"), (b"l", "content-length"),
         (b"f", "from"), (b"t", "to"), (b"s", "subject"), (b"k", "supported"), (b"c", "content-type"),
         (b"e", "content-encoding"), (b"MaX-fOrWaRdS", "max-forwards"), (b"X-Odd", "x-odd")],
    )  # fmt: skip
    def test_canonical(self, raw: bytes, name: str) -> None:
        """Compact forms mean their long form; names are case-insensitive (§7.3.3)."""
        assert canonical_name(raw) == name

    def test_compact_forms_in_a_message(self) -> None:
        """A message written entirely in compact forms parses like the long one."""
        data = (
            b"OPTIONS sip:a@example.com SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"f: <sip:b@example.com>;tag=x\r\nt: sip:a@example.com\r\ni: cid\r\n"
            b"CSEQ: 2 OPTIONS\r\nl: 0\r\n\r\n"
        )
        req = request(data)
        assert (req.call_id, req.from_.tag, req.vias[0].host, req.body_end) == (
            "cid", "x", "h", len(data)
        )  # fmt: skip


class TestSplitCommas:
    @pytest.mark.parametrize(
        ("value", "parts"),
        [
            (b"a", [b"a"]),
            (b"a, b ,c", [b"a", b"b", b"c"]),
            (b'"Doe, John" <sip:j@x>, <sip:k@y>', [b'"Doe, John" <sip:j@x>', b"<sip:k@y>"]),
            (b"<sip:a@x;p=a,b>, <sip:b@y>", [b"<sip:a@x;p=a,b>", b"<sip:b@y>"]),
            (b'"a \\" , b" <sip:x@y>, c', [b'"a \\" , b" <sip:x@y>', b"c"]),
            (b"a,,b", [b"a", b"", b"b"]),
        ],
        ids=["single", "plain", "quoted", "angle", "quoted-pair", "empty"],
    )
    def test_split(self, value: bytes, parts: list[bytes]) -> None:
        """Commas inside quotes or <> do not separate values (§7.3.1)."""
        assert split_commas(value) == parts

    def test_route_list(self) -> None:
        """A Route list in one header and across headers comes back in order."""
        data = INVITE.replace(
            b"Max-Forwards: 70\r\n",
            b"Max-Forwards: 70\r\nRoute: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
            b'Route: "P3, inc" <sip:p3.example.com;lr>\r\n',
        )
        routes = [parse_name_addr(v) for v in request(data).header_values("route")]
        assert [r.uri.host for r in routes] == [
            "p1.example.com",
            "p2.example.com",
            "p3.example.com",
        ]
        assert routes[2].display == '"P3, inc"'


class TestElementParsers:
    @pytest.mark.parametrize(
        "text",
        ["sip:2001:db8::10", "sip:user@example.com:99999", "sip:user@host:0", "sip:", "sip:a b",
         "<sip:x@y>", "nocolon", "sip:user@exa mple.com", "sip:user@[2001:db8::1", "1sip:x"],
    )  # fmt: skip
    def test_bad_uris(self, text: str) -> None:
        """Malformed URIs raise BadRequest, never anything else."""
        with pytest.raises(BadRequest):
            parse_uri(text)

    @pytest.mark.parametrize(
        "value",
        [b"SIP/2.0/UDP", b"SIP/2.0/UDP host;", b"SIP/2.0/UDP host;;a", b"SIP/2.0 UDP host",
         b"SIP/3.0/UDP host", b"SIP/2.0/UDP host:0", b"SIP/2.0/UDP host:65536", b"SIP/2.0/UDP a b"],
    )  # fmt: skip
    def test_bad_vias(self, value: bytes) -> None:
        """Malformed via-parms raise BadRequest."""
        with pytest.raises(BadRequest):
            parse_via(value)

    @pytest.mark.parametrize(
        "value",
        [b'"unterminated <sip:a@b>', b"Bell, Alexander <sip:a@b>", b"< sip:a@b >", b"<sip:a@b",
         b"sip:a@b?x=y", b"<sip:a@b>;", b"", b"<sip:a@b>;tag=\"x"],
    )  # fmt: skip
    def test_bad_name_addrs(self, value: bytes) -> None:
        """Malformed name-addrs raise BadRequest."""
        with pytest.raises(BadRequest):
            parse_name_addr(value)

    def test_quoted_param_with_semicolon(self) -> None:
        """A quoted gen-value keeps its ";" and does not split the parameters."""
        na = parse_name_addr(b'<sip:a@b>;+sip.instance="<urn:x;y>";reg-id=1')
        assert na.params == {"+sip.instance": '"<urn:x;y>"', "reg-id": "1"}

    def test_case_insensitive_scheme_and_params(self) -> None:
        """Scheme and parameter names are case-insensitive; values keep their case."""
        uri = parse_uri("SIP:Alice@Example.COM;Transport=TCP;LR")
        assert uri.scheme == "sip" and uri.param("transport") == "TCP" and uri.has_param("lr")
        assert uri.user == "Alice" and uri.host == "Example.COM"
