"""The stateless proxy core (RFC 3261 §16.11) without sockets: bytes in, bytes out."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.settings import DestinationSet, Listener, Proxy, RateLimit, Route, Trusted
from ingress.sip.errors import SipError
from ingress.sip.grammar import parse_uri
from workers.proxy import BRANCH_PREFIX, CONN_PARAM, Inbound, StatelessProxy
from workers.refusals import Drop
from workers.routing.table import RoutingTable

from .helpers import (
    PORT,
    US,
    inbound,
    one,
    parsed_req,
    parsed_resp,
    proxy,
    request,
    response,
    settings,
    status,
)

OUR_VIA = f"SIP/2.0/UDP {US}:{PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
OUR_ROUTE = f"Route: <sip:{US}:{PORT};lr>"
#: the default inbound source (10.0.0.1), trusted to name its next hop (rule 10)
TRUSTED = [Trusted(cidr="10.0.0.1")]
CLIENT_VIA = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc"


def forward(raw: bytes, **inb: object) -> tuple[str, list[object], bytes]:
    return one(proxy().handle(raw, inbound(**inb)))  # type: ignore[arg-type]


def forward_trusted(raw: bytes, **kw: object) -> tuple[str, list[object], bytes]:
    """Through a proxy that trusts the default source: it may pre-load a Route."""
    return one(proxy(trusted=TRUSTED, **kw).handle(raw, inbound()))


def top_branch(data: bytes) -> str:
    b = parsed_req(data).vias[0].branch
    assert b is not None
    return b


class TestMaxForwards:
    def test_decremented(self) -> None:
        """A forwarded request carries Max-Forwards one lower than it came with."""
        _, _, data = forward(request(max_forwards=10))
        assert parsed_req(data).max_forwards == 9

    def test_added_when_absent(self) -> None:
        """A request without Max-Forwards leaves with 70 (§16.6 step 3)."""
        _, _, data = forward(request(max_forwards=None))
        assert parsed_req(data).max_forwards == 70

    def test_configured_default(self) -> None:
        """The added Max-Forwards follows proxy.default_max_forwards."""
        p = proxy(proxy=Proxy(default_max_forwards=20))
        _, _, data = one(p.handle(request(max_forwards=None), inbound()))
        assert parsed_req(data).max_forwards == 20

    def test_huge_value_capped(self) -> None:
        """A value above 255 is forwarded as 255, never as a bigger or negative number."""
        _, _, data = forward(request(max_forwards=300))
        assert parsed_req(data).max_forwards == 255

    def test_zero_gets_483(self) -> None:
        """Max-Forwards 0 on a request not for us is answered 483 to its source."""
        ing, meta, data = forward(request(max_forwards=0))
        assert status(data) == 483
        assert ing == "ing-1" and meta[:3] == ["udp", "10.0.0.1", 5070]

    def test_reply_to_via_port_without_rport(self) -> None:
        """Over UDP a local reply goes to the source address and the Via's port (§18.2.2)."""
        _, meta, _ = forward(request(max_forwards=0), src="10.9.9.9", port=40000)
        assert meta[1:3] == ["10.9.9.9", 5070]

    def test_reply_to_source_port_with_rport(self) -> None:
        """With rport the local reply goes to the source port (RFC 3581 §4)."""
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport"
        _, meta, _ = forward(request(via=via, max_forwards=0), src="10.9.9.9", port=40000)
        assert meta[1:3] == ["10.9.9.9", 40000]

    def test_reply_over_tcp_on_connection(self) -> None:
        """Over TCP the local reply goes back on the request's connection."""
        ing, meta, _ = forward(request(max_forwards=0), transport="tcp", conn=9, port=40000)
        assert ing == "ing-1" and meta[:4] == ["tcp", "10.0.0.1", 40000, 9]

    def test_options_for_us_with_zero_gets_200(self) -> None:
        """OPTIONS addressed to the proxy with Max-Forwards 0 is answered 200 (final recipient)."""
        _, _, data = forward(request("OPTIONS", f"sip:{US}:{PORT}", max_forwards=0))
        resp = parsed_resp(data)
        assert resp.status == 200 and resp.has_header("allow")
        assert resp.to.tag  # a final answer carries a To-tag

    def test_options_for_someone_else_with_zero_gets_483(self) -> None:
        """OPTIONS for another target with Max-Forwards 0 is 483 (RFC 4475 zeromf)."""
        _, _, data = forward(request("OPTIONS", "sip:user@example.com", max_forwards=0))
        assert status(data) == 483

    def test_ack_never_answered(self) -> None:
        """An ACK that would get 483 is dropped instead: ACKs are never answered."""
        with pytest.raises(Drop):
            proxy().handle(request("ACK", max_forwards=0), inbound())


class TestValidation:
    @pytest.mark.parametrize(
        "uri", ["nobodyKnowsThisScheme:totallyopaquecontent", "soap.beep://192.0.2.103:3002"]
    )
    def test_unknown_scheme_gets_416(self, uri: str) -> None:
        """Request-URI schemes we cannot route get 416 (RFC 4475 unkscm, novelsc)."""
        _, _, data = forward(request(uri=uri))
        assert status(data) == 416

    def test_proxy_require_gets_420_with_unsupported(self) -> None:
        """Unknown Proxy-Require tags get 420 listing them in Unsupported (RFC 4475 bext01)."""
        extra = ("Proxy-Require: noProxiesSupportThis, norDoAnyProxiesSupportThis",)
        _, _, data = forward(request("OPTIONS", extra=extra))
        resp = parsed_resp(data)
        assert resp.status == 420
        assert resp.header("unsupported") == b"noProxiesSupportThis, norDoAnyProxiesSupportThis"

    def test_supported_proxy_require_passes(self) -> None:
        """A Proxy-Require tag listed in proxy_require_supported is forwarded."""
        p = proxy(proxy=Proxy(proxy_require_supported=["foo"]))
        _, _, data = one(p.handle(request(extra=("Proxy-Require: FOO",)), inbound()))
        assert parsed_req(data).method == "INVITE"

    def test_no_route_gets_404(self) -> None:
        """With no route and a host-name Request-URI the request gets 404."""
        p = proxy(routes=[], sets=[])
        _, _, data = one(p.handle(request(), inbound()))
        assert status(data) == 404

    def test_no_route_ip_ruri_gets_404(self) -> None:
        """With no route matching, a Request-URI naming an IP address is not a next hop
        (rule 10: only a to_request_uri route relays)."""
        p = proxy(routes=[], sets=[])
        _, meta, data = one(p.handle(request(uri="sip:bob@192.0.2.7:5088"), inbound()))
        assert status(data) == 404 and meta[1] == "10.0.0.1"

    def test_host_name_next_hop_gets_503(self) -> None:
        """A next hop that needs DNS (not resolved yet) is answered 503, never sent by name."""
        raw = request(extra=("Route: <sip:proxy.example.com;lr>",))
        _, _, data = forward_trusted(raw)
        assert status(data) == 503


