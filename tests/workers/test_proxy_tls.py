"""The stateless proxy core over TLS (docs/tls.md), without sockets: Via and Record-Route name
TLS, sips: and transport=tls hops leave over TLS, responses go back on the TLS connection."""

from __future__ import annotations

import pytest

from conf.settings import DestinationSet, Listener
from workers.proxy import BRANCH_PREFIX, CONN_PARAM
from workers.routing.dispatcher import destination

from .helpers import PORT, US, inbound, one, parsed_req, proxy, request, response

TLS_PORT = 5998
LISTEN = [Listener(transport="udp", address=US, port=PORT),
          Listener(transport="tls", address=US, port=TLS_PORT)]  # fmt: skip


def tls_proxy(dest: str):  # type: ignore[no-untyped-def]
    return proxy(listen=LISTEN, sets=[DestinationSet(name="uas", destinations=[dest])])


@pytest.mark.parametrize(
    ("dest", "port"),
    [("sips:192.0.2.7", 5061), ("sips:192.0.2.7:5071;transport=tcp", 5071),
     ("sip:192.0.2.7;transport=tls", 5061), ("sip:192.0.2.7:5081;transport=TLS", 5081)],
)  # fmt: skip
def test_tls_destination(dest: str, port: int) -> None:
    """sips: (whatever its transport parameter) and transport=tls leave over TLS from the TLS
    listener, to 5061 unless a port is given; our Via says TLS and Content-Length is kept."""
    _, meta, data = one(tls_proxy(dest).handle(request(), inbound()))
    assert meta == ["tls", "192.0.2.7", port, 0, US, TLS_PORT]
    req = parsed_req(data)
    assert req.vias[0].transport == "TLS" and (req.vias[0].host, req.vias[0].port) == (US, TLS_PORT)
    assert req.has_header("content-length")
    assert destination(dest).transport == "tls" and destination(dest).port == port


def test_record_route_names_tls() -> None:
    """UDP in, TLS out: two Record-Routes, the TLS one with transport=tls."""
    _, _, data = one(tls_proxy("sips:192.0.2.7").handle(request(), inbound()))
    assert parsed_req(data).header_values("record-route") == [
        f"<sip:{US}:{TLS_PORT};transport=tls;lr>".encode(),
        f"<sip:{US}:{PORT};lr>".encode(),
    ]


def test_tls_in_tags_the_connection_and_keeps_tls() -> None:
    """A request that came over TLS: our Via names its connection (sl-c), and with no
    transport on the destination it leaves over TLS too."""
    p = tls_proxy("sip:192.0.2.7:5071")
    _, meta, data = one(p.handle(request(via="SIP/2.0/TLS 10.0.0.1:40000;branch=z9hG4bKa;rport"),
                                 inbound(transport="tls", conn=7, port=40000)))  # fmt: skip
    assert meta[0] == "tls"
    tag = parsed_req(data).vias[0].params[CONN_PARAM]
    assert tag is not None and p.tags.verify(tag) == ("ing-1", 7)


def test_response_back_on_the_tls_connection() -> None:
    """A response whose next Via is TLS goes to the connection our Via's tag names."""
    p = tls_proxy("sips:192.0.2.7")
    ours = (f"SIP/2.0/TLS {US}:{TLS_PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
            f";{CONN_PARAM}={p.tags.mint('ingress.1-5', 9)}")  # fmt: skip
    client = "SIP/2.0/TLS 10.0.0.1:40000;branch=z9hG4bKabc;rport=40000;received=10.0.0.1"
    ing, meta, data = one(p.handle(response(200, [ours, client]), inbound()))
    assert (ing, meta) == ("ingress.1-5", ["tls", "10.0.0.1", 40000, 9, US, TLS_PORT])
    assert b"branch=z9hG4bK-sl" not in data


def test_tls_via_default_port_is_5061() -> None:
    """A TLS Via without port names 5061 (RFC 3261 §18.2.2 with §19.1.2)."""
    p = tls_proxy("sips:192.0.2.7")
    ours = f"SIP/2.0/TLS {US}:{TLS_PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
    _, meta, _ = one(p.handle(response(200, [ours, "SIP/2.0/TLS 10.0.0.1;branch=z9hG4bKq"]),
                              inbound()))  # fmt: skip
    assert meta[:3] == ["tls", "10.0.0.1", 5061]


@pytest.mark.parametrize(
    ("hop", "meta0"),
    [("sip:192.0.2.7:5061;transport=tls;sl-sni=Carrier.Example.com", "tls:carrier.example.com"),
     ("sip:192.0.2.7:5061;transport=tls;sl-sni=bad/name", "tls"),
     ("sip:192.0.2.7:5061;transport=udp;sl-sni=carrier.example.com", "udp")],
)  # fmt: skip
def test_resolved_name_goes_to_the_ingress(hop: str, meta0: str) -> None:
    """A TLS hop the stateful proxy resolved from a name carries it (``sl-sni``): the
    ingress is asked to verify the server against it; not for other transports."""
    from ingress.sip.grammar import parse_uri

    p = tls_proxy("sips:192.0.2.7")
    req = parsed_req(request())
    plan = p.plan(req, inbound())
    (_, meta, _), _ = p.forward(req, inbound(), plan, parse_uri(hop))
    assert meta[0] == meta0
