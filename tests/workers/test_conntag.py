"""The ``sl-c`` Via tag (workers/conntag.py) and how the proxy routes a response by it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.conntag import MAC_BYTES, ConnTags
from workers.proxy import BRANCH_PREFIX, CONN_PARAM, StatelessProxy
from workers.refusals import Drop
from workers.routing.table import RoutingTable

from .helpers import PORT, US, inbound, one, parsed_req, request, response, settings

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
OUR_TCP_VIA = f"SIP/2.0/TCP {US}:{PORT};branch={BRANCH_PREFIX}0123456789abcdef.01234567"
CLIENT_TCP_VIA = "SIP/2.0/TCP 10.0.0.1:5070;branch=z9hG4bKabc;received=10.0.0.1;rport=40000"


class TestTags:
    def test_round_trip(self) -> None:
        """A minted tag verifies to the ingress and connection it names."""
        tags = ConnTags(KEY)
        assert tags.verify(tags.mint("ingress.1-4242", 17)) == ("ingress.1-4242", 17)

    def test_bare_id_refused(self) -> None:
        """The old unauthenticated form, ``<ingress>~<conn>``, is refused."""
        assert ConnTags(KEY).verify("ingress.1-4242~17") is None

    def test_forged_mac_refused(self) -> None:
        """Any other mac of the right length is refused."""
        tags = ConnTags(KEY)
        good = tags.mint("ingress.1-4242", 17)
        forged = good[:-1] + ("0" if good[-1] != "0" else "1")
        assert tags.verify(forged) is None
        assert tags.verify("ingress.1-4242~17~" + "0" * 2 * MAC_BYTES) is None

    def test_truncated_refused(self) -> None:
        """A tag cut short (or padded) is refused, whatever length."""
        tags = ConnTags(KEY)
        good = tags.mint("ingress.1-4242", 17)
        for n in range(len(good)):
            assert tags.verify(good[:n]) is None
        assert tags.verify(good + "0") is None

    def test_other_nodes_key_refused(self) -> None:
        """A tag minted by another node (another key) is not ours."""
        theirs = ConnTags(OTHER_KEY).mint("ingress.1-4242", 17)
        assert ConnTags(KEY).verify(theirs) is None

    def test_replayed_onto_another_connection_refused(self) -> None:
        """A genuine mac moved onto another connection id or another ingress is refused."""
        tags = ConnTags(KEY)
        mac = tags.mint("ingress.1-4242", 17).rpartition("~")[2]
        assert tags.verify(f"ingress.1-4242~18~{mac}") is None
        assert tags.verify(f"ingress.2-4243~17~{mac}") is None
        assert tags.verify(f"ingress.1-4242~017~{mac}") is None  # another spelling of 17

    @given(st.text(max_size=80))
    def test_never_raises(self, text: str) -> None:
        """Whatever a peer writes, verify answers None or a pair; it never raises."""
        out = ConnTags(KEY).verify(text)
        assert out is None or isinstance(out[1], int)


def _proxy() -> StatelessProxy:
    s = settings()
    return StatelessProxy(s, RoutingTable(s), key=KEY)


def _response_with(tag: str | None) -> bytes:
    ours = OUR_TCP_VIA + (f";{CONN_PARAM}={tag}" if tag is not None else "")
    return response(200, [ours, CLIENT_TCP_VIA])


class TestResponseRouting:
    def test_request_tag_routes_its_response_back(self) -> None:
        """The tag our Via carries on a TCP request takes the response back to its
        connection."""
        p = _proxy()
        _, _, data = one(p.handle(request(), inbound(transport="tcp", conn=42, ingress="ing-7")))
        tag = parsed_req(data).vias[0].params[CONN_PARAM]
        ing, meta, _ = one(p.handle(_response_with(tag), inbound(ingress="ing-1")))
        assert ing == "ing-7" and meta[:4] == ["tcp", "10.0.0.1", 40000, 42]

    @pytest.mark.parametrize("tag", ["ing-7~42", "ing-7~42~" + "0" * 20, "~~", "x"],
                             ids=["bare", "bad-mac", "separators", "junk"])  # fmt: skip
    def test_forged_tag_dropped(self, tag: str) -> None:
        """A response whose tag fails is forged: dropped as ``forged_tag``, never routed."""
        with pytest.raises(Drop, match="forged_tag"):
            _proxy().handle(_response_with(tag), inbound())

    def test_valueless_tag_dropped(self) -> None:
        """``;sl-c`` with no value is a forged tag too."""
        raw = response(200, [OUR_TCP_VIA + f";{CONN_PARAM}", CLIENT_TCP_VIA])
        with pytest.raises(Drop, match="forged_tag"):
            _proxy().handle(raw, inbound())

    def test_other_nodes_tag_dropped(self) -> None:
        """A tag another node minted is dropped here."""
        tag = ConnTags(OTHER_KEY).mint("ing-7", 42)
        with pytest.raises(Drop, match="forged_tag"):
            _proxy().handle(_response_with(tag), inbound())

    def test_tag_naming_a_gone_ingress_falls_back(self) -> None:
        """An authentic tag naming an ingress that is not live: the response leaves by the
        ingress it came in on, to the Via's address, with no connection id (§18.2.2)."""
        p = _proxy()
        p.ingresses = {"ing-1"}
        ing, meta, _ = one(p.handle(_response_with(p.tags.mint("ing-7", 42)), inbound()))
        assert ing == "ing-1" and meta[:4] == ["tcp", "10.0.0.1", 40000, 0]

    def test_tag_on_a_live_ingress_is_used(self) -> None:
        """An authentic tag naming a live ingress keeps its connection id."""
        p = _proxy()
        p.ingresses = {"ing-1", "ing-7"}
        ing, meta, _ = one(p.handle(_response_with(p.tags.mint("ing-7", 42)), inbound()))
        assert ing == "ing-7" and meta[3] == 42

    def test_no_tag_uses_inbound_ingress(self) -> None:
        """No tag (a UDP request's response, or a peer that dropped the parameter): the
        inbound ingress, no connection id."""
        ing, meta, _ = one(_proxy().handle(_response_with(None), inbound(ingress="ing-1")))
        assert ing == "ing-1" and meta[3] == 0
