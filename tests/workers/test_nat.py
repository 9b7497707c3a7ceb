"""NAT detection and Contact fixing (workers/nat.py)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.settings import Nat
from ingress.sip.grammar import parse_name_addr, parse_uri
from ingress.sip.parser import parse_message
from ingress.sip.serialize import splice
from workers import nat
from workers.nat import MARKER, Seen
from workers.proxy import BRANCH_PREFIX, StatelessProxy
from workers.routing.table import RoutingTable

from .helpers import PORT, US, inbound, one, request, response, settings

ALL = ("private_contact", "private_via", "contact_not_source", "via_not_source", "rport")
DEFAULT = ("private_contact", "private_via", "contact_not_source", "via_not_source")


def invite(contact: str = "<sip:bob@10.0.0.5:5060>", via: str = "SIP/2.0/UDP 10.0.0.5:5060",
           method: str = "INVITE", extra: str = "") -> bytes:  # fmt: skip
    return (
        f"{method} sip:alice@example.com SIP/2.0\r\n"
        f"Via: {via};branch=z9hG4bK-1\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\n"
        + (f"Contact: {contact}\r\n" if contact else "")
        + extra
        + "Content-Length: 0\r\n\r\n"
    ).encode()


SRC = Seen("udp", "127.0.0.9", 40000)


@pytest.mark.parametrize(
    ("host", "private"),
    [("10.0.0.5", True), ("172.16.0.1", True), ("172.31.255.255", True), ("172.32.0.1", False),
     ("192.168.1.1", True), ("100.64.0.1", True), ("100.127.255.255", True),
     ("100.128.0.1", False), ("8.8.8.8", False), ("127.0.0.1", False), ("[fd00::1]", True),
     ("fc00::5", True), ("2001:db8::1", False), ("example.com", False), ("", False)],
)  # fmt: skip
def test_private_ranges(host: str, private: bool) -> None:
    """RFC 1918, RFC 6598 and ULA addresses are private; public, loopback and names are not."""
    assert nat.is_private(host) is private


@given(st.ip_addresses())
def test_private_matches_ipaddress(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    """is_private agrees with the listed networks for every address, either family."""
    want = any(ip in n for n in nat.PRIVATE_NETS if n.version == ip.version)
    text = f"[{ip}]" if ip.version == 6 else str(ip)
    assert nat.is_private(text) is want


@pytest.mark.parametrize(
    ("contact", "via", "src", "tests", "nated"),
    [
        ("<sip:b@10.0.0.5:5060>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, ["private_contact"], True),
        ("<sip:b@10.0.0.5:5060>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, ["via_not_source"], False),
        ("<sip:b@127.0.0.9:40000>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, ALL[:4], False),
        ("<sip:b@127.0.0.9:5060>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, ["contact_not_source"], True),
        ("<sip:b@127.0.0.9:5060>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, ["private_contact"], False),
        ("<sip:b@127.0.0.9:40000>", "SIP/2.0/UDP 192.168.0.2", SRC, ["private_via"], True),
        ("<sip:b@127.0.0.9:40000>", "SIP/2.0/UDP 127.0.0.9", SRC, ["via_not_source"], True),
        ("<sip:b@127.0.0.9:40000>", "SIP/2.0/UDP 127.0.0.9:40000;rport", SRC, ["rport"], True),
        ("<sip:b@127.0.0.9:40000>", "SIP/2.0/UDP 127.0.0.9:40000;rport", SRC, DEFAULT, False),
        ("<sip:b@phone.example:40000>", "SIP/2.0/UDP 127.0.0.9:40000", SRC, DEFAULT, True),
        # TCP: the source port is ephemeral, only the host counts
        ("<sip:b@127.0.0.9:5060;transport=tcp>", "SIP/2.0/TCP 127.0.0.9:5060",
         Seen("tcp", "127.0.0.9", 51234), DEFAULT, False),
        ("<sip:b@10.1.1.1:5060;transport=tcp>", "SIP/2.0/TCP 10.1.1.1:5060",
         Seen("tcp", "127.0.0.9", 51234), ["contact_not_source"], True),
        ("", "SIP/2.0/UDP 127.0.0.9:40000", SRC, DEFAULT, False),
        ("*", "SIP/2.0/UDP 127.0.0.9:40000", SRC, DEFAULT, False),
    ],
)  # fmt: skip
def test_behind_nat(contact: str, via: str, src: Seen, tests: list[str], nated: bool) -> None:
    """Each nat_uac_test-like test flags exactly what it names."""
    msg = parse_message(invite(contact, via))
    assert nat.behind_nat(msg, src, tests) is nated


def test_response_ignores_via() -> None:
    """A response's top Via is ours: only its Contact says whether its sender is behind NAT."""
    raw = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK-x\r\n"
           b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
           b"Contact: <sip:b@127.0.0.9:40000>\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    assert not nat.behind_nat(parse_message(raw), SRC, ALL)


@pytest.mark.parametrize(
    ("contact", "want"),
    [
        ("<sip:bob@10.0.0.5:5060>", f"<sip:bob@127.0.0.9:40000;{MARKER}=10.0.0.5:5060>"),
        ('"Bob" <sip:bob@10.0.0.5;transport=udp>;expires=60',
         f'"Bob" <sip:bob@127.0.0.9:40000;transport=udp;{MARKER}=10.0.0.5>;expires=60'),
        ("sip:bob@10.0.0.5:5070;+sip.instance=x",
         f"<sip:bob@127.0.0.9:40000;{MARKER}=10.0.0.5:5070>;+sip.instance=x"),
        ("<sip:[fd00::5]:5060?h=v>", f"<sip:127.0.0.9:40000;{MARKER}=[fd00::5]:5060?h=v>"),
        (f"<sip:bob@10.0.0.5;{MARKER}=1.2.3.4:5>", f"<sip:bob@127.0.0.9:40000;{MARKER}=1.2.3.4:5>"),
    ],
)  # fmt: skip
def test_contact_edit(contact: str, want: str) -> None:
    """The one Contact gets the source's host:port and the marker; the rest is kept."""
    msg = parse_message(invite(contact))
    edit = nat.contact_edit(msg, SRC)
    assert edit is not None
    out = parse_message(splice(msg.raw, [edit], msg.body_end))
    assert out.header_values("contact") == [want.encode()]


