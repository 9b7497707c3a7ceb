"""No open relay (workers/proxy.py rule 10), through the proxy cores without sockets, in the
stateless and the stateful mode: a next hop a request names itself is taken only from a
trusted source, through our Record-Route, or for a dialog we hold."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.settings import DestinationSet, Proxy, Route, Trusted
from ingress.sip.serialize import build_response
from workers.proxy import Inbound, Out, StatelessProxy
from workers.refusals import Drop
from workers.routing.table import RoutingTable
from workers.routing.trusted import MEMO_MAX, TrustedSources
from workers.stateful import StatefulProxy

from .dialog_helpers import Call, dialog_settings
from .helpers import PORT, US, inbound, parsed_req, parsed_resp, request, settings

UAS = ("127.0.0.1", 7000)  # the configured destination (helpers.UAS)
VICTIM = "127.0.0.9"  # an address the attacker wants reached through us
OUR_ROUTE = f"Route: <sip:{US}:{PORT};lr>"
SRC = "10.0.0.1"  # helpers.inbound's default source

Send = Callable[[bytes, Inbound], list[Out]]


def core(mode: str, **kw: object) -> tuple[Send, StatelessProxy]:
    """``send(raw, inb)`` through a core of ``mode``, and its stateless part (counters)."""
    s = settings(**kw)  # type: ignore[arg-type]
    s = replace(s, proxy=Proxy(mode=mode))  # type: ignore[arg-type]
    sl = StatelessProxy(s, RoutingTable(s))
    if mode == "stateless":
        return sl.handle, sl
    sf = StatefulProxy(s, sl)
    return (lambda raw, inb: sf.handle(raw, inb, 0.0)), sl


MODES = pytest.mark.parametrize("mode", ["stateless", "stateful"])


def sent(outs: list[Out]) -> tuple[list[int], list[tuple[str, int]]]:
    """(statuses answered, (ip, port) of every request forwarded)."""
    answers, forwarded = [], []
    for _, meta, data in outs:
        if data.startswith(b"SIP/2.0"):
            answers.append(parsed_resp(data).status)
        else:
            forwarded.append((str(meta[1]), int(str(meta[2]))))
    return answers, forwarded


def final(outs: list[Out]) -> tuple[int | None, list[tuple[str, int]]]:
    """(the final status answered or None, where requests went); 100 Trying is left out."""
    answers, forwarded = sent(outs)
    finals = [a for a in answers if a >= 200]
    assert len(finals) <= 1, answers
    return (finals[0] if finals else None), forwarded


def via(branch: str) -> str:
    """A Via of its own, so the stateful core takes each request for a new transaction."""
    return f"SIP/2.0/UDP {SRC}:5070;branch=z9hG4bK{branch}"


def bye(uri: str = f"sip:bob@{VICTIM}:5060", *extra: str, branch: str = "bye") -> bytes:
    return request("BYE", uri, to_tag="t1", extra=extra, via=via(branch))


@MODES
class TestInDialog:
    def test_foreign_target_without_our_route_gets_404(self, mode: str) -> None:
        """An in-dialog request with no Route of ours, to an address that is not ours, is a
        relay attempt: 404, nothing forwarded, counted."""
        send, sl = core(mode)
        assert final(send(bye(), inbound())) == (404, [])
        assert sl.counters["relay_refused"] == 1

    def test_foreign_route_not_ours_gets_404(self, mode: str) -> None:
        """An in-dialog request whose top Route is someone else's is refused too."""
        send, _ = core(mode)
        raw = bye(f"sip:bob@{US}:{PORT}", f"Route: <sip:{VICTIM};lr>")
        assert final(send(raw, inbound())) == (404, [])

    def test_ack_with_foreign_route_dropped_and_counted(self, mode: str) -> None:
        """An ACK is never answered: a relay attempt is dropped as ``relay_ack``."""
        send, sl = core(mode)
        raw = request("ACK", f"sip:bob@{VICTIM}", to_tag="t1", extra=(f"Route: <sip:{VICTIM};lr>",))
        with pytest.raises(Drop, match="relay_ack"):
            send(raw, inbound())
        assert sl.counters["relay_refused"] == 1

    def test_ack_without_route_goes_to_the_table(self, mode: str) -> None:
        """An ACK naming no route set (a non-2xx ACK in stateless mode) goes where the
        routing table sends its INVITE, a configured destination, never its Request-URI."""
        send, _ = core(mode)
        raw = request("ACK", f"sip:bob@{VICTIM}", to_tag="t1")
        assert final(send(raw, inbound())) == (None, [UAS])

    def test_our_loose_route_reaches_the_remote_target(self, mode: str) -> None:
        """Our Record-Route, popped: the Request-URI is the remote target (§16.4, §12.2.1.1)."""
        send, sl = core(mode)
        assert final(send(bye(f"sip:bob@{VICTIM}:5077", OUR_ROUTE), inbound())) == (
            None, [(VICTIM, 5077)])  # fmt: skip
        assert sl.counters["relay_refused"] == 0

    def test_strict_router_form_is_ours(self, mode: str) -> None:
        """A strict router put our Record-Route in the Request-URI: the last Route is the
        remote target (§16.4)."""
        send, _ = core(mode)
        raw = bye(f"sip:{US}:{PORT};lr", f"Route: <sip:bob@{VICTIM}:5077>")
        assert final(send(raw, inbound())) == (None, [(VICTIM, 5077)])

    @pytest.mark.parametrize("method", ["BYE", "ACK", "INFO"])
    def test_addressed_to_us_goes_to_the_table(self, mode: str, method: str) -> None:
        """sipp's built-in UAC, when we do not Record-Route, sends its ACK and BYE to
        ``sip:service@<proxy>`` with no Route: they name us, so the table routes them to a
        configured destination; no relay."""
        send, _ = core(mode)
        raw = request(method, f"sip:service@{US}:{PORT}", to_tag="t1")
        assert final(send(raw, inbound())) == (None, [UAS])

    def test_trusted_source_names_the_target(self, mode: str) -> None:
        """A [[trusted]] source's in-dialog request goes to its Request-URI without our Route."""
        send, _ = core(mode, trusted=[Trusted(cidr="10.0.0.0/24")])
        assert final(send(bye(), inbound())) == (None, [(VICTIM, 5060)])
        assert final(send(bye(branch="2"), inbound(src="10.0.1.1"))) == (404, [])

    def test_host_name_target_gets_404(self, mode: str) -> None:
        """A host-name remote target without our Route is refused like an address."""
        send, _ = core(mode)
        assert final(send(bye("sip:bob@victim.example.com"), inbound())) == (404, [])