class TestLoops:
    def test_own_output_back_is_482(self) -> None:
        """A request we forwarded that comes back unchanged has looped: 482 (§16.3 step 4)."""
        p = proxy()
        _, _, out = one(p.handle(request(), inbound()))
        _, _, back = one(p.handle(out, inbound(src=US, port=PORT)))
        assert status(back) == 482

    def test_spiral_with_new_ruri_is_forwarded(self) -> None:
        """The same request back with another Request-URI is a spiral, not a loop."""
        p = proxy()
        _, _, out = one(p.handle(request(), inbound()))
        spiral = out.replace(b"INVITE sip:bob@example.com", b"INVITE sip:carol@example.com", 1)
        _, _, again = one(p.handle(spiral, inbound(src=US, port=PORT)))
        assert parsed_req(again).method == "INVITE"
        assert len(parsed_req(again).vias) == 3


class TestBranch:
    def test_retransmission_same_branch(self) -> None:
        """A retransmission gets the same branch (§16.11)."""
        p = proxy()
        a = one(p.handle(request(), inbound()))[2]
        b = one(p.handle(request(), inbound()))[2]
        assert top_branch(a) == top_branch(b) and a == b

    def test_cancel_and_non2xx_ack_share_invite_branch(self) -> None:
        """CANCEL and the ACK of a non-2xx carry the INVITE's branch."""
        p = proxy()
        inv = one(p.handle(request(), inbound()))[2]
        cancel = one(p.handle(request("CANCEL"), inbound()))[2]
        ack = one(p.handle(request("ACK", to_tag="t1", cseq_method="ACK"), inbound()))[2]
        assert top_branch(inv) == top_branch(cancel) == top_branch(ack)

    def test_other_transaction_other_branch(self) -> None:
        """A different client branch (another transaction) gets a different branch."""
        p = proxy()
        a = one(p.handle(request(), inbound()))[2]
        b = one(p.handle(request(via="SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKxyz"), inbound()))[2]
        assert top_branch(a) != top_branch(b)

    def test_rfc2543_client(self) -> None:
        """A client without a magic-cookie branch still gets a stable branch per transaction."""
        via = "SIP/2.0/UDP 10.0.0.1:5070"
        p = proxy()
        a = top_branch(one(p.handle(request(via=via), inbound()))[2])
        b = top_branch(one(p.handle(request(via=via), inbound()))[2])
        c = top_branch(one(p.handle(request(via=via, cseq=2), inbound()))[2])
        assert a == b != c and a.startswith("z9hG4bK")

    @given(
        branch=st.text("abcdefABCDEF0123456789.-", min_size=1, max_size=30),
        cseq=st.integers(1, 2**31),
        call_id=st.text("abcdef0123456789@.", min_size=1, max_size=20),
    )
    def test_branch_is_deterministic(self, branch: str, cseq: int, call_id: str) -> None:
        """Branch is a function of the transaction: two proxies, same input, same branch."""
        raw = request(via=f"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK{branch}", cseq=cseq,
                      call_id=call_id)  # fmt: skip
        a = top_branch(one(proxy().handle(raw, inbound()))[2])
        b = top_branch(one(proxy().handle(raw, inbound(port=6000)))[2])
        assert a == b and a.startswith(BRANCH_PREFIX)


class TestVia:
    def test_our_via_on_top(self) -> None:
        """Our Via, with our listener's address, goes on top of the client's."""
        _, meta, data = forward(request())
        vias = parsed_req(data).vias
        assert (vias[0].host, vias[0].port, vias[0].transport) == (US, PORT, "UDP")
        assert vias[1].branch == "z9hG4bKabc"
        assert meta == ["udp", "127.0.0.1", 7000, 0, US, PORT]

    def test_received_added_when_source_differs(self) -> None:
        """The previous hop's Via gets received= when its sent-by is not the source (§18.2.1)."""
        _, _, data = forward(request(), src="10.9.9.9")
        assert parsed_req(data).vias[1].received == "10.9.9.9"

    def test_no_received_when_source_matches(self) -> None:
        """No received= when the sent-by already is the source address and rport is absent."""
        _, _, data = forward(request())
        assert "received" not in parsed_req(data).vias[1].params

    def test_rport_filled(self) -> None:
        """rport is filled with the source port and received is added (RFC 3581 §4)."""
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport"
        _, _, data = forward(request(via=via), port=40000)
        prev = parsed_req(data).vias[1]
        assert prev.params["rport"] == "40000" and prev.received == "10.0.0.1"

    def test_tcp_via_names_connection(self) -> None:
        """Over TCP our Via names the ingress and connection the request came on, with a
        tag only the node key verifies."""
        p = proxy()
        _, _, data = one(p.handle(request(), inbound(transport="tcp", conn=42)))
        tag = parsed_req(data).vias[0].params[CONN_PARAM]
        assert tag is not None and tag.startswith("ing-1~42~")
        assert p.tags.verify(tag) == ("ing-1", 42)

    def test_multi_value_via_line(self) -> None:
        """received= is set on the first value of a comma-separated Via line only."""
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport, SIP/2.0/UDP 10.0.0.3;branch=z9hG4bKq"
        _, _, data = forward(request(via=via), port=40000)
        vias = parsed_req(data).vias
        assert vias[1].params["rport"] == "40000" and "rport" not in vias[2].params


