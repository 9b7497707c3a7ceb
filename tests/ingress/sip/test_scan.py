"""The ingress's quick scan agrees with the full parse wherever both decide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.sip.errors import SipError
from ingress.sip.parser import parse_message
from ingress.sip.scan import scan_message

CORPUS = [
    p.read_bytes()
    for p in sorted((Path(__file__).parents[2] / "data/sip-torture/torture").glob("*.dat"))
]


def _outcome(fn: Any, data: bytes) -> tuple[str, Any]:
    try:
        return ("ok", fn(data))
    except SipError as exc:
        return ("error", (exc.status, exc.answerable))


def _agree(data: bytes) -> None:
    parsed = _outcome(parse_message, data)
    scanned = _outcome(scan_message, data)
    if scanned[0] == "error":
        # what the scan refuses, the parse refuses the same way
        assert parsed == scanned
    elif parsed[0] == "ok":
        assert scanned[1].call_id.decode() == parsed[1].call_id
        assert scanned[1].is_request == parsed[1].is_request


def test_corpus(case: Any) -> None:
    """Every torture message: same verdict on the start line and the same Call-ID."""
    _agree(case.data)


def test_compact_and_odd_case_call_id() -> None:
    """The Call-ID is found in its compact form and in any case."""
    for line in (b"i: abc@x", b"CALL-id :  abc@x", b"Call-ID: abc@x"):
        msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK1\r\n" + line + b"\r\n\r\n"
        assert scan_message(msg).call_id == b"abc@x"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"INVITE sip:a@b SIP/3.0\r\nCall-ID: x\r\n\r\n", 505),
        (b"INVITE  sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nFrom: x\r\n\r\n", 400),
        (b"SIP/2.0 99 Odd\r\nCall-ID: x\r\n\r\n", 400),
    ],
    ids=["version", "double-space", "no-blank-line", "no-call-id", "bad-status"],
)
def test_refusals(data: bytes, status: int) -> None:
    """Broken start lines and a missing Call-ID are refused with the parser's status."""
    with pytest.raises(SipError) as exc:
        scan_message(data)
    assert exc.value.status == status


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    """Arbitrary bytes give a summary or a SipError, nothing else."""
    try:
        scan_message(data)
    except SipError:
        pass


def test_a_bare_lf_in_a_crlf_start_line() -> None:
    """A CRLF message whose start line ends in a bare LF (a flip hypothesis found: "SIP/2.00"
    then LF) is one malformed line to both, 400, not another version's 505."""
    data = (b"OPTIONS sip:user@example.com SIP/2.00\nTo: sip:user@example.com\r\n"
            b"From: sip:caller@example.net;tag=1\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n"
            b"Via: SIP/2.0/UDP host1.example.com;branch=z9hG4bK1\r\nMax-Forwards: 70\r\n\r\n")
    assert _outcome(scan_message, data) == ("error", (400, True))
    _agree(data)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 10_000),
    st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_corpus(which: int, flips: list[tuple[float, int]]) -> None:
    """Byte flips in real messages never make the scan and the parse disagree."""
    msg = bytearray(CORPUS[which % len(CORPUS)])
    for where, value in flips:
        msg[int(where * len(msg))] = value
    _agree(bytes(msg))
