"""The one-pass header scan and the parser's memos answer as the two passes do (issue #16).

``parse_message`` reads a message's header lines and checks its Vias, name-addr lists and
singletons in one loop (``_scan_fields``), and keeps what it read of repeating lines, CSeq
values, numbers and start lines (the ``*_CACHE`` memos, which ``tests/conftest.py``'s
``clear_memos`` empties under ``./dev mutate``). Each is held here to the plain path it
shortcuts: for the torture corpus, mutated messages and a sipp call's messages, the parse
gives the same message, or the same error with the same salvage, whether the shortcut runs
or not and whatever earlier messages left in the memos.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingress.sip import parser
from ingress.sip.errors import SipError
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from tests.ingress.sip.test_properties import mutate, mutation_ops

MANY = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-1\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5063>;tag=1\r\n"
    b"To: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: 1-6655@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5063\r\n"
    b"Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.2;lr>\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Length: 0\r\n\r\n"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sl1, SIP/2.0/UDP 127.0.0.1:5063;branch=z9\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5063>;tag=1\r\n"
    b"To: service <sip:service@127.0.0.1:5060>;tag=2\r\n"
    b"Call-ID: 1-6655@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:127.0.0.1:5080;transport=UDP>\r\nContent-Length: 0\r\n\r\n"
)


def outcome(data: bytes, trusted: bool = False) -> tuple[Any, ...]:
    """Everything a caller can read of a parse: the message's fields or the error's."""
    try:
        m = parse_message(data, trusted=trusted)
    except SipError as e:
        s = e.salvage
        return ("error", type(e), e.status, e.detail,
                None if s is None else (s.is_request, s.method, s.lines))  # fmt: skip
    got: tuple[Any, ...] = (
        type(m), m.headers, m.line_end, m.body_start, m.body_end, m.call_id, m.cseq,
        m.cseq_method, [(v.raw, v.transport, v.host, v.port, v.params) for v in m.vias],
        [(x.raw, x.display, x.uri.raw, x.params) for x in (m.from_, m.to)],
    )  # fmt: skip
    if isinstance(m, Request):
        return (*got, m.method, m.uri.raw, m.max_forwards)
    return (*got, m.status, m.reason)


def clear_memos() -> None:
    for memo in (parser._LINE_CACHE, parser._CSEQ_CACHE, parser._NUMBER_CACHE, parser._REQUEST_LINE_CACHE,
                 parser._STATUS_LINE_CACHE):
        memo.clear()


def two_pass(data: bytes, trusted: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ...]:
    """The outcome with neither the one-pass scan nor the memos."""
    with monkeypatch.context() as m:
        m.setattr(parser, "_scan_fields", lambda *a: None)
        m.setattr(parser, "_NUMBER_CACHE", {})
        m.setattr(parser, "_CSEQ_CACHE", {})
        m.setattr(parser, "_REQUEST_LINE_CACHE", {})
        m.setattr(parser, "_STATUS_LINE_CACHE", {})
        m.setattr(parser, "_MEMO_KEY_MAX", -1)  # nothing kept
        m.setattr(parser, "_LINE_MAX", -1)
        return outcome(data, trusted)


@pytest.fixture(autouse=True)
def fresh_memos() -> Iterator[None]:
    clear_memos()
    yield
    clear_memos()


class TestSameAnswer:
    @pytest.mark.parametrize("data", [INVITE, RESPONSE], ids=["invite", "response"])
    def test_common_case_takes_the_one_pass(self, data: bytes) -> None:
        """A well-formed message is read by the one pass once its header names are known
        (the first parse learns them), and a second copy hits the memos."""
        first = outcome(data)
        lines = data[: data.index(b"\r\n\r\n")].split(b"\r\n")
        assert parser._scan_fields(lines, len(lines[0]) + 2, 2, False) is not None
        assert parser._LINE_CACHE and parser._CSEQ_CACHE
        assert parser._REQUEST_LINE_CACHE if data is INVITE else parser._STATUS_LINE_CACHE
        assert outcome(data) == outcome(data) == first

    def test_corpus(self, corpus: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
        """Every torture message, memos cold then warm, trusted or not: as the two passes."""
        for trusted in (False, True):
            for data in corpus * 2:
                assert outcome(data, trusted) == two_pass(data, trusted, monkeypatch)

    @MANY
    @given(index=st.integers(0, 10_000), ops=mutation_ops, warm=st.integers(0, 3),
           trusted=st.booleans())  # fmt: skip
    def test_mutated(self, corpus: list[bytes], monkeypatch: pytest.MonkeyPatch, index: int,
                     ops: list, warm: int, trusted: bool) -> None:  # type: ignore[type-arg]  # fmt: skip
        """A mutated message, after ``warm`` other mutants of its source filled the memos,
        parses as the two passes parse it (a memo hit from a line that differs only in what
        a later check reads must not change the answer)."""
        sources = [INVITE, RESPONSE, *corpus]
        source = sources[index % len(sources)]
        for k in range(warm):
            outcome(mutate(source, [(op, a + k, b, x) for op, a, b, x in ops]), trusted)
        data = mutate(source, ops)
        assert outcome(data, trusted) == two_pass(data, trusted, monkeypatch)

    def test_list_kept_untrusted_only(self) -> None:
        """A Route line read by a trusted parse (unchecked) is not kept: an untrusted parse
        of the same line still checks it."""
        bad = INVITE.replace(b"<sip:127.0.0.2;lr>", b"sip:a@b?x=1")  # §20.10: '?' needs <>
        parse_message(bad, trusted=True)
        with pytest.raises(SipError, match="malformed name-addr"):
            parse_message(bad)

    def test_memos_bounded(self) -> None:
        """Distinct lines and values churn the memos within their caps, and long ones are
        never kept."""
        for i in range(parser._LINES_MAX + 10):
            parse_message(INVITE.replace(b"Subject: Performance Test",
                                         b"Subject: %d" % i).replace(b"CSeq: 1", b"CSeq: %d" % i))  # fmt: skip
        assert len(parser._LINE_CACHE) <= parser._LINES_MAX
        assert len(parser._CSEQ_CACHE) <= parser._MEMO_MAX
        long = b"X" * (parser._LINE_MAX + 1)
        parse_message(INVITE.replace(b"Performance Test", long))
        assert not any(long in line for line in parser._LINE_CACHE)
        zeros = b"0" * 40 + b"70"
        assert parse_message(INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: " + zeros))
        assert zeros not in parser._NUMBER_CACHE
