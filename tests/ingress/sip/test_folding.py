"""Line folding (RFC 3261 §7.3.1) unfolds in time linear in the message.

The parser once grew a folded value by concatenation, one copy per continuation line, which
made a datagram of short continuation lines quadratic. ``_old_scan_headers_slow`` is that
code kept as the reference: the new scan must give exactly its headers and its verdict.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.sip.headers import _FIELD_CACHE, field_name
from ingress.sip.message import Header
from ingress.sip.parser import _scan_headers_slow, parse_message
from ingress.sip.scan import scan_message


def _old_scan_headers_slow(
    lines: list[bytes], pos: int, seplen: int
) -> tuple[list[Header], str | None]:
    """The scan as it was before the fix (commit 672354c), concatenation and all."""
    headers: list[Header] = []
    bad: str | None = None
    it = iter(lines)
    next(it)
    for line in it:
        end = pos + len(line) + seplen
        first = line[:1]
        if first == b" " or first == b"\t":
            if headers:
                prev, value, hstart, _ = headers[-1]
                headers[-1] = (prev, (value + b" " + line.strip(b" \t")).strip(b" \t"), hstart, end)
            else:
                bad = bad or "continuation line before any header"
            pos = end
            continue
        raw_name, colon, value = line.partition(b":")
        name: str | None = _FIELD_CACHE.get(raw_name) if colon else None
        if name is None:
            name = field_name(raw_name) if colon else None
            if name is None:
                bad = bad or "malformed header line"
                pos = end
                continue
        headers.append((name, value.strip(b" \t"), pos, end))
        pos = end
    return headers, bad


_ws = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t "])
_text = st.binary(max_size=6).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_field = st.builds(lambda n, w1, w2, v, w3: n + w1 + b":" + w2 + v + w3,
                   st.sampled_from([b"Subject", b"v", b"X-A", b"Call-ID", b"bad name"]),
                   _ws, _ws, _text, _ws)  # fmt: skip
_continuation = st.builds(lambda lead, v, w: lead + v + w,
                          st.sampled_from([b" ", b"\t", b"  \t"]), _text, _ws)  # fmt: skip
_garbage = st.sampled_from([b"no colon here", b"", b":", b"\x00"])
_lines = st.lists(st.one_of(_field, _continuation, _continuation, _garbage), max_size=30)


@settings(max_examples=400, deadline=None)
@given(_lines, st.sampled_from([1, 2]))
def test_same_headers_as_the_old_scan(lines: list[bytes], seplen: int) -> None:
    """Any mix of fields, continuations and broken lines: same headers, offsets, verdict."""
    lines = [b"INVITE sip:a@b SIP/2.0", *lines]
    pos = len(lines[0]) + seplen
    assert _scan_headers_slow(lines, pos, seplen) == _old_scan_headers_slow(lines, pos, seplen)


FOLDED = [
    ("one_fold", b"Subject: a\r\n b", b"a b"),
    ("tab_fold", b"Subject: a\r\n\tb", b"a b"),
    ("many_folds", b"Subject: a\r\n b\r\n  c\r\n\td", b"a b c d"),
    ("empty_value_then_fold", b"Subject:\r\n b", b"b"),
    ("blank_continuation", b"Subject: a\r\n   \r\n b", b"a b"),
    ("only_blank_continuations", b"Subject:\r\n \r\n\t", b""),
    ("inner_spaces_kept", b"Subject: a  b\r\n c   d ", b"a  b c   d"),
]


@pytest.mark.parametrize(("lines", "value"), [c[1:] for c in FOLDED], ids=[c[0] for c in FOLDED])
def test_folded_value(lines: bytes, value: bytes) -> None:
    """Each fold becomes one SP; the header's line spans every continuation line."""
    head = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n")  # fmt: skip
    data = head + lines + b"\r\nContent-Length: 0\r\n\r\n"
    msg = parse_message(data)
    assert msg.header("subject") == value
    (_, _, start, end) = next(h for h in msg.headers if h[0] == "subject")
    assert data[start:end] == lines + b"\r\n"


def test_folded_call_id_is_found_by_scan_and_parse() -> None:
    """A folded Call-ID: scan and parse agree on its value."""
    data = (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID:\r\n abc@h\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
    assert parse_message(data).call_id == "abc@h"
    assert scan_message(data).call_id == b"abc@h"