@MODES
class TestPreloadedRoute:
    @pytest.mark.parametrize("routes", [f"<sip:{VICTIM};lr>", f"<sip:{US}:{PORT};lr>, <sip:{VICTIM};lr>",
                                        f"<sip:{VICTIM}>"])  # fmt: skip
    def test_untrusted_gets_403(self, mode: str, routes: str) -> None:
        """An initial request with a Route that is not ours (after ours, or strict) gets 403
        and nothing leaves."""
        send, sl = core(mode)
        assert final(send(request(extra=(f"Route: {routes}",)), inbound())) == (403, [])
        assert sl.counters["relay_refused"] == 1

    @pytest.mark.parametrize("method", ["CANCEL", "OPTIONS", "MESSAGE", "REGISTER"])
    def test_every_method(self, mode: str, method: str) -> None:
        """Not only INVITE: any initial request with a pre-loaded Route is refused."""
        send, _ = core(mode)
        raw = request(method, extra=(f"Route: <sip:{VICTIM};lr>",))
        assert final(send(raw, inbound())) == (403, [])

    def test_trusted_is_forwarded(self, mode: str) -> None:
        """From a [[trusted]] source the pre-loaded Route is the next hop."""
        send, _ = core(mode, trusted=[Trusted(cidr="10.0.0.1")])
        raw = request(extra=(f"Route: <sip:{VICTIM}:5090;lr>",))
        assert final(send(raw, inbound()))[1] == [(VICTIM, 5090)]

    @pytest.mark.parametrize(("entry", "trusted"), [
        (Trusted(cidr="10.0.0.1", transport="tcp"), False),
        (Trusted(cidr="10.0.0.1", transport="udp"), True),
        (Trusted(cidr="10.0.0.1", port=5071), False),
        (Trusted(cidr="10.0.0.1", port=5070), True),
        (Trusted(cidr="::1"), False),
    ])  # fmt: skip
    def test_transport_and_port_must_match(self, mode: str, entry: Trusted, trusted: bool) -> None:
        """A [[trusted]] table's transport and port, when set, must be the source's."""
        send, _ = core(mode, trusted=[entry])
        status, forwarded = final(send(request(extra=(f"Route: <sip:{VICTIM};lr>",)), inbound()))
        assert (status, forwarded) == ((None, [(VICTIM, 5060)]) if trusted else (403, []))

    def test_only_our_route_uses_the_table(self, mode: str) -> None:
        """A Route that is only ours is popped, and the table routes the request."""
        send, _ = core(mode)
        assert final(send(request(extra=(OUR_ROUTE,)), inbound())) == (None, [UAS])


