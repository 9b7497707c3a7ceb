"""Every RFC 4475 / RFC 5118 torture message, three ways (h11 ``test_io.tr``).

1. The whole buffer through ``parse_message`` (a UDP datagram).
2. One byte at a time through ``StreamFramer`` (TCP), then ``parse_message`` on each frame.
3. With trailing data: a datagram ignores octets past Content-Length (RFC 3261 §18.3,
   RFC 4475 3.1.1.8); a stream keeps them as the start of the next message.

``OUTCOME`` is what the codec does with each row; ``test_outcome_agrees_with_manifest`` holds
it to the MANIFEST ``check`` column, so a row can only be answered the way the RFC allows.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ingress.sip.errors import SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.sip.headers import field_name
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response

PARSE = "parse"

#: what parse_message does with each row: PARSE, or the status of the SipError it raises
OUTCOME: dict[str, str | int] = {
    # RFC 4475 3.1.1: valid messages
    **dict.fromkeys(
        [
            "wsinv",
            "intmeth",
            "esc01",
            "escnull",
            "esc02",
            "lwsdisp",
            "longreq",
            "dblreq",
            "semiuri",
            "transports",
            "mpart01",
            "unreason",
            "noreason",
        ],
        PARSE,
    ),
    # 3.1.2: invalid messages
    "badinv01": 400,  # empty Via params
    "clerr": 400,  # Content-Length past the datagram
    "ncl": 400,  # negative Content-Length
    "scalar02": 400,  # CSeq over 2**32-1
    "scalarlg": 400,  # a response: never answered
    "quotbal": 400,  # we forward To untouched, so we must not infer the quote
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,  # headers are not allowed in a Request-URI (§19.1.1 table 1)
    "baddate": PARSE,  # Date does not matter to a proxy
    "regbadct": 400,  # an addr-spec with "?" must be in <> (§20.10); we would forward it
    "badaspec": 400,  # spaces inside <> would be forwarded
    "baddn": 400,  # unquoted display name with a comma
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 501,
    "bigcode": 400,  # a response: never answered
    # 3.2, 3.3, 3.4: application-level
    "badbranch": PARSE,
    "insuf": 400,
    "unkscm": PARSE,  # 416 is the worker's (§16.3 step 2)
    "novelsc": PARSE,  # 416 is the worker's
    "unksm2": PARSE,
    "bext01": PARSE,  # 420 is the worker's (§16.3 step 6)
    "invut": PARSE,
    "regaut01": PARSE,
    "multi01": 400,
    "mcl01": 400,
    "bcast": PARSE,  # a response; the worker never relays it to 255.255.255.255
    "zeromf": PARSE,  # 483 is the worker's (§16.3 step 3)
    "cparam01": PARSE,
    "cparam02": PARSE,
    "regescrt": PARSE,
    "sdp01": PARSE,
    "inv2543": PARSE,
    "test": 400,
    # RFC 5118
    **dict.fromkeys(
        [
            "ipv6-good",
            "port-ambiguous",
            "port-unambiguous",
            "via-received-param-with-delim",
            "via-received-param-no-delim",
            "ipv6-in-sdp",
            "mult-ip-in-header",
            "mult-ip-in-sdp",
            "ipv4-mapped-ipv6",
            "ipv6-bug-abnf-3-colons",
            "ipv6-correct-abnf-2-colons",
        ],
        PARSE,
    ),
    "ipv6-bad": 400,
}

#: rows that frame differently on a stream (RFC 4475 3.1.2.2, 3.1.2.3, 3.3.9, 3.4.1)
STREAM: dict[str, str | int] = {
    "clerr": NEED_DATA.value,  # wait for the 9999 octets (the adapter's deadline closes)
    "ncl": 400,
    "mcl01": 400,
    "inv2543": 400,  # Content-Length is mandatory on a stream (§18.3)
}

#: rows whose error must not be answered although they are requests: too little to answer with
UNANSWERABLE = {"test"}  # no Via, no CSeq

NEXT = (
    b"OPTIONS sip:next@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKnext\r\n"
    b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:next@example.com>\r\nCall-ID: next\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def outcome(data: bytes) -> str | int:
    try:
        parse_message(data)
    except SipError as exc:
        return exc.status
    return PARSE


def _content_length(data: bytes) -> list[bytes]:
    head = data[: data.find(b"\r\n\r\n")]
    return re.findall(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\S*)", head)


def frame_bytewise(data: bytes) -> tuple[list[bytes], SipError | None, StreamFramer]:
    """Feed ``data`` one byte at a time; the frames produced and the error raised, if any."""
    framer = StreamFramer()
    frames: list[bytes] = []
    for i in range(len(data)):
        framer.receive_data(data[i : i + 1])
        while True:
            try:
                item = framer.next_message()
            except SipError as exc:
                return frames, exc, framer
            if item is NEED_DATA:
                break
            if item is not KEEPALIVE:
                frames.append(item)  # type: ignore[arg-type]
    return frames, None, framer


def test_outcome_covers_manifest(case: Any) -> None:
    """Every MANIFEST row has a decided outcome."""
    assert case.name in OUTCOME


def test_outcome_agrees_with_manifest(case: Any) -> None:
    """The decided outcome is one the RFC allows for the row (``check``/``rfc_status``)."""
    c = case
    want = OUTCOME[c.name]
    allowed = c.rfc_status.split("|")
    if c.check == "no-400":
        assert want != 400
    if c.check == "no-2xx":
        assert want != PARSE
    if c.check == "response":
        return
    if want == PARSE:
        # parsing leads to forwarding or to a worker's status (416/420/483, 2xx at a registrar)
        assert set(allowed) & {"fwd", "416", "420", "483", "2xx"}, allowed
    else:
        assert str(want) in allowed


def test_outcome_table_has_no_stale_rows(torture: dict[str, bytes]) -> None:
    """OUTCOME names only rows the MANIFEST has (a renamed row fails loudly)."""
    assert set(OUTCOME) == set(torture)


class TestWhole:
    def test_parse(self, case: Any) -> None:
        """parse_message gives the decided outcome, and a parse matches the start line."""
        c = case
        want = OUTCOME[c.name]
        if want != PARSE:
            with pytest.raises(SipError) as info:
                parse_message(c.data)
            assert info.value.status == want
            return
        msg = parse_message(c.data)
        if c.is_request:
            assert isinstance(msg, Request)
            assert msg.method == c.method_or_code
            assert msg.cseq_method == msg.method
        else:
            assert isinstance(msg, Response)
            assert str(msg.status) == c.method_or_code
        assert msg.vias and msg.call_id and msg.from_.raw and msg.to.raw
        assert msg.raw[msg.body_start : msg.body_end] == msg.body

    @pytest.mark.torture(where=lambda c: OUTCOME.get(c.name) != PARSE)
    def test_answerable(self, case: Any) -> None:
        """Errors on requests carry enough to answer; responses and ACKs never are answered."""
        c = case
        with pytest.raises(SipError) as info:
            parse_message(c.data)
        exc = info.value
        want = c.is_request and c.name not in UNANSWERABLE and c.method_or_code != "ACK"
        assert exc.answerable is want
        if want:
            # the reply copies the Via and CSeq lines as they came (§8.2.6.2); it is not
            # re-parsed, since what it copies may be the very defect (badinv01's Via)
            assert exc.salvage is not None
            reply = build_response(exc.salvage, exc.status, exc.reason)
            assert reply.startswith(b"SIP/2.0 %d " % exc.status)
            names = [field_name(line.partition(b":")[0]) for line in exc.salvage.lines]
            assert "via" in names and "cseq" in names
            for line in exc.salvage.lines:
                assert line in c.data and line in reply

    def test_trailing_datagram_octets_ignored(self, case: Any) -> None:
        """Octets past Content-Length are not part of the message (§18.3)."""
        c = case
        trail = b"\r\nINVITE sip:x@example.com SIP/2.0\r\nVia: junk\r\n\r\nbody"
        want = OUTCOME[c.name]
        got = outcome(c.data + trail)
        if not _content_length(c.data):
            # no Content-Length: the body is the rest of the datagram (§18.3)
            if want == PARSE:
                assert parse_message(c.data + trail).body == parse_message(c.data).body + trail
            return
        assert got == want
        if want == PARSE:
            a, b = parse_message(c.data), parse_message(c.data + trail)
            assert (a.body, a.body_end, a.headers) == (b.body, b.body_end, b.headers)


class TestStream:
    def test_bytewise(self, case: Any) -> None:
        """One byte at a time, the framer cuts the message the datagram parse would read."""
        c = case
        frames, err, framer = frame_bytewise(c.data)
        want = STREAM.get(c.name, PARSE)
        if want == NEED_DATA.value:
            assert not frames and err is None
            assert framer.buffered == len(c.data) and framer.in_message
            return
        if want != PARSE:
            assert err is not None and err.status == want
            assert not frames
            return
        assert frames, "no message framed"
        first = frames[0]
        assert c.data.startswith(first)
        assert outcome(first) == OUTCOME[c.name]
        if OUTCOME[c.name] == PARSE:
            assert parse_message(first).body == parse_message(c.data).body
        if c.name == "dblreq":
            # over TCP the trailing bytes are a second INVITE; the archive's INVITE body runs 5
            # octets past its Content-Length, so what is left ("C\r\n\r\n") breaks the framing
            assert len(frames) == 2
            second = parse_message(frames[1])
            assert isinstance(second, Request) and second.method == "INVITE"
            assert err is not None and err.status == 400
        else:
            assert err is None
            assert len(frames) == 1
            assert framer.buffered == len(c.data) - len(first)

    # dblreq does not frame cleanly on a stream (see test_bytewise)
    @pytest.mark.torture(where=lambda c: c.name not in STREAM and c.name != "dblreq")
    def test_trailing_message_kept(self, case: Any) -> None:
        """Given the message and the next one in one read, the framer returns both in order."""
        c = case
        framer = StreamFramer()
        framer.receive_data(c.data + NEXT)
        frames = []
        while (item := framer.next_message()) is not NEED_DATA:
            if item is not KEEPALIVE:
                frames.append(item)
        assert frames[-1] == NEXT
        assert c.data.startswith(frames[0])
        assert framer.buffered == 0 and not framer.in_message


WORKER_STATUS = {"unkscm": 416, "novelsc": 416, "bext01": 420, "zeromf": 483}


@pytest.mark.torture(where=lambda c: c.name in WORKER_STATUS)
def test_worker_decides_the_rest(case: Any) -> None:
    """416, 420 and 483 come from the worker (§16.3) on messages the parser accepted."""
    c = case
    statuses = WORKER_STATUS
    from conf.load import from_dict
    from workers.proxy import Inbound, StatelessProxy
    from workers.routing.table import RoutingTable

    settings = from_dict({})
    proxy = StatelessProxy(settings, RoutingTable(settings))
    inb = Inbound("ingress.1-1", "udp", "127.0.0.2", 5060, 0, "127.0.0.1", 5060)
    out = proxy.handle(c.data, inb)
    reply = parse_message(out[0][2])
    assert isinstance(reply, Response) and reply.status == statuses[c.name]
