"""``[[route]]`` conditions and actions beyond method/URI/source (docs/routing.md): header,
listener, transport and untrusted conditions, Request-URI user rewrites, header edits,
``continue_routing`` and failure-set choice, through ``RoutingTable.decide``."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conf.load import ConfigError, from_dict
from ingress.sip.grammar import parse_uri
from ingress.sip.message import Request, Uri
from ingress.sip.parser import parse_message
from ingress.sip.serialize import splice
from workers.routing.rules import Template, header_edits, with_user
from workers.routing.table import Decision, RoutingTable

from .helpers import PORT, US, parsed_req, request

SETS = [{"name": n, "destinations": [f"sip:127.0.0.1:{7000 + i}"]} for i, n in enumerate("abc")]


def table(*routes: dict[str, Any], **extra: Any) -> RoutingTable:
    data: dict[str, Any] = {"destination_set": SETS, "route": list(routes), **extra}
    data.setdefault("listen", [{"transport": "udp", "address": US, "port": PORT},
                               {"transport": "tcp", "address": US, "port": PORT},
                               {"transport": "udp", "address": "::1", "port": PORT}])  # fmt: skip
    return RoutingTable(from_dict(data, "test.toml"))


def decide(t: RoutingTable, req: Request | bytes, src: str = "10.0.0.1", transport: str = "udp",
           local: tuple[str, int] = (US, PORT)) -> Decision:  # fmt: skip
    if isinstance(req, bytes):
        req = parsed_req(req)
    return t.decide(req, src, transport, 5070, local[0], local[1])


def name(d: Decision) -> str | None:
    return None if d.route is None else d.route.name


def forwarded(t: RoutingTable, raw: bytes, src: str = "10.0.0.1") -> tuple[Decision, Request]:
    """The decision for ``raw`` and the request as its header edits leave it, re-parsed."""
    req = parsed_req(raw)
    d = decide(t, req, src)
    out = splice(req.raw, header_edits(req, d.edits, d.user, src), req.body_end)
    again = parse_message(out)
    assert isinstance(again, Request)
    return d, again


class TestHeaderConditions:
    def test_present_with_regex(self) -> None:
        """A header condition with a regex needs a line of that header matching in full."""
        t = table({"name": "scan", "reject": 403,
                   "header": [{"name": "User-Agent", "regex": "friendly-scanner.*"}]},
                  {"name": "rest", "to": "a"})  # fmt: skip
        assert name(decide(t, request(extra=("User-Agent: friendly-scanner 1.0",)))) == "scan"
        assert name(decide(t, request(extra=("User-Agent: a friendly-scanner",)))) == "rest"
        assert name(decide(t, request())) == "rest"

    def test_any_line_may_match(self) -> None:
        """With several lines of one header, one matching line is enough."""
        t = table({"name": "x", "to": "a", "header": [{"name": "X-Tag", "regex": "b"}]})
        assert name(decide(t, request(extra=("X-Tag: a", "X-Tag: b")))) == "x"
        assert name(decide(t, request(extra=("X-Tag: a", "X-Tag: c")))) is None

    def test_absent(self) -> None:
        """present = false holds only when no line of the header is there."""
        t = table({"name": "nopai", "to": "a",
                   "header": [{"name": "P-Asserted-Identity", "present": False}]})  # fmt: skip
        assert name(decide(t, request())) == "nopai"
        assert name(decide(t, request(extra=("p-asserted-identity: <sip:x@y>",)))) is None

    def test_names_ignore_case_and_compact_forms(self) -> None:
        """A condition on Subject also sees the compact form s and any case."""
        t = table({"name": "subj", "to": "a", "header": [{"name": "subject", "regex": "hi"}]})
        assert name(decide(t, request(extra=("s: hi",)))) == "subj"
        assert name(decide(t, request(extra=("SUBJECT: hi",)))) == "subj"

    @given(values=st.lists(st.text(st.sampled_from("ab1 -"), max_size=6), max_size=4),
           pattern=st.sampled_from(["a+", "a.*", "1", "", "b?a b", "[ab]*"]),
           present=st.booleans())  # fmt: skip
    def test_matches_the_reference(self, values: list[str], pattern: str, present: bool) -> None:
        """Whatever the lines, a header condition holds exactly when some line's value
        fullmatches (or, absent, when there is none)."""
        if not present:
            pattern = ""
        t = table({"name": "h", "to": "a",
                   "header": [{"name": "X-V", "regex": pattern, "present": present}]})  # fmt: skip
        values = [v.strip() for v in values]
        req = parsed_req(request(extra=tuple(f"X-V: {v}" for v in values)))
        hit = any(re.fullmatch(pattern, v) for v in values) if pattern else bool(values)
        assert (name(decide(t, req)) == "h") is (hit if present else not values)


class TestArrivalConditions:
    def test_transport(self) -> None:
        """transport matches the transport the request came on."""
        t = table({"name": "tcp", "to": "a", "transport": "tcp"}, {"name": "rest", "to": "b"})
        assert name(decide(t, request(), transport="tcp")) == "tcp"
        assert name(decide(t, request(), transport="udp")) == "rest"

    def test_listener(self) -> None:
        """listener matches the address:port the request arrived on, IPv6 bracketed."""
        t = table({"name": "v6", "to": "a", "listener": f"[::1]:{PORT}"},
                  {"name": "v4", "to": "b", "listener": f"{US}:{PORT}"})  # fmt: skip
        assert name(decide(t, request(), local=("::1", PORT))) == "v6"
        assert name(decide(t, request(), local=(US, PORT))) == "v4"
        assert name(decide(t, request(), local=(US, PORT + 1))) is None

    def test_listener_written_long(self) -> None:
        """An IPv6 listener written long matches both as written (UDP reports the configured
        address) and canonical (TCP reports the socket's)."""
        t = table({"name": "v6", "to": "a", "listener": f"[0:0::1]:{PORT}"},
                  listen=[{"transport": "udp", "address": "0:0::1", "port": PORT},
                          {"transport": "udp", "address": US, "port": PORT}])  # fmt: skip
        assert name(decide(t, request(), local=("0:0::1", PORT))) == "v6"
        assert name(decide(t, request(), local=("::1", PORT))) == "v6"
        assert name(decide(t, request(), local=("::2", PORT))) is None

    @pytest.mark.parametrize(("src", "rule"), [("10.1.1.1", "rest"), ("192.0.2.1", "pbx-only"),
                                               ("203.0.113.9", "deny")])  # fmt: skip
    def test_untrusted(self, src: str, rule: str) -> None:
        """untrusted = true holds for sources of no [[trusted]] table, a tag for sources
        without that tag."""
        t = table({"name": "deny", "untrusted": True, "reject": 403},
                  {"name": "pbx-only", "untrusted": "carrier", "reject": 403},
                  {"name": "rest", "to": "a"},
                  trusted=[{"cidr": "10.0.0.0/8", "tag": "carrier"},
                           {"cidr": "192.0.2.0/24", "tag": "pbx"}])  # fmt: skip
        assert name(decide(t, request(), src)) == rule


class TestUserRewrites:
    def test_strip_and_prefix_then_later_rules_see_it(self) -> None:
        """strip then prefix; a later rule's ruri_user sees the rewritten user."""
        t = table({"name": "intl", "ruri_user": "00.*", "strip_user": 2, "prefix_user": "+",
                   "continue_routing": True},
                  {"name": "e164", "ruri_user": r"\+\d+", "to": "a"},
                  {"name": "rest", "to": "b"})  # fmt: skip
        d = decide(t, request(uri="sip:0044123@example.com"))
        assert (name(d), d.user, d.user_changed) == ("e164", "+44123", True)
        d = decide(t, request(uri="sip:44123@example.com"))
        assert (name(d), d.user, d.user_changed) == ("rest", "44123", False)

    def test_regex_substitution_with_groups(self) -> None:
        """user_regex replaces its first match with user_replace, groups expanded."""
        t = table({"name": "nat", "user_regex": r"^0(\d{9})$", "user_replace": r"+33\1",
                   "to": "a"})  # fmt: skip
        assert decide(t, request(uri="sip:0123456789@h")).user == "+33123456789"
        assert decide(t, request(uri="sip:12345@h")).user == "12345"  # no match: unchanged

    def test_user_added_to_a_uri_without_one(self) -> None:
        """A prefix on a Request-URI without a user gives it one."""
        t = table({"name": "p", "prefix_user": "svc", "to": "a"})
        d = decide(t, request(uri="sip:example.com"))
        assert d.user == "svc"
        assert with_user("sip:example.com", "sip", None, "svc") == "sip:svc@example.com"

    @pytest.mark.parametrize(("raw", "old", "new", "want"), [
        ("sip:0044@h;user=phone", "0044", "+44", "sip:+44@h;user=phone"),
        ("SIP:0044@h:5060", "0044", "+44", "SIP:+44@h:5060"),
        ("sip:00@h", "00", "", "sip:h"),
        ("sip:u:pw@h", "u", "v", "sip:v:pw@h"),
        ("sip:h", None, "", "sip:h"),
    ])  # fmt: skip
    def test_with_user(self, raw: str, old: str | None, new: str, want: str) -> None:
        """The user is replaced in the URI text, the rest kept byte for byte."""
        assert with_user(raw, "sip", old, new) == want

    @given(user=st.text(st.sampled_from("0123456789+*#abc"), min_size=1, max_size=12),
           strip=st.integers(0, 5), prefix=st.sampled_from(["", "+", "00", "9"]))  # fmt: skip
    def test_strip_prefix_is_slicing(self, user: str, strip: int, prefix: str) -> None:
        """Whatever the user, strip N then prefix P gives P + user[N:], and the URI with it
        parses back to that user."""
        rule: dict[str, Any] = {"name": "r", "to": "a", "strip_user": strip}
        if prefix:
            rule["prefix_user"] = prefix
        t = table(rule)
        d = decide(t, request(uri=f"sip:{user}@example.com"))
        assert d.user == prefix + user[strip:]
        assert (parse_uri(with_user(f"sip:{user}@example.com", "sip", user, d.user or "")).user
                or "") == d.user  # fmt: skip


class TestHeaderEdits:
    PAI: ClassVar[dict[str, str]] = {"name": "P-Asserted-Identity", "action": "set", "value": "<sip:+15551234@{from_host}>"}

    def test_set_replaces_every_line(self) -> None:
        """set removes every line of the header and adds one, from_host substituted."""
        t = table({"name": "r", "to": "a", "header_edit": [self.PAI]})
        raw = request(extra=("P-Asserted-Identity: <sip:a@evil>", "P-Asserted-Identity: <sip:b@evil>"))
        _, out = forwarded(t, raw)
        assert out.header_values("p-asserted-identity") == [b"<sip:+15551234@example.com>"]

    def test_set_adds_when_absent_and_keeps_the_body(self) -> None:
        """An edit never touches the body: Content-Length stays true."""
        t = table({"name": "r", "to": "a", "header_edit": [self.PAI]})
        body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\n"
        _, out = forwarded(t, request(body=body, extra=("Content-Type: application/sdp",)))
        assert out.body == body and out.header("content-length") == str(len(body)).encode()
        assert out.header("p-asserted-identity") == b"<sip:+15551234@example.com>"

    def test_edits_of_several_rules_fold_in_order(self) -> None:
        """remove then append across continue_routing rules: what was appended last stays."""
        t = table({"name": "clean", "continue_routing": True,
                   "header_edit": [{"name": "X-A", "action": "append", "value": "one"},
                                   {"name": "X-B", "action": "remove"}]},
                  {"name": "r", "to": "a",
                   "header_edit": [{"name": "X-A", "action": "append", "value": "two"},
                                   {"name": "x-a", "action": "remove"},
                                   {"name": "X-A", "action": "append", "value": "{ruri_user}"},
                                   {"name": "X-Src", "action": "set", "value": "{source_ip}"}]})  # fmt: skip
        _, out = forwarded(t, request(extra=("X-A: old", "X-B: gone")), src="10.9.8.7")
        assert out.header_values("x-a") == [b"bob"]
        assert out.header_values("x-b") == []
        assert out.header("x-src") == b"10.9.8.7"

    def test_literal_braces(self) -> None:
        """Doubled braces are literal."""
        assert Template("{{x}}").literal == b"{x}"

    def test_fields_with_line_breaks_are_dropped(self) -> None:
        """A request field holding CR or LF never reaches the line (second fence)."""
        bad = Uri("sip:a@b", "sip", "a", None, "evil\r\nX-Injected: 1")
        req: Any = SimpleNamespace(from_=SimpleNamespace(uri=bad))
        assert Template("<sip:x@{from_host}>").render(req, None, "1.2.3.4") == b"<sip:x@>"

    @given(edits=st.lists(st.tuples(st.sampled_from(["X-A", "X-B", "Subject"]),
                                    st.sampled_from(["set", "append", "remove"]),
                                    st.text(st.sampled_from("ab {}_"), max_size=8)),
                          max_size=5),
           have=st.lists(st.sampled_from(["X-A: 1", "X-B: 2", "s: 3", "Subject: 4"]), max_size=4),
           body=st.binary(max_size=20))  # fmt: skip
    def test_any_edits_leave_a_valid_message(self, edits: list[tuple[str, str, str]],
                                             have: list[str], body: bytes) -> None:  # fmt: skip
        """Whatever edits (valid or refused at load), the forwarded request parses, its body
        and Content-Length are as sent, and each header holds what the edits say."""
        cfg = [{"name": n, "action": a, **({"value": v.strip()} if a != "remove" else {})}
               for n, a, v in edits]  # fmt: skip
        try:
            t = table({"name": "r", "to": "a", "header_edit": cfg})
        except ConfigError as exc:  # refused at load: a template with a stray brace
            assert "header_edit" in str(exc)
            return
        _, out = forwarded(t, request(extra=tuple(have), body=body))
        assert out.body == body and out.header("content-length") == str(len(body)).encode()
        want: dict[str, list[bytes]] = {}
        for line in have:
            n, _, v = line.partition(": ")
            want.setdefault({"s": "subject"}.get(n, n).lower(), []).append(v.encode())
        for n, a, v in edits:
            key = n.lower()
            if a != "append":
                want[key] = []
            if a != "remove":
                want.setdefault(key, []).append(v.strip().replace("{{", "{").replace("}}", "}").encode())
        for key, values in want.items():
            assert out.header_values(key) == values


class TestDecisions:
    def test_no_rule_is_no_route(self) -> None:
        """Continue rules alone never end the walk: no route (404) with their edits."""
        t = table({"name": "p", "prefix_user": "+", "continue_routing": True})
        d = decide(t, request())
        assert d.route is None and d.user == "+bob"

    def test_failure_set_choice(self) -> None:
        """fails_to_next_set: the listed codes, and timeouts unless turned off."""
        t = table({"name": "r", "to": "a", "failure_sets": ["b", "c"], "mode": "stateful",
                   "failure_codes": ["5xx", "408"]},
                  {"name": "s", "to": "a", "failure_sets": ["b"], "mode": "stateful",
                   "failure_codes": ["503"], "failure_on_timeout": False})  # fmt: skip
        r, s = t.routes
        assert [x.name for x in r.failure_sets] == ["b", "c"]
        assert r.fails_to_next_set(503) and r.fails_to_next_set(408) and r.fails_to_next_set(None)
        assert not r.fails_to_next_set(486) and not r.fails_to_next_set(404)
        assert s.fails_to_next_set(503) and not s.fails_to_next_set(500)
        assert not s.fails_to_next_set(None)


USER_CHARS = "abcXYZ019-_.!~*'()%&=+$,;?/#"


@given(user=st.text(st.sampled_from(USER_CHARS), min_size=1, max_size=10),
       from_user=st.text(st.sampled_from(USER_CHARS), min_size=1, max_size=6),
       from_host=st.sampled_from(["example.com", "10.1.2.3", "[2001:db8::1]", "h-1.example"]),
       strip=st.integers(0, 12), regex=st.sampled_from(["", "^(.)", "[0-9]+", "%", "(.*)"]),
       repl=st.sampled_from(["", r"\1", "+", r"\1\1", "%4"]))  # fmt: skip
def test_any_request_forwards_valid(user: str, from_user: str, from_host: str, strip: int,
                                    regex: str, repl: str) -> None:  # fmt: skip
    """Whatever the users and hosts (user characters, escapes cut or not) and however the
    rule rewrites, the forwarded request parses, its Request-URI user is what the rewrite
    says (or unchanged when the result is no URI user), and every field a template names
    arrives as the request had it."""
    rule: dict[str, Any] = {"name": "r", "to": "a", "strip_user": strip, "header_edit": [
        {"name": "X-Fields", "action": "append",
         "value": "{from_user}|{from_host}|{to_user}|{to_host}|{ruri_user}|{ruri_host}|{source_ip}"}]}  # fmt: skip
    if regex and ("(" in regex or not repl.startswith("\\")):
        rule.update(user_regex=regex, user_replace=repl)
    try:
        t = table(rule)
    except ConfigError:
        return  # a replacement the regex cannot fill (refused at load)
    raw = request(uri=f"sip:{user}@example.com;user=phone")
    raw = raw.replace(b"From: <sip:alice@example.com>", f"From: <sip:{from_user}@{from_host}>".encode())
    req = parsed_req(raw)
    d = decide(t, req)
    new = with_user(req.uri.raw, req.uri.scheme, req.uri.user, d.user or "")
    uri = parse_uri(new)
    assert (uri.user or "") == (d.user or "")
    out = splice(req.raw, header_edits(req, d.edits, d.user, "10.0.0.1"), req.body_end)
    again = parse_message(out)
    assert isinstance(again, Request)
    fields = (again.header("x-fields") or b"").decode()
    assert fields == f"{from_user}|{from_host}|bob|example.com|{d.user}|example.com|10.0.0.1"