NO_MATCH = [Route(name="only-pbx", to="uas", source="192.0.2.0/24")]


@MODES
class TestRouteActions:
    def test_no_route_never_relays(self, mode: str) -> None:
        """A request no route matches gets 404 even when its Request-URI is an address."""
        send, _ = core(mode, routes=NO_MATCH)
        raw = request(uri=f"sip:bob@{VICTIM}:5088")
        assert final(send(raw, inbound())) == (404, [])

    def test_to_request_uri_relays_for_its_sources(self, mode: str) -> None:
        """A to_request_uri route sends to the Request-URI, only for what it matches."""
        routes = [Route(name="pbx", to_request_uri=True, trusted="pbx")]
        send, _ = core(mode, routes=routes, trusted=[Trusted(cidr="10.0.0.1", tag="pbx"),
                                                     Trusted(cidr="10.0.0.2", tag="other")])
        for src, expected in [("10.0.0.1", (None, [(VICTIM, 5088)])), ("10.0.0.2", (404, [])),
                              ("10.0.0.3", (404, []))]:  # fmt: skip
            raw = request(uri=f"sip:bob@{VICTIM}:5088", via=via(src))
            assert final(send(raw, inbound(src=src))) == expected, src

    @pytest.mark.parametrize("uri", [f"sip:bob@{US}:{PORT}", "sip:bob@example.com"])
    def test_to_request_uri_needs_an_address_not_ours(self, mode: str, uri: str) -> None:
        """to_request_uri never sends back to us (a loop) nor by name: 404."""
        send, _ = core(mode, routes=[Route(name="r", to_request_uri=True)])
        assert final(send(request(uri=uri), inbound())) == (404, [])

    def test_trusted_true_matches_any_table(self, mode: str) -> None:
        """``trusted = true`` matches a source of any [[trusted]] table, tagged or not."""
        routes = [Route(name="t", to_request_uri=True, trusted=True), Route(name="d", to="uas")]
        send, _ = core(mode, routes=routes, trusted=[Trusted(cidr="10.0.0.1")])
        raw = request(uri=f"sip:bob@{VICTIM}")
        assert final(send(raw, inbound()))[1] == [(VICTIM, 5060)]
        assert final(send(request(uri=f"sip:bob@{VICTIM}", via=via("2")),
                          inbound(src="10.0.0.7")))[1] == [UAS]  # fmt: skip

    def test_reject_answers_its_status_and_reason(self, mode: str) -> None:
        """A reject route answers its status and reason; an ACK it matches is dropped."""
        routes = [Route(name="block", reject=603, reason="Go Away", source="10.0.0.0/8"),
                  Route(name="d", to="uas")]  # fmt: skip
        send, _ = core(mode, routes=routes)
        outs = send(request(), inbound())
        resp = parsed_resp(next(d for _, _, d in outs if d.startswith(b"SIP/2.0 6")))
        assert (resp.status, resp.reason) == (603, "Go Away")
        assert final(outs)[1] == []
        assert final(send(request(via=via("2")), inbound(src="192.0.2.1")))[1] == [UAS]
        with pytest.raises(Drop, match="ack_603"):
            send(request("ACK", to_tag="x", extra=(OUR_ROUTE,), via=via("3")), inbound())

    def test_reject_default_reason(self, mode: str) -> None:
        """Without a reason the status's standard phrase is used."""
        send, _ = core(mode, routes=[Route(name="b", reject=403)])
        outs = send(request(), inbound())
        assert parsed_resp(outs[-1][2]).reason == "Forbidden"