class TestRecordRoute:
    def test_initial_invite(self) -> None:
        """An initial INVITE gets our Record-Route with lr."""
        _, _, data = forward(request())
        assert parsed_req(data).header_values("record-route") == [f"<sip:{US}:{PORT};lr>".encode()]

    @pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "BYE", "MESSAGE"])
    def test_not_on_other_methods(self, method: str) -> None:
        """Requests that create no dialog get no Record-Route."""
        _, _, data = forward(request(method))
        assert not parsed_req(data).has_header("record-route")

    def test_not_in_dialog(self) -> None:
        """A re-INVITE (To-tag) gets no Record-Route."""
        _, _, data = forward(request(uri="sip:bob@192.0.2.5", to_tag="x", extra=(OUR_ROUTE,)))
        assert not parsed_req(data).has_header("record-route")

    def test_disabled(self) -> None:
        """record_route = false adds none."""
        p = proxy(proxy=Proxy(record_route=False))
        _, _, data = one(p.handle(request(), inbound()))
        assert not parsed_req(data).has_header("record-route")

    def test_double_when_transports_differ(self) -> None:
        """UDP in and TCP out: two Record-Routes, the outbound side's first."""
        sets = [DestinationSet(name="uas", destinations=["sip:127.0.0.1:7000;transport=tcp"])]
        p = proxy(sets=sets)
        _, meta, data = one(p.handle(request(), inbound()))
        assert meta[0] == "tcp"
        assert parsed_req(data).header_values("record-route") == [
            f"<sip:{US}:{PORT};transport=tcp;lr>".encode(),
            f"<sip:{US}:{PORT};lr>".encode(),
        ]


class TestRouting:
    def test_loose_route_popped_next_route_is_hop(self) -> None:
        """Our Route is removed and the next loose Route is the next hop (§16.4, §16.6)."""
        raw = request(to_tag="t",
                      extra=(f"Route: <sip:{US}:{PORT};lr>, <sip:192.0.2.9:5090;lr>",))  # fmt: skip
        _, meta, data = forward(raw)
        req = parsed_req(data)
        assert meta[1:3] == ["192.0.2.9", 5090]
        assert req.header_values("route") == [b"<sip:192.0.2.9:5090;lr>"]
        assert req.uri.raw == "sip:bob@example.com"

    def test_all_our_routes_on_top_are_popped(self) -> None:
        """Every entry naming us on top of the Route set goes (a list of 200 costs one pass);
        the first other entry is the next hop (a pre-loaded Route: from a trusted source)."""
        ours = ", ".join([f"<sip:{US}:{PORT};lr>"] * 200)
        raw = request(extra=(f"Route: {ours}, <sip:192.0.2.9:5090;lr>, <sip:{US}:{PORT};lr>",))
        _, meta, data = forward_trusted(raw)
        assert meta[1:3] == ["192.0.2.9", 5090]
        assert parsed_req(data).header_values("route") == [
            b"<sip:192.0.2.9:5090;lr>", f"<sip:{US}:{PORT};lr>".encode()]  # fmt: skip

    def test_only_our_route_uses_table(self) -> None:
        """When our Route was the only one, the routing table picks the hop; no Route left."""
        raw = request(extra=(f"Route: <sip:{US}:{PORT};lr>",))
        _, meta, data = forward(raw)
        assert meta[1:3] == ["127.0.0.1", 7000]
        assert not parsed_req(data).has_header("route")

    def test_strict_router_compat(self) -> None:
        """R-URI is our RR URI: it is replaced by the last Route, which is removed (§16.4)."""
        raw = request(
            "BYE", f"sip:{US}:{PORT};lr", to_tag="t",
            extra=("Route: <sip:192.0.2.9:5090;lr>, <sip:bob@192.0.2.20:5070>",),
        )  # fmt: skip
        _, meta, data = forward(raw)
        req = parsed_req(data)
        assert req.uri.raw == "sip:bob@192.0.2.20:5070"
        assert req.header_values("route") == [b"<sip:192.0.2.9:5090;lr>"]
        assert meta[1:3] == ["192.0.2.9", 5090]

    def test_strict_next_hop(self) -> None:
        """A next Route without lr: it becomes the R-URI, the old R-URI the last Route."""
        raw = request(extra=("Route: <sip:192.0.2.9:5090>, <sip:192.0.2.10;lr>",))
        _, meta, data = forward_trusted(raw)
        req = parsed_req(data)
        assert req.uri.raw == "sip:192.0.2.9:5090"
        assert req.header_values("route") == [
            b"<sip:192.0.2.10;lr>",
            b"<sip:bob@example.com>",
        ]
        assert meta[1:3] == ["192.0.2.9", 5090]

    def test_in_dialog_goes_to_ruri(self) -> None:
        """An in-dialog BYE goes to its Request-URI (the remote target) after our Route."""
        raw = request("BYE", "sip:bob@192.0.2.30:5077", to_tag="t",
                      extra=(f"Route: <sip:{US}:{PORT};lr>",))  # fmt: skip
        _, meta, _ = forward(raw)
        assert meta[1:3] == ["192.0.2.30", 5077]

    def test_next_hop_transport_param(self) -> None:
        """transport=tcp on the next hop sends over TCP from our TCP listener."""
        raw = request(extra=("Route: <sip:192.0.2.9:5090;transport=tcp;lr>",))
        _, meta, data = forward_trusted(raw)
        assert meta == ["tcp", "192.0.2.9", 5090, 0, US, PORT]
        assert parsed_req(data).vias[0].transport == "TCP"

    @pytest.mark.parametrize(
        "route", ["<sip:192.0.2.9:5090;transport=tcp;lr>", "<sip:[2001:db8::1];lr>",
                  "<sip:192.0.2.9;transport=sctp;lr>"],
    )  # fmt: skip
    def test_unreachable_next_hop_gets_503(self, route: str) -> None:
        """A next hop over a transport or family we do not listen on gets 503."""
        p = proxy(listen=[Listener(transport="udp", address=US, port=PORT)], trusted=TRUSTED)
        _, _, data = one(p.handle(request(extra=(f"Route: {route}",)), inbound()))
        assert status(data) == 503

    def test_unreachable_ack_dropped(self) -> None:
        """An ACK that cannot be forwarded is dropped, not answered."""
        p = proxy(listen=[Listener(transport="udp", address=US, port=PORT)], trusted=TRUSTED)
        raw = request("ACK", extra=("Route: <sip:192.0.2.9;transport=tcp;lr>",))
        with pytest.raises(Drop, match="ack_503"):
            p.handle(raw, inbound())


class TestBody:
    def test_content_length_added_for_tcp(self) -> None:
        """A UDP request without Content-Length forwarded over TCP gets one."""
        sets = [DestinationSet(name="uas", destinations=["sip:127.0.0.1:7000;transport=tcp"])]
        p = proxy(sets=sets)
        raw = request(body=b"v=0\r\n", content_length=False)
        _, _, data = one(p.handle(raw, inbound()))
        req = parsed_req(data)
        assert req.header("content-length") == b"5" and req.body == b"v=0\r\n"

    def test_trailing_bytes_never_forwarded(self) -> None:
        """Bytes after Content-Length in a datagram are not forwarded (RFC 4475 dblreq)."""
        trailer = b"INVITE sip:joe@example.com SIP/2.0\r\nt: <sip:joe@example.com>\r\n\r\n"
        raw = request("REGISTER", "sip:example.com", trailer=trailer)
        _, _, data = forward(raw)
        assert b"joe@" not in data and data.endswith(b"\r\n\r\n")

    def test_body_untouched(self) -> None:
        """The body travels byte for byte."""
        body = bytes(range(256))
        _, _, data = forward(request(body=body))
        assert parsed_req(data).body == body


