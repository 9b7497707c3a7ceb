"""Failure routing (docs/routing.md): a stateful rule's ``failure_sets`` take the call once its
destination set is used up on a status in ``failure_codes`` or a timeout; and the rules'
rewrites and header edits on what the proxy forwards, in both modes. In memory, as
test_stateful.py: UAC bytes in, UAS bytes back, time as numbers."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conf.load import from_dict
from workers.proxy import StatelessProxy
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

from .helpers import PORT, US, inbound, one, parsed_req, request
from .test_stateful import INVITE, UAS1, UAS2, Link, answer

UAS3, UAS1B = "127.0.0.1:7003", "127.0.0.1:7011"


def make(route: dict[str, Any], *, mode: str = "stateful", a: tuple[str, ...] = (UAS1,),
         set_kw: dict[str, Any] | None = None, rules: tuple[dict[str, Any], ...] = ()) -> Any:  # fmt: skip
    """A stateful core (or, with mode = "stateless", the stateless one) with sets a, b, c."""
    data = {
        "listen": [{"transport": "udp", "address": US, "port": PORT},
                   {"transport": "tcp", "address": US, "port": PORT}],
        "proxy": {"mode": mode},
        "destination_set": [
            {"name": "a", "destinations": [f"sip:{d}" for d in a], "algorithm": "round_robin",
             **(set_kw or {})},
            {"name": "b", "destinations": [f"sip:{UAS2}"]},
            {"name": "c", "destinations": [f"sip:{UAS3}"]},
        ],
        "route": [*rules, {"name": "r", "to": "a", **route}],
    }  # fmt: skip
    s = from_dict(data, "test.toml")
    sl = StatelessProxy(s, RoutingTable(s))
    return sl if mode == "stateless" else StatefulProxy(s, sl)


def fail(link: Link, status: int) -> None:
    uas, fwd = link.down[-1]
    link.from_uas(answer(fwd, status, "X"), uas)


class TestFailureSets:
    def test_503_goes_on_to_the_next_set(self) -> None:
        """The first set's 503 sends the INVITE to the next set; its 200 reaches the caller."""
        link = Link(make({"failure_sets": ["b"]}))
        link.from_uac(INVITE)
        fail(link, 503)
        assert link.down[-1][0] == UAS2
        fail(link, 200)
        assert link.take_up() == [100, 200]
        assert link.p.counters["failure_route"] == 1

    def test_timeout_goes_on_to_the_next_set(self) -> None:
        """No answer from the first set until Timer B: the next set takes the call."""
        link = Link(make({"failure_sets": ["b"]}))
        link.from_uac(INVITE)
        link.advance(32.1)
        assert link.down[-1][0] == UAS2
        fail(link, 200)
        assert link.take_up() == [100, 200]

    def test_timeout_can_be_left_out(self) -> None:
        """failure_on_timeout = false: a timeout ends the call with 408."""
        link = Link(make({"failure_sets": ["b"], "failure_on_timeout": False}))
        link.from_uac(INVITE)
        link.advance(32.1)
        assert {uas for uas, _ in link.down} == {UAS1}
        assert link.take_up() == [100, 408]

    def test_other_statuses_go_upstream(self) -> None:
        """A final outside failure_codes (486) goes to the caller; no next set is tried."""
        link = Link(make({"failure_sets": ["b"], "failure_codes": ["5xx"]}))
        link.from_uac(INVITE)
        fail(link, 486)
        assert {uas for uas, _ in link.down} == {UAS1}
        assert link.take_up() == [100, 486]

    def test_the_set_fails_over_inside_first(self) -> None:
        """A set of two tries both of its destinations before the next set."""
        link = Link(make({"failure_sets": ["b"]}, a=(UAS1, UAS1B)))
        link.from_uac(INVITE)
        fail(link, 503)
        fail(link, 503)
        invites = [uas for uas, d in link.down if parsed_req(d).method == "INVITE"]
        assert sorted(invites[:2]) == [UAS1, UAS1B] and invites[2] == UAS2

    def test_a_route_code_the_set_does_not_fail_over_on(self) -> None:
        """A status in the route's failure_codes but not in the set's failover_codes skips the
        rest of the set for the next one."""
        link = Link(make({"failure_sets": ["b"], "failure_codes": ["5xx"]}, a=(UAS1, UAS1B),
                         set_kw={"failover_codes": ["503"]}))  # fmt: skip
        link.from_uac(INVITE)
        fail(link, 500)
        invites = [uas for uas, d in link.down if parsed_req(d).method == "INVITE"]
        assert len(invites) == 2 and invites[1] == UAS2

    def test_sets_in_turn_then_the_best_answer(self) -> None:
        """a, b, c in turn; all failing, the caller gets the best final (the lowest)."""
        link = Link(make({"failure_sets": ["b", "c"]}))
        link.from_uac(INVITE)
        fail(link, 503)
        fail(link, 500)
        assert link.down[-1][0] == UAS3
        fail(link, 502)
        assert link.take_up() == [100, 500]
        assert link.p.counters["failure_route"] == 2

    def test_cancel_stops_failure_routing(self) -> None:
        """After the caller's CANCEL, a 487 from the first set ends the call there."""
        link = Link(make({"failure_sets": ["b"], "failure_codes": ["4xx", "5xx"]}))
        link.from_uac(INVITE)
        link.from_uac(request("CANCEL", "sip:bob@127.0.0.1:5999"))
        fail(link, 487)
        assert {uas for uas, d in link.down if parsed_req(d).method == "INVITE"} == {UAS1}
        assert link.take_up()[-1] == 487

    @hsettings(max_examples=60, deadline=None)
    @given(outcomes=st.lists(st.sampled_from([200, 486, 500, 503, 408, None]), min_size=3,
                             max_size=3))  # fmt: skip
    def test_sets_tried_as_the_model_says(self, outcomes: list[int | None]) -> None:
        """Whatever the sets answer (None: nothing), they are tried in order, each once, as
        far as 5xx, 408 and timeouts carry the call, and the caller gets one final."""
        link = Link(make({"failure_sets": ["b", "c"]}))
        link.from_uac(INVITE)
        tried = 0
        for outcome in outcomes:
            tried += 1
            if outcome is None:
                link.advance(link.now + 32.1)
            else:
                fail(link, outcome)
            if outcome is not None and outcome not in (500, 503, 408):
                break
        invites = [uas for uas, d in link.down if parsed_req(d).method == "INVITE"]
        assert list(dict.fromkeys(invites)) == [UAS1, UAS2, UAS3][:tried]
        finals = [s for s in link.take_up() if isinstance(s, int) and s >= 200]
        assert len(finals) == 1