def test_to_request_uri_route_takes_its_mode() -> None:
    """A stateful to_request_uri route in a stateless node relays in a transaction: 100
    Trying at once."""
    s = settings(routes=[Route(name="r", to_request_uri=True, mode="stateful")])
    p = StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))
    answers, forwarded = sent(p.handle(request(uri=f"sip:bob@{VICTIM}"), inbound(), 0.0))
    assert answers == [100] and forwarded == [(VICTIM, 5060)]


class TestDialogKnown:
    """With [dialogs] on, an in-dialog request of a dialog we hold may come without our
    Route (a UA that ignored Record-Route), to the remote target the dialog holds."""

    def call(self) -> tuple[StatefulProxy, Call]:
        s = replace(dialog_settings(), proxy=Proxy(mode="stateful"))
        p = StatefulProxy(s, StatelessProxy(s, RoutingTable(s)))
        c = Call()
        outs = p.handle(c.invite().raw, inbound(), 0.0)
        fwd = parsed_req(next(d for _, m, d in outs if m[1] == UAS[0] and m[2] == UAS[1]))
        ok = build_response(fwd, 200, "OK", to_tag=c.ttag(),
                            extra_headers=(f"Contact: <sip:bob@{UAS[0]}:{UAS[1]}>".encode(),))  # fmt: skip
        p.handle(ok, inbound(src=UAS[0], port=UAS[1]), 0.1)
        assert p.dialogs is not None and len(p.dialogs) == 1
        return p, c

    def bye(self, c: Call, uri: str, from_caller: bool = True) -> bytes:
        return c._request("BYE", uri, 2, c.ttag(), from_caller, ()).raw

    def test_to_the_callee_target(self) -> None:
        """The caller's BYE to the callee's Contact goes there and ends the dialog."""
        p, c = self.call()
        outs = p.handle(self.bye(c, f"sip:bob@{UAS[0]}:{UAS[1]}"), inbound(), 1.0)
        assert final(outs) == (None, [UAS])
        assert p.dialogs is not None and len(p.dialogs) == 0

    def test_to_the_caller_target(self) -> None:
        """The callee's BYE to the caller's Contact goes there."""
        p, c = self.call()
        raw = self.bye(c, f"sip:alice@{SRC}:5070", from_caller=False)
        assert final(p.handle(raw, inbound(src=UAS[0], port=UAS[1]), 1.0)) == (None, [(SRC, 5070)])

    def test_elsewhere_gets_404_and_the_call_lives_on(self) -> None:
        """The dialog's identifiers with another target: 404, and the refused BYE ends no
        call (its CDR comes with the real BYE)."""
        p, c = self.call()
        assert final(p.handle(self.bye(c, f"sip:bob@{VICTIM}:7000"), inbound(), 1.0)) == (404, [])
        assert p.dialogs is not None and len(p.dialogs) == 1 and not p.dialogs.cdrs

    def test_unknown_dialog_gets_404(self) -> None:
        """Right target, but identifiers of no dialog held: 404."""
        p, _ = self.call()
        other = Call(n=2)
        raw = other._request("BYE", f"sip:bob@{UAS[0]}:{UAS[1]}", 2, other.ttag(), True, ()).raw
        assert final(p.handle(raw, inbound(), 1.0)) == (404, [])