class TestResponses:
    def test_our_via_removed_sent_to_next(self) -> None:
        """Our Via is removed and the response goes to the next Via's sent-by."""
        _, meta, data = one(proxy().handle(response(180, [OUR_VIA, CLIENT_VIA]), inbound()))
        resp = parsed_resp(data)
        assert [v.branch for v in resp.vias] == ["z9hG4bKabc"]
        assert meta == ["udp", "10.0.0.1", 5070, 0, US, PORT]

    def test_received_and_rport(self) -> None:
        """received and rport of the next Via win over its sent-by (RFC 3581 §4)."""
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport=40000;received=10.9.9.9"
        _, meta, _ = one(proxy().handle(response(200, [OUR_VIA, via]), inbound()))
        assert meta[1:3] == ["10.9.9.9", 40000]

    def test_received_without_rport_uses_via_port(self) -> None:
        """received without rport: the received address, the sent-by port (§18.2.2)."""
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;received=10.9.9.9"
        _, meta, _ = one(proxy().handle(response(200, [OUR_VIA, via]), inbound()))
        assert meta[1:3] == ["10.9.9.9", 5070]

    def test_tcp_back_on_named_connection(self) -> None:
        """Over TCP the response goes back to the ingress and connection our Via names."""
        p = proxy()
        ours = OUR_VIA.replace("UDP", "TCP") + f";{CONN_PARAM}={p.tags.mint('ingress.2-77', 42)}"
        client = "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKabc"
        ing, meta, _ = one(p.handle(response(200, [ours, client]), inbound()))
        assert ing == "ingress.2-77"
        assert meta[0] == "tcp" and meta[3] == 42

    def test_multi_value_via_line(self) -> None:
        """Our Via sharing a line with the next one: only ours is removed."""
        raw = response(200, [f"{OUR_VIA}, {CLIENT_VIA}"])
        _, _, data = one(proxy().handle(raw, inbound()))
        assert [v.branch for v in parsed_resp(data).vias] == ["z9hG4bKabc"]

    def test_stray_dropped(self) -> None:
        """A response whose top Via is not ours is dropped (§16.11)."""
        with pytest.raises(Drop, match="stray"):
            proxy().handle(response(200, [CLIENT_VIA]), inbound())

    def test_our_address_foreign_branch_dropped(self) -> None:
        """Our address but a branch we never make: stray, dropped."""
        via = f"SIP/2.0/UDP {US}:{PORT};branch=z9hG4bKnotours"
        with pytest.raises(Drop, match="stray"):
            proxy().handle(response(200, [via, CLIENT_VIA]), inbound())

    def test_bcast_never_relayed(self) -> None:
        """RFC 4475 bcast: the top Via is not ours, so it is dropped, never relayed."""
        raw = response(200, ["SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1701109112",
                             "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1491280923"])  # fmt: skip
        with pytest.raises(Drop):
            proxy().handle(raw, inbound())

    @pytest.mark.parametrize("dst", ["255.255.255.255", "224.0.0.1", "0.0.0.0"])
    def test_never_to_broadcast(self, dst: str) -> None:
        """Even under our Via, a response is never relayed to a broadcast/multicast address."""
        raw = response(200, [OUR_VIA, f"SIP/2.0/UDP {dst};branch=z9hG4bK1"])
        with pytest.raises(Drop):
            proxy().handle(raw, inbound())

    def test_response_for_us_dropped(self) -> None:
        """A response with only our Via has nowhere to go: dropped."""
        with pytest.raises(Drop):
            proxy().handle(response(200, [OUR_VIA]), inbound())

    def test_malformed_dropped(self) -> None:
        """Unparsable input is dropped (the ingress already answered it)."""
        with pytest.raises(Drop, match="malformed"):
            proxy().handle(b"garbage\r\n\r\n", inbound())


class TestRoundTrip:
    def test_request_then_response(self) -> None:
        """A response to what we forwarded comes back to the client with its own Via on top."""
        p = proxy()
        _, _, out = one(p.handle(request(), inbound(src="10.9.9.9")))
        req = parsed_req(out)
        vias = [f"SIP/2.0/{v.transport} {v.raw.decode().split(' ', 1)[1]}" for v in req.vias]
        _, meta, back = one(p.handle(response(200, vias), inbound(src="127.0.0.1", port=7000)))
        assert meta[1:3] == ["10.9.9.9", 5070]
        assert parsed_resp(back).vias[0].branch == "z9hG4bKabc"


def test_route_ruri_user_rule() -> None:
    """The routing table's rule chooses the next hop."""
    sets = [DestinationSet(name="a", destinations=["sip:127.0.0.1:7001"]),
            DestinationSet(name="b", destinations=["sip:127.0.0.1:7002"])]  # fmt: skip
    routes = [Route(name="emerg", to="a", ruri_user="911"), Route(name="default", to="b")]
    p = proxy(sets=sets, routes=routes)
    assert one(p.handle(request(uri="sip:911@example.com"), inbound()))[1][2] == 7001
    assert one(p.handle(request(uri="sip:912@example.com"), inbound()))[1][2] == 7002


class TestForwardingProperty:
    @given(
        mf=st.one_of(st.none(), st.integers(1, 2**31)),
        transport=st.sampled_from(["udp", "tcp"]),
        rport=st.booleans(),
        src=st.sampled_from(["10.0.0.1", "10.9.9.9", "192.0.2.1"]),
        body=st.binary(max_size=200),
        method=st.sampled_from(["INVITE", "BYE", "OPTIONS", "MESSAGE", "REGISTER", "FOO"]),
        route_ours=st.booleans(),
    )
    def test_forwarded_copy_is_sound(
        self, mf: int | None, transport: str, rport: bool, src: str, body: bytes, method: str,
        route_ours: bool,
    ) -> None:  # fmt: skip
        """Any forwarded request parses, has one Via more, a lower Max-Forwards, the same body."""
        via = CLIENT_VIA + (";rport" if rport else "")
        extra = (f"Route: <sip:{US}:{PORT};lr>",) if route_ours else ()
        raw = request(method, via=via, max_forwards=mf, body=body, extra=extra)
        _, meta, data = one(proxy().handle(raw, inbound(transport, src=src, port=41000)))
        req = parsed_req(data)
        assert meta[0] == transport and meta[1:3] == ["127.0.0.1", 7000]
        assert len(req.vias) == 2 and req.vias[1].branch == "z9hG4bKabc"
        assert req.max_forwards == (70 if mf is None else min(mf, 256) - 1)
        assert req.body == body and req.method == method
        assert not req.has_header("route")
        if rport:
            assert req.vias[1].params["rport"] == "41000" and req.vias[1].received == src


