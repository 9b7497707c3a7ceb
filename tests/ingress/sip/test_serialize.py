"""ingress/sip/serialize.py and the value splitters, on their own: what ./dev mutate sip
(docs/testing.md) showed no test asserted."""

from __future__ import annotations

import pytest

from ingress.sip.errors import Salvage, SipError
from ingress.sip.headers import split_commas
from ingress.sip.message import Request, parse_params
from ingress.sip.parser import MAX_HEADER_FIELDS, _over_cap, count_fields, parse_message
from ingress.sip.serialize import build_response, splice

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=f1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@10.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Subject: not copied\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def req(raw: bytes = INVITE) -> Request:
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


class TestSplice:
    def test_edits_in_any_order_applied_in_place(self) -> None:
        raw = b"0123456789"
        edits = [(8, 9, b"N"), (0, 0, b">"), (3, 5, b"")]
        assert splice(raw, edits) == b">012567N9"
        assert edits == [(0, 0, b">"), (3, 5, b""), (8, 9, b"N")]  # sorted in place

    def test_end_cuts_the_tail_and_none_keeps_it(self) -> None:
        assert splice(b"head|body|junk", [(0, 4, b"HEAD")], 9) == b"HEAD|body"
        assert splice(b"head|body|junk", [(0, 4, b"HEAD")]) == b"HEAD|body|junk"
        assert splice(b"abc", []) == b"abc" and splice(b"abc", [], 2) == b"ab"

    def test_insert_before_replace_at_the_same_offset(self) -> None:
        """An insertion at an offset goes before a replacement starting there."""
        assert splice(b"abcdef", [(2, 4, b"XY"), (2, 2, b"+")]) == b"ab+XYef"
        assert splice(b"abcdef", [(2, 2, b"~"), (2, 4, b"A")]) == b"ab~Aef"

    def test_insert_after_a_replacement_ending_there(self) -> None:
        """An insertion where a replacement ends goes after it, whatever the list order."""
        assert splice(b"0123456789", [(5, 5, b"I"), (2, 5, b"R")]) == b"01RI56789"

    def test_insertions_at_one_offset_keep_their_order(self) -> None:
        """Two insertions at one offset (a Via and a Record-Route, say) go in as listed."""
        assert splice(b"abcdef", [(2, 2, b"Z"), (2, 2, b"A")]) == b"abZAcdef"


