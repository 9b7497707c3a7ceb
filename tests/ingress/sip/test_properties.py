"""Property tests (h11 ``fuzz/afl-server.py`` as hypothesis).

Invariant: for any input, ``parse_message`` returns a ``Request``/``Response`` or raises
``SipError``; ``StreamFramer`` returns a message, a signal or raises ``SipError``, and holds
exactly the bytes fed and not yet returned. Anything else is a bug.
"""

from __future__ import annotations

import random
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingress.sip.errors import SipError
from ingress.sip.framer import KEEPALIVE, NEED_DATA, StreamFramer
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message

#: differing_executors: ./dev mutate (mutmut) runs these methods again in one process, each
#: time on a new instance of their class, which holds no state
CHECKS_OFF = [HealthCheck.too_slow, HealthCheck.differing_executors]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=CHECKS_OFF)
SLOW = settings(max_examples=120, deadline=None, suppress_health_check=CHECKS_OFF)

# fragments that steer random input into the parser's deeper branches
FRAGMENTS = [
    b"INVITE ", b"ACK ", b"SIP/2.0 200 OK", b"sip:", b"sips:", b"u@h", b"[2001:db8::1]", b":5060",
    b" SIP/2.0", b"SIP/7.0", b"\r\n", b"\n", b"\r", b"\r\n\r\n", b" ", b"\t", b"\r\n ",
    b"Via: ", b"v: ", b"SIP/2.0/UDP ", b";branch=z9hG4bK", b";received=", b";rport", b"From: ",
    b"To: ", b"t: ", b"Call-ID: ", b"CSeq: ", b"1 INVITE", b"Max-Forwards: ", b"70",
    b"Content-Length: ", b"l: ", b"0", b"99999999999", b"-1", b"Contact: ", b"Route: ", b"*",
    b"<", b">", b'"', b"\\", b",", b";", b"=", b":", b"?", b"%", b"@", b"\x00", b"\xff", b"tag=",
]  # fmt: skip
sip_ish = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=60).map(b"".join)


def check_parse(data: bytes) -> Request | Response | None:
    """Parse ``data`` and hold the result to the invariant and to its own offsets."""
    try:
        msg = parse_message(data)
    except SipError as exc:
        assert 400 <= exc.status < 600
        assert isinstance(exc.answerable, bool)
        return None
    assert isinstance(msg, (Request, Response))
    assert 0 < msg.line_end <= msg.body_start <= msg.body_end <= len(data)
    assert msg.body == data[msg.body_start : msg.body_end]
    for _, _, start, end in msg.headers:
        assert msg.line_end <= start < end <= msg.body_start
    assert msg.vias and msg.call_id
    # the lazy parts of the views must not fail once the message parsed
    for v in msg.vias:
        assert isinstance(v.params, dict)
        _ = (v.branch, v.received, v.host_plain)
    for na in (msg.from_, msg.to):
        _ = (na.tag, na.uri.host, na.params)
    if isinstance(msg, Request):
        _ = (msg.uri.params, msg.uri.host_plain, msg.uri.param("lr"))
    return msg


def check_frames(chunks: list[bytes]) -> list[bytes]:
    """Feed ``chunks`` to a framer and hold it to the invariant; the messages it cut."""
    f = StreamFramer(max_header_bytes=4096, max_body_bytes=4096)
    stream = b""
    out: list[bytes] = []
    for chunk in chunks:
        f.receive_data(chunk)
        stream += chunk
        while True:
            try:
                item = f.next_message()
            except SipError as exc:
                assert 400 <= exc.status < 600
                return out
            if item is NEED_DATA:
                break
            if item is not KEEPALIVE:
                assert isinstance(item, bytes)
                out.append(item)
        # the buffer is exactly the unconsumed tail of the stream: no copies, no padding ...
        assert bytes(f._buf) == stream[len(stream) - f.buffered :]
        # ... and costs what it holds (bytearray over-allocates at most ~2x), never a fixed block
        assert sys.getsizeof(f._buf) <= 2 * f.buffered + 128
    # every message is a whole run of the stream, in order
    pos = 0
    for m in out:
        at = stream.find(m, pos)
        assert at >= 0 and not stream[pos:at].strip(b"\r\n")  # only CRLFs between
        pos = at + len(m)
    return out


class TestArbitraryBytes:
    @FUZZ
    @given(st.binary(max_size=2048))
    def test_parse_binary(self, data: bytes) -> None:
        """Random bytes: a message or a SipError."""
        check_parse(data)

    @FUZZ
    @given(sip_ish)
    def test_parse_sip_ish(self, data: bytes) -> None:
        """SIP-looking fragments in random order: a message or a SipError."""
        check_parse(data)

    @FUZZ
    @given(st.lists(st.binary(max_size=64) | sip_ish, max_size=20))
    def test_framer_chunks(self, chunks: list[bytes]) -> None:
        """Random reads: messages, signals or a SipError; memory tracks bytes buffered."""
        for frame in check_frames(chunks):
            check_parse(frame)


MUTATIONS = ["flip", "truncate", "duplicate", "delete", "insert", "shuffle", "swap-case"]


def mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    for op, a, b, extra in ops:
        n = len(data)
        if n == 0:
            return extra
        i, j = sorted((a % n, b % n))
        if op == "flip":
            data = data[:i] + bytes([data[i] ^ (1 << (b % 8))]) + data[i + 1 :]
        elif op == "truncate":
            data = data[:i]
        elif op == "duplicate":
            data = data[:j] + data[i:j] + data[j:]
        elif op == "delete":
            data = data[:i] + data[j:]
        elif op == "insert":
            data = data[:i] + extra + data[i:]
        elif op == "shuffle":
            head, sep, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            rest = lines[1:]
            random.Random(a).shuffle(rest)
            data = b"\r\n".join(lines[:1] + rest) + sep + body
        elif op == "swap-case":
            data = data[:i] + data[i:j].swapcase() + data[j:]
    return data


mutation_ops = st.lists(
    st.tuples(
        st.sampled_from(MUTATIONS),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
        st.sampled_from(FRAGMENTS) | st.binary(max_size=8),
    ),
    min_size=1,
    max_size=4,
)


class TestMutatedCorpus:
    @SLOW
    @given(index=st.integers(0, 10_000), ops=mutation_ops)
    def test_parse_mutated(self, corpus: list[bytes], index: int, ops: list) -> None:  # type: ignore[type-arg]
        """Byte flips, truncation, duplication, header shuffles: a message or a SipError."""
        if corpus:
            check_parse(mutate(corpus[index % len(corpus)], ops))

    @SLOW
    @given(index=st.integers(0, 10_000), ops=mutation_ops, cut=st.integers(1, 64))
    def test_frame_mutated(self, corpus: list[bytes], index: int, ops: list, cut: int) -> None:  # type: ignore[type-arg]
        """Mutated messages in reads of ``cut`` bytes: the framer keeps its invariant."""
        if corpus:
            data = mutate(corpus[index % len(corpus)], ops)
            chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
            for frame in check_frames(chunks):
                check_parse(frame)


# -- round trip ---------------------------------------------------------------------------------

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)  # fmt: skip
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(
    lambda g: "[" + ":".join(f"{x:x}" for x in g) + "]"
)
host = hostname | ipv4 | ipv6
port = st.none() | st.integers(1, 65535)
user = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()&=+$,;?/", min_size=1, max_size=12)
display = st.none() | token | st.text("abc XYZ,;<>@:", max_size=10).map(lambda s: '"' + s + '"')
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "NEWTHING"]


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    f: dict[str, object] = {
        "method": draw(st.sampled_from(METHODS)),
        "user": draw(st.none() | user),
        "host": draw(host),
        "port": draw(port),
        "via_transport": draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP"])),
        "via_host": draw(host),
        "via_port": draw(port),
        "branch": "z9hG4bK" + draw(token),
        "from_display": draw(display),
        "from_tag": draw(token),
        "to_tag": draw(st.none() | token),
        "call_id": draw(token) + draw(st.sampled_from(["", "@" + "h"])),
        "cseq": draw(st.integers(0, 2**32 - 1)),
        "max_forwards": draw(st.none() | st.integers(0, 255)),
        "body": draw(st.binary(max_size=64)),
    }
    compact = draw(st.booleans())
    fold = draw(st.booleans())

    def hp(h: object, p: object) -> str:
        return f"{h}" + (f":{p}" if p is not None else "")

    uri = "sip:" + (f"{f['user']}@" if f["user"] else "") + hp(f["host"], f["port"])
    disp = f"{f['from_display']} " if f["from_display"] else ""
    to = "<sip:callee@example.com>" + (f";tag={f['to_tag']}" if f["to_tag"] else "")
    via = f"SIP/2.0/{f['via_transport']} {hp(f['via_host'], f['via_port'])};branch={f['branch']}"
    lines = [
        f"{'v' if compact else 'Via'}: {via}",
        f"{'f' if compact else 'From'}: {disp}<sip:caller@example.org>;tag={f['from_tag']}",
        f"{'t' if compact else 'To'}:{chr(13) + chr(10) + ' ' if fold else ' '}{to}",
        f"{'i' if compact else 'Call-ID'}: {f['call_id']}",
        f"CSeq: {f['cseq']} {f['method']}",
    ]
    if f["max_forwards"] is not None:
        lines.append(f"Max-Forwards: {f['max_forwards']}")
    lines.append(f"{'l' if compact else 'Content-Length'}: {len(f['body'])}")  # type: ignore[arg-type]
    order = draw(st.permutations(lines))
    head = f"{f['method']} {uri} SIP/2.0\r\n" + "".join(line + "\r\n" for line in order)
    return head.encode() + b"\r\n" + f["body"], f  # type: ignore[operator]


@FUZZ
@given(requests())
def test_round_trip(built: tuple[bytes, dict[str, object]]) -> None:
    """A message built from fields parses back to those fields."""
    data, f = built
    req = parse_message(data)
    assert isinstance(req, Request)
    assert req.method == f["method"] and req.cseq_method == f["method"]
    assert (req.uri.user, req.uri.host, req.uri.port) == (f["user"], f["host"], f["port"])
    via = req.vias[0]
    assert (via.transport, via.host, via.port, via.branch) == (
        f["via_transport"], f["via_host"], f["via_port"], f["branch"]
    )  # fmt: skip
    assert req.from_.display == f["from_display"] and req.from_.tag == f["from_tag"]
    assert req.to.tag == f["to_tag"]
    assert (req.call_id, req.cseq, req.max_forwards) == (f["call_id"], f["cseq"], f["max_forwards"])
    assert req.body == f["body"]
    check_parse(data)