def test_ratelimit_pipe_answers_503_with_retry_after() -> None:
    """An initial request over a [[ratelimit]] pipe's rate gets 503 with Retry-After, in
    stateless mode too; BYE is never limited; the next window admits again."""
    s = replace(settings(), ratelimit=[RateLimit(name="inv", limit_per_s=2, methods=["INVITE"],
                                                 retry_after_s=10)])  # fmt: skip
    p = StatelessProxy(s, RoutingTable(s))
    p.now = 100.0
    outs = [p.handle(request("INVITE", call_id=f"c{i}"), inbound())[0] for i in range(3)]
    assert [parsed_req(d).method for _, _, d in outs[:2]] == ["INVITE", "INVITE"]
    refused = parsed_resp(outs[2][2])
    assert refused.status == 503
    assert 8 <= int(refused.header("retry-after") or b"0") <= 12
    bye = p.handle(request("BYE", to_tag="x", call_id="c9", extra=(OUR_ROUTE,)), inbound())[0]
    assert parsed_req(bye[2]).method == "BYE"
    p.now = 101.5
    assert parsed_req(p.handle(request("INVITE", call_id="c4"), inbound())[0][2]).method == "INVITE"


# -- what mutation testing (./dev mutate proxy, docs/testing.md) found unasserted -------------

V6 = [Listener(transport="udp", address="::1", port=PORT),
      Listener(transport="udp", address=US, port=PORT)]  # fmt: skip


def drop_reason(p: StatelessProxy, raw: bytes, **inb: object) -> str:
    with pytest.raises(Drop) as exc:
        p.handle(raw, inbound(**inb))  # type: ignore[arg-type]
    return exc.value.reason


class TestDropReasons:
    """Each drop is counted under its own name: the reason is part of the contract."""

    @pytest.mark.parametrize(("vias", "reason"), [
        ([CLIENT_VIA], "stray_response"),
        ([OUR_VIA], "response_for_us"),
        ([OUR_VIA, "SIP/2.0/SCTP 10.0.0.1:5070;branch=z9hG4bK1"], "unsupported_transport"),
        ([OUR_VIA, "SIP/2.0/UDP client.example.com;branch=z9hG4bK1"], "via_needs_dns"),
        ([OUR_VIA, "SIP/2.0/UDP 224.0.0.1;branch=z9hG4bK1"], "via_not_unicast"),
        ([OUR_VIA, "SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1"], "no_listener"),
        ([f"{OUR_VIA};{CONN_PARAM}=ing.1-1-00", CLIENT_VIA], "forged_tag"),
    ])  # fmt: skip
    def test_response_drops(self, vias: list[str], reason: str) -> None:
        assert drop_reason(proxy(), response(200, vias)) == reason

    def test_malformed_and_ack_drops(self) -> None:
        assert drop_reason(proxy(), b"garbage\r\n\r\n") == "malformed"
        assert drop_reason(proxy(), request("ACK", max_forwards=0)) == "ack_483"

    def test_relay_refusals_are_counted_each(self) -> None:
        """Rule 10: every refused relay adds one to ``relay_refused``."""
        p = proxy()
        foreign = "Route: <sip:192.0.2.9:5060;lr>"
        for i in range(3):
            _, _, data = one(p.handle(request(extra=(foreign,), call_id=f"r{i}"), inbound()))
            assert status(data) == 403
        assert p.counters["relay_refused"] == 3


class TestWireForm:
    """What we add is written in the headers' canonical form (RFC 3261 §7.3.1 compact and
    case-folded forms are legal, but peers are seen to mis-parse them)."""

    def test_request_edits(self) -> None:
        via = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport"
        _, _, data = forward(request(via=via, max_forwards=10), src="10.9.9.9", port=41000)
        assert b"\r\nMax-Forwards: 9\r\n" in data
        assert f"\r\nVia: SIP/2.0/UDP {US}:{PORT};branch={BRANCH_PREFIX}".encode() in data
        assert b"\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;rport=41000;" \
               b"received=10.9.9.9\r\n" in data  # fmt: skip
        _, _, data = forward(request(max_forwards=None))
        assert b"\r\nMax-Forwards: 70\r\n" in data

    def test_via_without_port_and_flag_params(self) -> None:
        """The previous hop's Via is rewritten with what it had: no port invented, a flag
        parameter kept bare."""
        via = "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc;keep"
        _, _, data = forward(request(via=via), src="10.9.9.9")
        assert b"\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc;keep;received=10.9.9.9\r\n" in data

    def test_route_rewritten_in_place(self) -> None:
        """Our Route popped, the rest written back as one Route line where the first was."""
        rest = "<sip:192.0.2.9:5060;lr>, <sip:192.0.2.10:5060;lr>"
        raw = request(extra=(OUR_ROUTE, f"Route: {rest}"), to_tag="t")
        _, _, data = forward_trusted(raw)
        assert f"\r\nRoute: {rest}\r\n".encode() in data
        assert data.count(b"Route:") == 1 and b"XX" not in data

    def test_response_via_line_keeps_the_rest(self) -> None:
        raw = response(200, [f"{OUR_VIA}, {CLIENT_VIA}, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"])
        _, _, data = one(proxy().handle(raw, inbound()))
        assert f"\r\nVia: {CLIENT_VIA}, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2\r\n".encode() in data

    def test_retry_after_header(self) -> None:
        s = replace(settings(), ratelimit=[RateLimit(name="inv", limit_per_s=1,
                                                     methods=["INVITE"])])  # fmt: skip
        p = StatelessProxy(s, RoutingTable(s))
        p.handle(request(call_id="a"), inbound())
        _, _, data = one(p.handle(request(call_id="b"), inbound()))
        assert status(data) == 503 and b"\r\nRetry-After: " in data