@pytest.mark.parametrize("contact", ["*", "<sip:a@10.0.0.1>, <sip:b@10.0.0.2>", "<tel:+1555>", ""])
def test_contact_edit_leaves_alone(contact: str) -> None:
    """Star, several Contacts, a non-SIP URI or no Contact: nothing to rewrite."""
    assert nat.contact_edit(parse_message(invite(contact)), SRC) is None


def test_contact_edit_two_lines() -> None:
    """Two Contact lines are not one remote target: left alone."""
    msg = parse_message(invite(extra="Contact: <sip:c@10.0.0.7>\r\n"))
    assert nat.contact_edit(msg, SRC) is None


def test_ipv6_source() -> None:
    """An IPv6 source is bracketed in the rewritten URI."""
    msg = parse_message(invite())
    edit = nat.contact_edit(msg, Seen("udp", "::1", 5070))
    assert edit is not None and b"<sip:bob@[::1]:5070;sl-nat=10.0.0.5:5060>" in edit[2]


_user = st.text("abcdefgh0123456789-.", min_size=1, max_size=12)
_host = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
                  st.sampled_from(["phone.example", "a.b.c"]))  # fmt: skip
_port = st.one_of(st.none(), st.integers(1, 65535))
_params = st.lists(st.sampled_from([";transport=udp", ";lr", ";ob", ";x=1"]), max_size=3)


@given(_user, _host, _port, _params, st.ip_addresses(), st.integers(1, 65535))
def test_fixed_uri_roundtrip(user: str, host: str, port: int | None, params: list[str],
                             ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                             src_port: int) -> None:  # fmt: skip
    """A rewritten URI parses, points at the source, keeps user and parameters, and its
    marker names the original host:port."""
    hostport = host + (f":{port}" if port else "")
    raw = f"sip:{user}@{hostport}{''.join(params)}"
    fixed = nat.fixed_uri(raw, Seen("udp", str(ip), src_port))
    assert fixed is not None
    u = parse_uri(fixed)
    assert u.host_plain == str(ip) and u.port == src_port and u.user == user
    assert u.param(MARKER) == hostport
    for p in params:
        name = p[1:].partition("=")[0]
        assert u.has_param(name)
    # the Contact header written around it parses as one name-addr again
    assert parse_name_addr(f"<{fixed}>".encode()).uri.raw == fixed


# -- through the stateless proxy (workers/proxy.py) ------------------------------------------

OUR_VIA = f"SIP/2.0/UDP {US}:{PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
NATED_SRC = {"src": "203.0.113.5", "port": 40000}


def nat_proxy(fix: bool = True) -> StatelessProxy:
    s = replace(settings(), nat=Nat(fix_contact=fix))
    return StatelessProxy(s, RoutingTable(s))


def contact_out(data: bytes) -> list[bytes]:
    return parse_message(data).header_values("contact")


@pytest.mark.parametrize(
    ("method", "vias", "fix", "rewritten"),
    [("INVITE", 1, True, True), ("SUBSCRIBE", 1, True, True), ("INVITE", 2, True, False),
     ("REGISTER", 1, True, False), ("INVITE", 1, False, False)],
    ids=["invite", "subscribe", "via-another-proxy", "register", "off"],
)  # fmt: skip
def test_proxy_fixes_requests(method: str, vias: int, fix: bool, rewritten: bool) -> None:
    """A request straight from a UA behind NAT leaves with its Contact at its source; one that
    came through another proxy, a REGISTER, or with fix_contact off leaves untouched."""
    via = "SIP/2.0/UDP 192.168.1.7:5060;branch=z9hG4bKabc"
    if vias == 2:
        via = "SIP/2.0/UDP 203.0.113.5:40000;branch=z9hG4bKp, " + via
    raw = request(method, via=via, extra=("Contact: <sip:alice@192.168.1.7:5060>",))
    _, _, data = one(nat_proxy(fix).handle(raw, inbound(**NATED_SRC)))  # type: ignore[arg-type]
    want = (b"<sip:alice@203.0.113.5:40000;sl-nat=192.168.1.7:5060>" if rewritten
            else b"<sip:alice@192.168.1.7:5060>")  # fmt: skip
    assert contact_out(data) == [want]


@pytest.mark.parametrize(
    ("contact", "rewritten"),
    [("<sip:bob@10.0.0.5:5060>", True), ("<sip:bob@198.51.100.9:5060>", False)],
    ids=["private", "public-elsewhere"],
)  # fmt: skip
def test_proxy_fixes_responses_by_private_contact(contact: str, rewritten: bool) -> None:
    """A response's Contact is rewritten only when private: a public one that is not the
    source may be the far UA behind another proxy."""
    raw = response(200, [OUR_VIA, "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc"])
    raw = raw.replace(b"Content-Length", f"Contact: {contact}\r\nContent-Length".encode())
    _, _, data = one(nat_proxy().handle(raw, inbound(**NATED_SRC)))  # type: ignore[arg-type]
    want = f"<sip:bob@203.0.113.5:40000;sl-nat={contact[9:-1]}>" if rewritten else contact
    assert contact_out(data) == [want.encode()]
