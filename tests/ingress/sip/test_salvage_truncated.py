"""A header section cut off by the size cap still yields what is needed to answer 513."""

from __future__ import annotations

from ingress.sip.errors import MessageTooLarge
from ingress.sip.framer import StreamFramer
from ingress.sip.parser import salvage

HEAD = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-t\r\n"
    b"From: <sip:alice@example.com>;tag=a\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: cut@192.0.2.1\r\n"
    b"CSeq: 1 INVITE\r\n"
)


def test_salvage_reads_complete_lines_of_a_cut_head() -> None:
    """Lines before the cut are salvaged; the partial last line is not."""
    s = salvage(HEAD + b"X-Long: " + b"a" * 50)
    assert s.method == "INVITE"
    assert b"Call-ID: cut@192.0.2.1" in s.lines
    assert not any(line.startswith(b"X-Long") for line in s.lines)


def test_oversize_head_on_a_stream_is_answerable() -> None:
    """The framer's 513 for an endless header section carries a usable salvage."""
    framer = StreamFramer(max_header_bytes=600)
    framer.receive_data(HEAD + b"X-Pad: " + b"a" * 1000)
    try:
        framer.next_message()
    except MessageTooLarge as exc:
        assert exc.answerable
    else:
        raise AssertionError("no 513")