class TestResponsesMore:
    def test_trailing_bytes_never_relayed(self) -> None:
        """A response is cut at the end of its body, by whichever entry point relays it."""
        raw = response(200, [OUR_VIA, CLIENT_VIA]) + b"junk after the body"
        p = proxy()
        _, _, data = one(p.handle(raw, inbound()))
        assert data.endswith(b"\r\n\r\n") and b"junk" not in data
        resp = parsed_resp(raw)
        assert p.response_out(resp, inbound()) == one(p.handle(raw, inbound()))
        popped = p.pop_via(resp)
        assert popped == data and [v.branch for v in parsed_resp(popped).vias] == ["z9hG4bKabc"]

    def test_default_ports(self) -> None:
        """A Via with no port means 5060, for a relayed response and for a local reply."""
        raw = response(200, [OUR_VIA, "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc"])
        assert one(proxy().handle(raw, inbound()))[1][2] == 5060
        via = "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKabc"
        _, meta, data = forward(request(via=via, max_forwards=0), port=40000)
        assert status(data) == 483 and meta[2] == 5060

    def test_received_in_brackets(self) -> None:
        """An IPv6 received value may come bracketed: the response goes to the address."""
        via = "SIP/2.0/UDP [::1]:5070;branch=z9hG4bKabc;received=[::1];rport=4000"
        ours = f"SIP/2.0/UDP [::1]:{PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
        _, meta, _ = one(proxy(listen=V6).handle(response(200, [ours, via]), inbound()))
        assert meta[:3] == ["udp", "::1", 4000] and meta[4] == "::1"

    def test_tls_via_names_port_5061(self) -> None:
        """Our address with no port over TLS means 5061 (§19.1.2), so that Via is ours."""
        p = proxy(listen=[Listener(transport="udp", address=US, port=5061)])
        ours = f"SIP/2.0/TLS {US};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
        _, meta, _ = one(p.handle(response(200, [ours, CLIENT_VIA]), inbound()))
        assert meta[1:3] == ["10.0.0.1", 5070]
        raw = request(extra=(f"Route: <sip:{US};transport=tls;lr>",), to_tag="t")
        _, meta, data = one(p.handle(raw, inbound()))  # our Route, popped: not a relay
        assert meta[1:3] == ["127.0.0.1", 7000] and not parsed_req(data).has_header("route")


class TestRequestsMore:
    def test_ipv6_listener_in_via_and_record_route(self) -> None:
        sets = [DestinationSet(name="uas", destinations=["sip:[::1]:7000"])]
        _, meta, data = one(proxy(listen=V6, sets=sets).handle(request(), inbound()))
        assert meta[:3] == ["udp", "::1", 7000]
        assert f"\r\nVia: SIP/2.0/UDP [::1]:{PORT};branch=".encode() in data
        assert f"\r\nRecord-Route: <sip:[::1]:{PORT};lr>\r\n".encode() in data

    def test_record_route_follows_each_request_s_listeners(self) -> None:
        """The Record-Route cache is keyed by the listeners: a request in (and so out) on
        TCP after a UDP one on the same proxy gets the TCP listener's, the next UDP one the
        UDP listener's."""
        p = proxy()
        udp = parsed_req(one(p.handle(request(call_id="u"), inbound()))[2])
        tcp = parsed_req(one(p.handle(request(call_id="t"), inbound("tcp")))[2])
        again = parsed_req(one(p.handle(request(call_id="v"), inbound()))[2])
        one_rr = [f"<sip:{US}:{PORT};lr>".encode()]
        assert udp.header_values("record-route") == one_rr == again.header_values("record-route")
        assert tcp.header_values("record-route") == [f"<sip:{US}:{PORT};transport=tcp;lr>".encode()]

    def test_record_route_names_the_listener_it_came_in_on(self) -> None:
        """In on TCP at a second address, out on UDP: the inbound Record-Route names the
        listener matching address, port and transport."""
        listen = [Listener(transport="udp", address=US, port=PORT),
                  Listener(transport="tcp", address=US, port=PORT + 1),
                  Listener(transport="udp", address="127.0.0.2", port=PORT + 1),
                  Listener(transport="tcp", address="127.0.0.2", port=PORT)]  # fmt: skip
        inb = Inbound("ing-1", "tcp", "10.0.0.1", 5070, 0, "127.0.0.2", PORT)
        sets = [DestinationSet(name="uas", destinations=["sip:127.0.0.1:7000;transport=udp"])]
        data = one(proxy(listen=listen, sets=sets).handle(request(), inb))[2]
        assert parsed_req(data).header_values("record-route") == [
            f"<sip:{US}:{PORT};lr>".encode(), f"<sip:127.0.0.2:{PORT};transport=tcp;lr>".encode()]

    def test_options_for_another_host_is_forwarded(self) -> None:
        """Only an OPTIONS whose Request-URI is us, with no user part, is ours to answer."""
        _, meta, data = forward(request("OPTIONS", "sip:example.com", max_forwards=5))
        assert parsed_req(data).method == "OPTIONS" and meta[1:3] == ["127.0.0.1", 7000]

    def test_rfc3261_branch_alone_names_the_transaction(self) -> None:
        """With the magic cookie, the client's branch and sent-by are the transaction key
        (§17.2.3): a request with the same branch but another Request-URI keeps the key part
        of our branch; without the cookie the request itself is the key (§16.11)."""
        def key(uri: str, via: str) -> str:
            return top_branch(forward(request(uri=uri, via=via))[2]).split(".")[0]
        cookie = "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKsame"
        assert key("sip:bob@example.com", cookie) == key("sip:carol@example.com", cookie)
        old = "SIP/2.0/UDP 10.0.0.1:5070;branch=1234"
        assert key("sip:bob@example.com", old) != key("sip:carol@example.com", old)

    def test_each_attempt_its_own_branch_same_loop_part(self) -> None:
        """Serial failover: every attempt of one request leaves with its own branch; the loop
        part, which hashes the request, is the same."""
        p = proxy()
        req = parsed_req(request())
        plan = p.plan(req, inbound())
        hop = parse_uri("sip:127.0.0.1:7000")
        branches = [p.forward(req, inbound(), plan, hop, attempt)[1] for attempt in range(3)]
        assert len({b.split(".")[0] for b in branches}) == 3
        assert len({b.split(".")[1] for b in branches}) == 1

    def test_refusals_say_why(self) -> None:
        """The error the proxy raises names its cause (the worker logs it)."""
        p = proxy(routes=[Route(name="nope", reject=480, reason="Gone Fishing")])
        with pytest.raises(SipError, match="^route nope$"):
            p.plan(parsed_req(request()), inbound())
        with pytest.raises(SipError, match="^no route$"):
            proxy(routes=[]).plan(parsed_req(request()), inbound())
        p = proxy(routes=[Route(name="ruri", to_request_uri=True)])
        with pytest.raises(SipError, match="^route ruri: the Request-URI names no address"):
            p.plan(parsed_req(request()), inbound())
        with pytest.raises(SipError, match="^the request names its next hop and its source "):
            proxy().plan(parsed_req(request(extra=("Route: <sip:192.0.2.9;lr>",))), inbound())
        p = proxy()
        out = one(p.handle(request(), inbound()))[2]
        with pytest.raises(SipError, match="^request looped back$"):
            p.forward(parsed_req(out), inbound(), p.plan(parsed_req(out), inbound()),
                      parse_uri("sip:127.0.0.1:7000"))  # fmt: skip