class TestBuildResponse:
    def test_exact_reply(self) -> None:
        """Via/From/To/Call-ID/CSeq copied in order, a To-tag added, nothing else copied."""
        data = build_response(req(), 486, "Busy Here", to_tag="t9")
        assert data == (
            b"SIP/2.0 486 Busy Here\r\n"
            b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc\r\n"
            b"From: <sip:alice@example.com>;tag=f1\r\n"
            b"To: <sip:bob@example.com>;tag=t9\r\n"
            b"Call-ID: c1@10.0.0.1\r\n"
            b"CSeq: 1 INVITE\r\n"
            b"Content-Length: 0\r\n\r\n"
        )

    def test_derived_to_tag_is_stable_and_hashes_the_copied_lines(self) -> None:
        a = build_response(req(), 404, "Not Found")
        assert a == build_response(req(), 404, "Not Found")  # a retransmission: same tag
        tag = parse_message(a).to.tag  # type: ignore[union-attr]
        assert tag is not None and len(tag) == 16  # 8 bytes, hex
        other = req(INVITE.replace(b"c1@10.0.0.1", b"c2@10.0.0.1"))
        assert parse_message(build_response(other, 404, "x")).to.tag != tag  # type: ignore[union-attr]

    def test_no_tag_on_100_and_none_added_twice(self) -> None:
        assert b";tag=" not in build_response(req(), 100, "Trying").split(b"\r\nTo:")[1][:40]
        assert b"To: <sip:bob@example.com>;tag=t9\r\n" in build_response(req(), 101, "x",
                                                                         to_tag="t9")
        tagged = req(INVITE.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com>;tag=u"))
        assert b"To: <sip:bob@example.com>;tag=u\r\n" in build_response(tagged, 200, "OK", to_tag="t9")

    @pytest.mark.parametrize(("to", "tagged"), [
        (b"t: <sip:bob@example.com>", b"t: <sip:bob@example.com>;tag=t9"),
        (b"TO: sip:bob@example.com", b"TO: sip:bob@example.com;tag=t9"),
        (b"To: <sip:bob@example.com;tag=uri-param>", b"To: <sip:bob@example.com;tag=uri-param>;tag=t9"),
        (b"To: <sip:b@x> ; TAG = up", b"To: <sip:b@x> ; TAG = up"),
        (b"To: \"a > b\" <sip:b@x>", b"To: \"a > b\" <sip:b@x>;tag=t9"),
    ])  # fmt: skip
    def test_to_tag_detection(self, to: bytes, tagged: bytes) -> None:
        """The tag is a header parameter after the last '>', any case and spacing; a tag
        inside the URI does not count; the compact form 't' is a To too."""
        raw = INVITE.replace(b"To: <sip:bob@example.com>", to)
        assert b"\r\n" + tagged + b"\r\n" in build_response(req(raw), 480, "x", to_tag="t9")

    def test_copied_lines_are_the_bytes_sent(self) -> None:
        """Trailing white space and every other byte of a copied line are kept as sent, and
        the reply to a parsed request is the reply to its salvage (same derived To-tag)."""
        raw = INVITE.replace(b"To: <sip:bob@example.com>", b"To: <sip:bob@example.com> \t")
        raw = raw.replace(b"Call-ID: c1@10.0.0.1", b"Call-ID: c1@10.0.0.1X")
        data = build_response(req(raw), 404, "Not Found")
        assert b"\r\nTo: <sip:bob@example.com> \t;tag=" in data
        assert b"\r\nCall-ID: c1@10.0.0.1X\r\n" in data
        bad = raw.replace(b"Max-Forwards: 70", b"Max-Forwards: x")
        with pytest.raises(SipError) as exc:
            parse_message(bad)
        assert exc.value.salvage is not None
        assert build_response(exc.value.salvage, 404, "Not Found") == data

    def test_a_quoted_gt_before_the_uri_is_not_its_end(self) -> None:
        """The header parameters follow the last '>': a tag-like text quoted in the display
        name is no tag."""
        raw = INVITE.replace(b"To: <sip:bob@example.com>", b'To: "a>;tag=1" <sip:bob@example.com>')
        assert b'To: "a>;tag=1" <sip:bob@example.com>;tag=t9\r\n' in build_response(
            req(raw), 480, "x", to_tag="t9")

    def test_extra_headers_before_content_length(self) -> None:
        data = build_response(req(), 503, "Busy", extra_headers=(b"Retry-After: 5",))
        assert data.endswith(b"\r\nCSeq: 1 INVITE\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n")


class TestSplitters:
    @pytest.mark.parametrize(("value", "parts"), [
        (b"a, b ,c", [b"a", b"b", b"c"]),
        (b'"x, y" <sip:a>, <sip:b,c>, d', [b'"x, y" <sip:a>', b"<sip:b,c>", b"d"]),
        (b'"a\\", b" <sip:q>, e', [b'"a\\", b" <sip:q>', b"e"]),
        (b'<sip:a>,,<sip:b>', [b"<sip:a>", b"", b"<sip:b>"]),
        (b'"q", r', [b'"q"', b"r"]),
        (b"x=1, y>2, z", [b"x=1", b"y>2", b"z"]),
        (b'"a\\"", <sip:b>', [b'"a\\""', b"<sip:b>"]),
        (b'SIP/2.0/UDP h;x="a,b", SIP/2.0/UDP g', [b'SIP/2.0/UDP h;x="a,b"', b"SIP/2.0/UDP g"]),
        (b'SIP/2.0/UDP h;x="a,b"', [b'SIP/2.0/UDP h;x="a,b"']),
    ])  # fmt: skip
    def test_split_commas(self, value: bytes, parts: list[bytes]) -> None:
        assert split_commas(value) == parts

    @pytest.mark.parametrize(("text", "params"), [
        (';a=1;b="x;y";c', {"a": "1", "b": '"x;y"', "c": None}),
        (';q="a\\";b";r=2', {"q": '"a\\";b"', "r": "2"}),
        (';x="";y', {"x": '""', "y": None}),
        ('junk;k="v"', {"k": '"v"'}),
        (';q="a\\"";r=2', {"q": '"a\\""', "r": "2"}),
        (';a="x;y\\"z"', {"a": '"x;y\\"z"'}),
        (";X=1;Xy;maddrX=h", {"x": "1", "xy": None, "maddrx": "h"}),
    ])  # fmt: skip
    def test_params_split_outside_quotes(self, text: str, params: dict[str, str | None]) -> None:
        assert parse_params(text) == params


class TestCountsAndValues:
    def test_count_fields_skips_both_continuation_kinds(self) -> None:
        assert count_fields(b"\nA: 1\n B\n\tC\nD: 2\r\nE: 3") == 3
        assert count_fields(b"\nA: 1\n\t2\n\t3") == 1

    def test_field_cap_is_exclusive(self) -> None:
        """Exactly MAX_HEADER_FIELDS fields is allowed; one more is not."""
        head = b"\nX: 1" * MAX_HEADER_FIELDS
        assert _over_cap(head, MAX_HEADER_FIELDS) == ""
        assert _over_cap(head + b"\nX: 1", MAX_HEADER_FIELDS + 1) == (
            f"more than {MAX_HEADER_FIELDS} header fields")

    def test_header_values_single_value_headers_whole(self) -> None:
        msg = req(INVITE.replace(b"Subject: not copied", b"Subject: a, b\r\nSubject: c"))
        assert msg.header_values("subject") == [b"a, b", b"c"]
        assert msg.header_values("via") == [b"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKabc"]


def test_a_lazy_uri_binds_the_parser_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """message.py binds grammar's parse_uri on the first URI read (grammar imports message):
    in a fresh process, where nothing is bound yet, reading a URI still parses it."""
    from ingress.sip import message

    monkeypatch.setattr(message, "_parse_uri_fn", None)
    # a To no earlier test parsed, so its view has not read its URI yet
    to = req(INVITE.replace(b"To: <sip:bob@", b"To: <sip:lazy-bind@")).to
    assert to.uri.host == "example.com" and to.uri.user == "lazy-bind"


def test_a_salvaged_to_is_read_as_sent() -> None:
    """A reply built from a salvage reads the To line as it came, even forged: a '>' first
    and a tag after it is a tagged To (no second tag)."""
    s = Salvage(is_request=True, method="INVITE",
                lines=[b"Via: SIP/2.0/UDP h;branch=z9hG4bK1", b"To:>;tag=u", b"CSeq: 1 INVITE"])
    assert b"\r\nTo:>;tag=u\r\n" in build_response(s, 400, "Bad Request", to_tag="t9")


def test_view_caches_stay_within_their_bound() -> None:
    """Every view cache is emptied when full: a peer sending ever new URIs, Vias and
    name-addrs never grows one past CACHE_MAX entries."""
    from ingress.sip import grammar

    for i in range(grammar.CACHE_MAX + 1):
        grammar.parse_uri(f"sip:bound{i}@example.com")
        grammar.parse_via(b"SIP/2.0/UDP h;branch=z9hG4bKbound%d" % i)
        grammar.parse_name_addr(b"<sip:bound%d@example.com>" % i)
        for cache in (grammar._URI_CACHE, grammar._VIA_CACHE, grammar._NAME_ADDR_CACHE):
            assert 0 < len(cache) <= grammar.CACHE_MAX


def test_uri_views() -> None:
    """A URI of another scheme has no host; a Uri given its params as a dict keeps them."""
    from ingress.sip.grammar import parse_uri
    from ingress.sip.message import Uri

    tel = parse_uri("tel:+15551234")
    assert (tel.scheme, tel.host, tel.user, tel.port) == ("tel", "", None, None)
    assert Uri("sip:h", "sip", host="h", params={"lr": None}).params == {"lr": None}


def test_header_name_caches_stay_within_their_bound() -> None:
    """Header names a peer makes up fill the name caches up to their bound, never past it."""
    from ingress.sip import headers

    for i in range(headers._NAME_CACHE_MAX + 1):
        raw = b"X-Bound-%d" % i
        assert headers.field_name(raw) == headers.canonical_name(raw) == raw.decode().lower()
        assert len(headers._NAME_CACHE) <= headers._NAME_CACHE_MAX
        assert len(headers._FIELD_CACHE) <= headers._NAME_CACHE_MAX
    # full, these two stop learning names: leave the next tests the usual empty start
    headers._NAME_CACHE.clear()
    headers._FIELD_CACHE.clear()