class TestTrustedSources:
    def test_tags_of_every_matching_entry(self) -> None:
        """A source gets the tags of all the entries it matches; "" stands for no tag."""
        t = TrustedSources([Trusted(cidr="10.0.0.0/8", tag="net"), Trusted(cidr="10.0.0.1"),
                            Trusted(cidr="10.0.0.1", transport="tcp", tag="tcp-only")])  # fmt: skip
        assert t.tags("10.0.0.1", "udp", 5060) == frozenset({"net", ""})
        assert t.tags("10.0.0.1", "tcp", 5060) == frozenset({"net", "", "tcp-only"})
        assert t.tags("10.9.0.1", "udp", 1) == frozenset({"net"})
        assert t.tags("11.0.0.1", "udp", 5060) is None

    def test_ipv6_and_families_apart(self) -> None:
        """An IPv6 CIDR matches IPv6 sources only."""
        t = TrustedSources([Trusted(cidr="2001:db8::/32", tag="v6")])
        assert t.tags("2001:db8::5", "udp", 5060) == frozenset({"v6"})
        assert t.tags("10.0.0.1", "udp", 5060) is None
        assert t.tags("not-an-address", "udp", 5060) is None

    def test_empty_table_trusts_nobody(self) -> None:
        """No [[trusted]] table: nobody, and no work per message."""
        t = TrustedSources([])
        assert t.tags("127.0.0.1", "udp", 5060) is None

    def test_memo_is_bounded(self) -> None:
        """Sources are the peer's choice: the memo never holds more than MEMO_MAX."""
        t = TrustedSources([Trusted(cidr="10.0.0.0/8")])
        for i in range(MEMO_MAX + 10):
            t.tags(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "udp", 5060)
        assert len(t._memo) <= MEMO_MAX
        assert t.tags("10.0.0.1", "udp", 5060) == frozenset({""})


@given(
    mode=st.sampled_from(["stateless", "stateful"]),
    method=st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE", "INFO"]),
    to_tag=st.sampled_from([None, "t1"]),
    ruri=st.sampled_from([f"sip:bob@{VICTIM}:5077", f"sip:{VICTIM}", "sip:bob@example.com",
                          f"sip:service@{US}:{PORT}", f"sip:bob@{VICTIM};transport=tcp",
                          "tel:+15551234"]),
    routes=st.lists(st.sampled_from([f"<sip:{VICTIM};lr>", f"<sip:{VICTIM}:5090>",
                                     "<sip:victim.example.com;lr>", f"<sip:bob@{VICTIM}:5070>"]),
                    max_size=3),
)  # fmt: skip
def test_untrusted_requests_never_reach_what_they_name(mode: str, method: str,
                                                       to_tag: str | None, ruri: str,
                                                       routes: list[str]) -> None:  # fmt: skip
    """Whatever an untrusted source writes in its Request-URI and Route headers, short of
    the forms our Record-Route takes (a Route, or a user-less Request-URI, naming us), what
    leaves goes to the configured destination or back to the source: the shipped-style
    table relays for nobody."""
    send, _ = core(mode)
    extra = (f"Route: {', '.join(routes)}",) if routes else ()
    try:
        outs = send(request(method, ruri, to_tag=to_tag, extra=extra), inbound())
    except Drop:
        return
    for _, meta, _ in outs:
        assert (meta[1], meta[2]) in (UAS, (SRC, 5070)), (meta, method, ruri, routes)


def test_destination_set_routes_unaffected() -> None:
    """Routes that name a set keep their sticky pick (the relay rule changes nothing there)."""
    sets = [DestinationSet(name="uas", destinations=["sip:127.0.0.1:7001", "sip:127.0.0.1:7002"])]
    send, _ = core("stateless", sets=sets)
    first = final(send(request(call_id="c1"), inbound()))[1]
    assert final(send(request("CANCEL", call_id="c1"), inbound()))[1] == first