class TestRateLimitMatching:
    def limited(self, s_routes: list[Route], pipe: RateLimit, trusted: list[Trusted],
                raws: list[bytes], **inb: object) -> list[int]:
        s = replace(settings(routes=s_routes, trusted=trusted), ratelimit=[pipe])
        p = StatelessProxy(s, RoutingTable(s))
        out = []
        for raw in raws:
            data = one(p.handle(raw, inbound(**inb)))[2]  # type: ignore[arg-type]
            out.append(parsed_resp(data).status if data.startswith(b"SIP/2.0") else 0)
        return out

    def test_pipe_bound_to_the_route_a_request_takes(self) -> None:
        """A pipe bound to a route counts what that route would take: the route is matched
        on method, source and trusted source (address, transport, port)."""
        routes = [Route(name="inv", to="uas", methods=["INVITE"], source="10.0.0.0/8",
                        trusted=True), Route(name="default", to="uas")]  # fmt: skip
        trusted = [Trusted(cidr="10.0.0.1", transport="udp", port=5070)]
        pipe = RateLimit(name="p", limit_per_s=1, route="inv", source="10.0.0.0/8")
        invites = [request(call_id=f"i{i}") for i in range(2)]
        assert self.limited(routes, pipe, trusted, invites) == [0, 503]
        # another port or transport: not the trusted source, so not that route, not the pipe
        assert self.limited(routes, pipe, trusted, invites, port=5071) == [0, 0]
        assert self.limited(routes, pipe, trusted, invites, transport="tcp") == [0, 0]
        messages = [request("MESSAGE", call_id=f"m{i}") for i in range(2)]
        assert self.limited(routes, pipe, trusted, messages) == [0, 0]

    def test_no_route_matches(self) -> None:
        """With pipes configured, a request no route takes is still answered 404."""
        pipe = RateLimit(name="p", limit_per_s=1, route="inv")
        routes = [Route(name="inv", to="uas", methods=["INVITE"])]
        assert self.limited(routes, pipe, [], [request("MESSAGE")]) == [404]


