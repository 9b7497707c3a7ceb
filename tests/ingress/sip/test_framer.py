"""StreamFramer: Content-Length framing, keep-alives, caps and memory (RFC 3261 §18.3)."""

from __future__ import annotations

import sys

import pytest

from ingress.sip.errors import BadRequest, MessageTooLarge, RequestTooLarge, SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.sip.parser import parse_message

MSG = (
    b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\nContent-Length: 5\r\n\r\nhello"
)


def drain(framer: StreamFramer) -> list[object]:
    out: list[object] = []
    while (item := framer.next_message()) is not NEED_DATA:
        out.append(item)
    return out


def test_two_messages_in_one_read() -> None:
    """Back-to-back messages come out one by one, each exactly its bytes."""
    f = StreamFramer()
    f.receive_data(MSG + MSG)
    assert drain(f) == [MSG, MSG]
    assert f.buffered == 0 and not f.in_message


def test_split_anywhere() -> None:
    """Wherever a read boundary falls, the same message comes out once."""
    for cut in range(1, len(MSG)):
        f = StreamFramer()
        f.receive_data(MSG[:cut])
        first = drain(f)
        f.receive_data(MSG[cut:])
        assert first + drain(f) == [MSG]


def test_keepalive_ping() -> None:
    """A CRLFCRLF ping is reported, and a lone CRLF before a message is skipped (RFC 5626)."""
    f = StreamFramer()
    f.receive_data(b"\r\n\r\n")
    assert drain(f) == [KEEPALIVE]
    f.receive_data(b"\r\n" + MSG)
    assert drain(f) == [MSG]


def test_partial_ping_waits() -> None:
    """Half a ping is not mistaken for a message or dropped."""
    f = StreamFramer()
    f.receive_data(b"\r\n")
    assert f.next_message() is NEED_DATA
    f.receive_data(b"\r\n")
    assert f.next_message() is KEEPALIVE


def test_folded_and_compact_content_length() -> None:
    """Content-Length is found in compact form and across a fold."""
    for header in (b"l: 5", b"Content-Length:\r\n 5", b"content-length  :  5"):
        data = MSG.replace(b"Content-Length: 5", header)
        f = StreamFramer()
        f.receive_data(data + b"extra")
        assert drain(f) == [data]
        assert parse_message(data).body == b"hello"


@pytest.mark.parametrize(
    "header",
    [b"", b"Content-Length: -5", b"Content-Length: 5\r\nl: 6", b"Content-Length: five"],
    ids=["missing", "negative", "twice", "not-a-number"],
)
def test_bad_content_length(header: bytes) -> None:
    """Without one usable Content-Length the stream cannot be framed: 400, answerable."""
    data = MSG.replace(b"Content-Length: 5\r\n", header + b"\r\n" if header else b"")
    f = StreamFramer()
    f.receive_data(data)
    with pytest.raises(BadRequest) as info:
        drain(f)
    assert info.value.answerable


def test_header_cap() -> None:
    """A header section past max_header_bytes raises 513 before the terminator arrives."""
    f = StreamFramer(max_header_bytes=256)
    f.receive_data(MSG[: MSG.find(b"Content-Length")] + b"X-Pad: " + b"a" * 300)
    with pytest.raises(MessageTooLarge):
        drain(f)


def test_body_cap() -> None:
    """A Content-Length past max_body_bytes raises 413 without waiting for the body."""
    f = StreamFramer(max_body_bytes=4)
    f.receive_data(MSG[: MSG.find(b"hello")])
    with pytest.raises(RequestTooLarge):
        drain(f)


def test_reads_counted_per_message() -> None:
    """reads counts the reads since the current message began (slow-sender defence)."""
    f = StreamFramer()
    for i in range(0, 30, 10):
        f.receive_data(MSG[i : i + 10])
        drain(f)
    assert f.reads == 3 and f.in_message
    f.receive_data(MSG[30:])
    assert drain(f) == [MSG] and f.reads == 0


def test_memory_follows_bytes_buffered() -> None:
    """After a large message, the buffer gives its capacity back."""
    big = MSG.replace(b"Content-Length: 5", b"Content-Length: 40005").replace(
        b"hello", b"x" * 40005
    )
    f = StreamFramer()
    f.receive_data(big + MSG[:10])
    assert drain(f) == [big]
    assert f.buffered == 10
    assert sys.getsizeof(f._buf) < 1024


def test_errors_are_sip_errors() -> None:
    """Framing errors are SipErrors, whose salvage lets the adapter answer before closing."""
    f = StreamFramer()
    f.receive_data(MSG.replace(b"Content-Length: 5", b"Content-Length: -1"))
    with pytest.raises(SipError) as info:
        drain(f)
    assert info.value.salvage is not None and info.value.salvage.method == "OPTIONS"
