"""Caps on what one message may hold (parser rule 5, scan rule 3).

Over ``MAX_HEADER_LINES`` lines, ``MAX_HEADER_FIELDS`` fields, or ``MAX_LIST_VALUES`` Via or
name-addr values, a message is refused with ``TooManyHeaders`` (400 "Too Many Headers"); a
request is answerable when its Via and CSeq are among its first lines, and the ingress scan and
the worker parse agree.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from ingress.sip.errors import Salvage, SipError, TooManyHeaders
from ingress.sip.parser import (
    MAX_HEADER_FIELDS,
    MAX_HEADER_LINES,
    MAX_LIST_VALUES,
    count_fields,
    parse_message,
    salvage,
)
from ingress.sip.scan import scan_message
from ingress.sip.serialize import build_response

from .conftest import Case
from .test_properties import sip_ish

# 7 fields, Content-Length included
BASE = [
    b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKcap",
    b"From: <sip:a@example.com>;tag=1",
    b"To: <sip:b@example.com>",
    b"Call-ID: cap@h",
    b"CSeq: 1 OPTIONS",
    b"Max-Forwards: 70",
]


def message(extra: list[bytes], start: bytes = b"OPTIONS sip:b@example.com SIP/2.0",
            base: list[bytes] = BASE) -> bytes:  # fmt: skip
    return b"\r\n".join([start, *base, *extra, b"Content-Length: 0", b"", b""])


def filler(n: int) -> list[bytes]:
    return [b"X-F%d: v" % i for i in range(n)]


def refused(data: bytes) -> SipError:
    with pytest.raises(TooManyHeaders) as parse_err:
        parse_message(data)
    with pytest.raises(TooManyHeaders) as scan_err:
        scan_message(data)
    # the same answer whichever process found it (scan rule 2)
    assert scan_err.value.salvage == parse_err.value.salvage
    return parse_err.value


def test_at_the_field_cap_parses() -> None:
    """Exactly MAX_HEADER_FIELDS fields is a message."""
    data = message(filler(MAX_HEADER_FIELDS - len(BASE) - 1))
    assert len(parse_message(data).headers) == MAX_HEADER_FIELDS
    assert scan_message(data).call_id == b"cap@h"


def test_one_field_over_the_cap_is_400_too_many_headers() -> None:
    """One field more: 400 Too Many Headers, answered from the salvaged Via and CSeq."""
    err = refused(message(filler(MAX_HEADER_FIELDS - len(BASE))))
    assert (err.status, err.reason, err.key) == (400, "Too Many Headers", "too_many_headers")
    assert err.answerable
    assert build_response(err.salvage, err.status, err.reason).startswith(  # type: ignore[arg-type]
        b"SIP/2.0 400 Too Many Headers\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKcap\r\n"
    )


def test_folded_lines_count_as_their_field() -> None:
    """Continuation lines belong to their field: 1 000 of them are not 1 000 fields."""
    data = message([b"Subject: a", *[b" b"] * 1000])
    assert parse_message(data).header("subject") == b"a" + b" b" * 1000
    assert count_fields(data[: data.find(b"\r\n\r\n")]) == len(BASE) + 2


def test_lines_over_the_cap_are_refused_whatever_they_fold() -> None:
    """Past MAX_HEADER_LINES lines, continuation lines included, the message is refused by
    one count in the scan (a 64 KB datagram of one-byte folds costs no Python step each)."""
    lines = MAX_HEADER_LINES - len(BASE) - 2  # Subject and Content-Length
    parse_message(message([b"Subject: a", *[b" b"] * lines]))
    err = refused(message([b"Subject: a", *[b" b"] * (lines + 1)]))
    assert err.detail == f"more than {MAX_HEADER_LINES} header lines" and err.answerable


def test_transaction_fields_after_the_cap_are_not_read() -> None:
    """The salvage reads the first fields only: a CSeq past them leaves nothing to answer."""
    base = [b for b in BASE if not b.startswith(b"CSeq")]
    err = refused(message([*filler(MAX_HEADER_FIELDS), b"CSeq: 1 OPTIONS"], base=base))
    assert not err.answerable


def test_response_over_the_cap_is_not_answerable() -> None:
    """A response is refused the same way, and never answered (§17.2.1)."""
    err = refused(message(filler(MAX_HEADER_FIELDS), start=b"SIP/2.0 200 OK"))
    assert not err.answerable


@pytest.mark.parametrize("name", [b"Via", b"v"])
def test_via_values_over_the_cap(name: bytes) -> None:
    """MAX_LIST_VALUES Via values in one comma list parse; one more is refused."""

    def vias(n: int) -> bytes:
        return (
            name + b": " + b", ".join(b"SIP/2.0/UDP 10.0.%d.%d" % divmod(i, 256) for i in range(n))
        )

    ok = parse_message(message([vias(MAX_LIST_VALUES - 1)]))
    assert len(ok.vias) == MAX_LIST_VALUES
    with pytest.raises(TooManyHeaders, match="Via values"):
        parse_message(message([vias(MAX_LIST_VALUES)]))


def test_via_fields_and_lists_add_up() -> None:
    """A comma list first and single Via fields after it still count together."""
    lst = b"Via: " + b", ".join([b"SIP/2.0/UDP 10.0.0.9"] * 200)
    with pytest.raises(TooManyHeaders, match="Via values"):
        parse_message(message([lst, *[b"Via: SIP/2.0/UDP 10.0.0.8"] * 60]))


@pytest.mark.parametrize("name", [b"Route", b"Record-Route", b"Contact"])
def test_name_addr_values_over_the_cap(name: bytes) -> None:
    """Contact, Route and Record-Route values share one cap (a regex and an object each)."""

    def values(n: int) -> bytes:
        return name + b": " + b", ".join(b"<sip:10.0.%d.%d;lr>" % divmod(i, 256) for i in range(n))

    parse_message(message([values(MAX_LIST_VALUES)]))
    with pytest.raises(TooManyHeaders, match="Route"):
        parse_message(message([values(MAX_LIST_VALUES // 2), b"Route: " + b", ".join(
            [b"<sip:10.1.1.1;lr>"] * (MAX_LIST_VALUES // 2 + 1))]))  # fmt: skip


def _parse_salvage(data: bytes) -> Salvage | None:
    """The salvage the full parse attaches to its error (None when it parses)."""
    try:
        parse_message(data)
    except SipError as exc:
        return exc.salvage
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sip_ish)
def test_salvage_reads_the_head_only_and_agrees_with_the_parse(data: bytes) -> None:
    """``salvage`` (the scan's and the framer's, which reads no URI or Via) gives what the
    full parse gives, for any input the parse refuses."""
    expected = _parse_salvage(data)
    if expected is not None:
        assert salvage(data) == expected


def test_salvage_of_the_corpus_agrees_with_the_parse(case: Case) -> None:
    """Every torture message the parse refuses: the same salvage from the head alone."""
    expected = _parse_salvage(case.data)
    if expected is not None:
        assert salvage(case.data) == expected


@pytest.mark.parametrize("name", [b"Via", b"Route"])
def test_a_list_over_the_cap_is_counted_before_its_values_are_parsed(name: bytes) -> None:
    """Over MAX_LIST_VALUES values, the list is refused as too long whatever its values
    hold: the count bounds the parsing, so a malformed last value is never reached."""
    value = b"SIP/2.0/UDP h" if name == b"Via" else b"<sip:h;lr>"
    field = name + b": " + b", ".join([value] * MAX_LIST_VALUES + [b"@@"])
    with pytest.raises(TooManyHeaders, match=f"more than {MAX_LIST_VALUES} "):
        parse_message(message([field]))


@pytest.mark.parametrize(("position", "answerable"), [
    (MAX_HEADER_FIELDS, True), (MAX_HEADER_FIELDS + 1, False)])  # fmt: skip
def test_the_salvage_of_a_message_over_the_cap_reads_exactly_the_first_fields(
    position: int, answerable: bool
) -> None:
    """Rule 5: over the field cap, the salvage reads the first MAX_HEADER_FIELDS header lines
    and no more: a CSeq as the last of them is read, one line later it is not."""
    base = [b for b in BASE if not b.startswith(b"CSeq")]
    before = filler(position - len(base) - 1)
    err = refused(message([*before, b"CSeq: 1 OPTIONS", *filler(10)], base=base))
    assert err.answerable is answerable


def test_far_over_the_line_cap_the_first_lines_are_salvaged() -> None:
    """Twice MAX_HEADER_LINES fold lines: still refused by count, still answered from the
    Via and CSeq at the top (the head is split from its start, the rest left unsplit)."""
    err = refused(message([b"Subject: a", *[b" b"] * (2 * MAX_HEADER_LINES)]))
    assert err.detail == f"more than {MAX_HEADER_LINES} header lines" and err.answerable