class TestMoreFromMutants:
    """Second batch from ./dev mutate proxy."""

    def test_refusals_say_why_more(self) -> None:
        p = proxy()
        with pytest.raises(SipError, match="^Max-Forwards is 0$"):
            p.plan(parsed_req(request(max_forwards=0)), inbound())
        with pytest.raises(SipError, match="^scheme soap.beep$"):
            p.plan(parsed_req(request(uri="soap.beep://192.0.2.103:3002")), inbound())
        with pytest.raises(SipError, match="^unsupported Proxy-Require$"):
            p.plan(parsed_req(request(extra=("Proxy-Require: foo",))), inbound())
        req = parsed_req(request())
        plan = p.plan(req, inbound())
        with pytest.raises(SipError, match="^next hop 'example.com' is not an IP address$"):
            p.forward(req, inbound(), plan, parse_uri("sip:example.com"))
        with pytest.raises(SipError, match="^no sctp transport$"):
            p.forward(req, inbound(), plan, parse_uri("sip:127.0.0.1;transport=sctp"))
        with pytest.raises(SipError, match=r"^no udp listener for ::1$"):
            p.forward(req, inbound(), plan, parse_uri("sip:[::1]:7000"))
        s = replace(settings(), ratelimit=[RateLimit(name="one", limit_per_s=1)])
        p = StatelessProxy(s, RoutingTable(s))
        p.plan(parsed_req(request(call_id="a")), inbound())
        with pytest.raises(SipError, match="^over the rate of pipe one$"):
            p.plan(parsed_req(request(call_id="b")), inbound())

    def test_420_and_200_on_the_wire(self) -> None:
        _, _, data = forward(request(extra=("Proxy-Require: foo, bar",)))
        assert data.startswith(b"SIP/2.0 420 ") and b"\r\nUnsupported: foo, bar\r\n" in data
        _, _, data = forward(request("OPTIONS", f"sip:{US}:{PORT}"))
        assert data.startswith(b"SIP/2.0 200 OK\r\n")
        _, _, data = forward(request(content_length=False), transport="tcp")
        assert b"\r\nContent-Length: 0\r\n" in data

    def test_plan_fields(self) -> None:
        """plan() (the stateful core's entry) says exactly what changed and what it picked."""
        p = proxy(trusted=TRUSTED)
        req = parsed_req(request("OPTIONS", f"sip:{US}:{PORT}"))
        local = p.plan(req, inbound())
        assert (local.routes, local.changed, local.uri, local.uri_changed, local.hop) == (
            [], False, req.uri, False, None)
        plain = p.plan(parsed_req(request()), inbound())
        assert (plain.changed, plain.uri_changed, plain.hop) == (False, False, None)
        assert plain.route is not None and plain.target is not None
        routed = p.plan(parsed_req(request(extra=("Route: <sip:192.0.2.9;lr>",))), inbound())
        assert routed.hop is not None and routed.route is None and routed.target is None

    def test_in_dialog_relay_needs_trust_or_a_known_dialog(self) -> None:
        """Rule 10: an in-dialog request to a foreign remote target is refused (404) unless
        the stateful core knows its dialog (``known``); an ACK is then dropped as relay_ack."""
        p = proxy()
        raw = request("BYE", "sip:bob@192.0.2.9:5080", to_tag="t")
        with pytest.raises(SipError, match="source is not trusted"):
            p.plan(parsed_req(raw), inbound())
        assert status(one(p.handle(raw, inbound()))[2]) == 404
        _, meta, data = p.request_out(parsed_req(raw), inbound(), known=True)
        assert parsed_req(data).method == "BYE" and meta[1:3] == ["192.0.2.9", 5080]
        ack = request("ACK", "sip:bob@192.0.2.9:5080", to_tag="t",
                      extra=("Route: <sip:192.0.2.9;lr>",))  # fmt: skip
        assert drop_reason(p, ack) == "relay_ack"

    def test_ack_through_our_route_goes_to_its_request_uri(self) -> None:
        """An ACK that popped our Route follows the route set to the remote target (§16.11),
        one that did not uses the table (rule 6)."""
        raw = request("ACK", "sip:bob@192.0.2.9:5080", to_tag="t", extra=(OUR_ROUTE,))
        assert forward(raw)[1][1:3] == ["192.0.2.9", 5080]

    def test_strict_router_keeps_every_route_but_the_last(self) -> None:
        raw = request("BYE", f"sip:{US}:{PORT}", to_tag="t", extra=(
            "Route: <sip:192.0.2.1;lr>, <sip:192.0.2.2;lr>, <sip:bob@192.0.2.9:5080>",))
        _, meta, data = forward(raw)
        req = parsed_req(data)
        assert meta[1:3] == ["192.0.2.1", 5060] and req.uri.raw == "sip:bob@192.0.2.9:5080"
        assert req.header_values("route") == [b"<sip:192.0.2.1;lr>", b"<sip:192.0.2.2;lr>"]

    def test_route_matched_on_trusted_transport_and_port(self) -> None:
        sets = [DestinationSet(name="a", destinations=["sip:127.0.0.1:7001"]),
                DestinationSet(name="b", destinations=["sip:127.0.0.1:7002"])]  # fmt: skip
        routes = [Route(name="t", to="a", trusted=True), Route(name="default", to="b")]
        p = proxy(sets=sets, routes=routes,
                  trusted=[Trusted(cidr="10.0.0.1", transport="udp", port=5070)])  # fmt: skip
        assert one(p.handle(request(call_id="1"), inbound()))[1][2] == 7001
        assert one(p.handle(request(call_id="2"), inbound(port=5071)))[1][2] == 7002
        assert one(p.handle(request(call_id="3"), inbound("tcp")))[1][2] == 7002

    def test_pre_routed_request_counts_against_no_route_bound_pipe(self) -> None:
        routes = [Route(name="inv", to="uas", methods=["INVITE"])]
        pipe = RateLimit(name="p", limit_per_s=1, route="inv")
        raws = [request(call_id=f"c{i}", extra=("Route: <sip:127.0.0.1:7000;lr>",))
                for i in range(2)]  # fmt: skip
        assert TestRateLimitMatching().limited(routes, pipe, TRUSTED, raws) == [0, 0]

    def test_feedback_pipes_see_the_worker_load(self) -> None:
        """The proxy hands the worker's busy ratio to the pipes: a feedback pipe passes its
        whole limit when idle and less when saturated."""
        def passed(load: float | None) -> int:
            s = replace(settings(), ratelimit=[RateLimit(name="fb", algorithm="feedback",
                                                         limit_per_s=10)])  # fmt: skip
            p = StatelessProxy(s, RoutingTable(s))
            p.now = 50.0
            if load is not None:
                p.load = load
            outs = [one(p.handle(request(call_id=f"c{i}"), inbound()))[2] for i in range(12)]
            return sum(not d.startswith(b"SIP/2.0") for d in outs)
        assert passed(None) == passed(0.0) == 10
        assert passed(1.0) < 10

    def test_port_5060_is_the_default_for_our_address(self) -> None:
        """A Route naming our address without a port is ours when we listen on 5060."""
        p = proxy(listen=[Listener(transport="udp", address=US, port=5060)])
        raw = request("BYE", to_tag="t", extra=(f"Route: <sip:{US};lr>",))
        _, meta, data = one(p.handle(raw, inbound()))
        assert meta[1:3] == ["127.0.0.1", 7000] and not parsed_req(data).has_header("route")

    def test_record_route_when_arriving_on_an_unknown_address(self) -> None:
        """Arrived on an address that is not a listener (a virtual one): the outbound
        listener alone is recorded."""
        inb = Inbound("ing-1", "udp", "10.0.0.1", 5070, 0, "127.0.0.5", PORT)
        data = one(proxy().handle(request(), inb))[2]
        assert parsed_req(data).header_values("record-route") == [f"<sip:{US}:{PORT};lr>".encode()]

    def test_nodes_sharing_a_key_verify_each_other_s_tags(self) -> None:
        """The sl-c tag key is the node key: a proxy given it verifies what another minted."""
        key = bytes(range(32))
        s = settings()
        a, b = StatelessProxy(s, RoutingTable(s), key), StatelessProxy(s, RoutingTable(s), key)
        ours = OUR_VIA.replace("UDP", "TCP") + f";{CONN_PARAM}={a.tags.mint('ing-2', 7)}"
        ing, meta, _ = one(b.handle(response(200, [ours, CLIENT_VIA.replace("UDP", "TCP")]),
                                    inbound()))  # fmt: skip
        assert (ing, meta[3]) == ("ing-2", 7)

    def test_received_when_via_is_not_the_first_header(self) -> None:
        raw = request().replace(b"\r\nVia: ", b"\r\nX-First: 1\r\nVia: ", 1)
        _, _, data = forward(raw, src="10.9.9.9")
        assert parsed_req(data).vias[1].received == "10.9.9.9"

    def test_received_on_a_folded_via_line(self) -> None:
        """A folded Via line cannot be patched in place: it is written anew, values kept."""
        rest = "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK2"
        raw = request(via=f"SIP/2.0/UDP 10.0.0.1:5070\r\n ;branch=z9hG4bKabc, {rest}")
        _, _, data = forward(raw, src="10.9.9.9")
        assert (b"\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc;received=10.9.9.9, "
                + rest.encode() + b"\r\n") in data  # fmt: skip

    def test_received_patches_the_top_via_only(self) -> None:
        """The same text elsewhere (another header, a second Via value) is left alone."""
        via = CLIENT_VIA
        raw = request(via=f"{via}, {via}", extra=(f"X-After: {via}",)).replace(
            b"\r\nVia: ", f"\r\nX-Before: {via}\r\nVia: ".encode(), 1)
        _, _, data = forward(raw, src="10.9.9.9")
        assert f"\r\nX-Before: {via}\r\n".encode() in data
        assert f"\r\nX-After: {via}\r\n".encode() in data
        assert f"\r\nVia: {via};received=10.9.9.9, {via}\r\n".encode() in data