class TestRewritesOnTheWire:
    RULES = (
        {"name": "intl", "ruri_user": "00.*", "strip_user": 2, "prefix_user": "+",
         "continue_routing": True},
        {"name": "pai", "continue_routing": True, "header_edit": [
            {"name": "P-Asserted-Identity", "action": "set",
             "value": "<sip:+15551234@{from_host}>"}]},
    )  # fmt: skip

    def test_stateless(self) -> None:
        """The stateless proxy forwards the rewritten Request-URI and the edited headers,
        with the body and Content-Length as received."""
        sl = make({}, mode="stateless", rules=self.RULES)
        raw = request(uri="sip:0044123@example.com;user=phone", body=b"hello",
                      extra=("P-Asserted-Identity: <sip:evil@x>",))  # fmt: skip
        _, meta, data = one(sl.handle(raw, inbound()))
        fwd = parsed_req(data)
        assert fwd.uri.raw == "sip:+44123@example.com;user=phone"
        assert fwd.header_values("p-asserted-identity") == [b"<sip:+15551234@example.com>"]
        assert fwd.body == b"hello" and fwd.header("content-length") == b"5"
        assert meta[1:3] == ["127.0.0.1", 7001]

    def test_stateful_every_attempt(self) -> None:
        """Each attempt of a stateful call, next set included, carries the rewrites."""
        link = Link(make({"failure_sets": ["b"]}, rules=self.RULES))
        link.from_uac(request("INVITE", "sip:0015551@127.0.0.1:5999",
                              extra=("P-Asserted-Identity: <sip:evil@x>",)))  # fmt: skip
        fail(link, 503)
        for _, data in link.down:
            fwd = parsed_req(data)
            if fwd.method == "INVITE":
                assert fwd.uri.user == "+15551"
                assert fwd.header_values("p-asserted-identity") == [b"<sip:+15551234@example.com>"]

    def test_no_route_after_rewrites_is_404(self) -> None:
        """Rules that only rewrite never route: a request no rule takes gets 404."""
        sl = make({"ruri_user": r"\+1.*"}, mode="stateless", rules=self.RULES)
        _, _, data = one(sl.handle(request(uri="sip:12345@example.com"), inbound()))
        assert data.startswith(b"SIP/2.0 404 ")
