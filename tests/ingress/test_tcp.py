"""TcpHub over real loopback sockets on uvloop: framing, limits, keep-alives, caps, timeouts,
outbound connects, bounded write queues and connection reuse."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar

from structlog.testing import capture_logs

from conf.settings import Tcp
from ingress.sip.errors import SipError
from ingress.sip.serialize import build_response
from ingress.tcp import TcpConnection, TcpHub
from tests import aio

T = TypeVar("T")

#: what a test opened, closed by ``run`` even when the test fails (an open server or stream
#: left to the loop's shutdown hangs it under pytest's warnings-as-errors)
_opened: list[Any] = []


def run(fn: Callable[[], Awaitable[T]], timeout: float = 5.0) -> T:
    """``tests.aio.run``, closing what the test opened before the loop ends, even when the
    test fails."""
    return aio.run(fn, timeout, after=_close_opened)


async def _close_opened() -> None:
    while _opened:
        thing = _opened.pop()
        if isinstance(thing, Hub):
            await thing.stop()
        else:
            thing.close()


async def until(pred: Callable[[], Any], timeout: float = 3.0) -> None:
    """Poll ``pred`` until it is true; fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.005)


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Hub:
    """A listening TcpHub that records messages and errors; errors are answered with the
    codec's status, as ``ingress.service.Ingress._on_tcp_error`` does."""

    def __init__(self, cfg: Tcp) -> None:
        self.messages: list[tuple[TcpConnection, bytes]] = []
        self.errors: list[SipError] = []
        self.hub = TcpHub(cfg, self._on_message, self._on_error)
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        _opened.append(self)

    async def start(self) -> Hub:
        _, self.port = await self.hub.listen("127.0.0.1", 0)
        return self

    def _on_message(self, conn: TcpConnection, data: bytes) -> None:
        self.messages.append((conn, data))

    def _on_error(self, conn: TcpConnection, exc: SipError) -> None:
        self.errors.append(exc)
        if exc.answerable:
            assert exc.salvage is not None
            conn.write(build_response(exc.salvage, exc.status, exc.reason,
                                      extra_headers=exc.extra_headers))  # fmt: skip

    async def client(
        self, source: str = "127.0.0.1"
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
        self.writers.append(w)
        return r, w

    async def stop(self) -> None:
        """Close the hub, then every client (a writer left open warns, and warnings fail)."""
        await self.hub.close()
        for w in self.writers:
            w.close()


def request(body: bytes = b"", content_length: bool = True, pad: int = 0,
            call_id: str = "a84b4c76e66710") -> bytes:  # fmt: skip
    """An INVITE as a UA sends it over TCP; ``pad`` adds that many bytes of extra header."""
    lines = [
        b"INVITE sip:bob@biloxi.example.com SIP/2.0",
        b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
        b"Max-Forwards: 70",
        b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        b"To: Bob <sip:bob@biloxi.example.com>",
        b"Call-ID: " + call_id.encode(),
        b"CSeq: 1 INVITE",
        b"Contact: <sip:alice@client.atlanta.example.com;transport=tcp>",
    ]
    if pad:
        lines.append(b"X-Pad: " + b"a" * pad)
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Read until the server closes; what arrived before the close."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def settled(h: Hub) -> bool:
    """No bookkeeping left behind: nothing attached, counted, partial or connecting."""
    hub = h.hub
    return not (hub.conns or hub.by_peer or hub.per_ip or hub.partial or hub._connects)


# -- inbound: framing -------------------------------------------------------------------------


def test_message_arriving_whole() -> None:
    """A message written in one piece is delivered once, byte for byte."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        _, w = await h.client()
        w.write(request(b"v=0\r\n"))
        await until(lambda: h.messages)
        assert h.messages[0][1] == request(b"v=0\r\n")
        assert h.hub.partial == {} and h.messages[0][0].framer is None
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_pipelined_messages_and_trailing_partial() -> None:
    """Two messages and the start of a third in one write give two messages, then the third."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        _, w = await h.client()
        a, b, c = (request(b"x", call_id=f"id{i}") for i in range(3))
        w.write(a + b + c[:10])
        await until(lambda: len(h.messages) == 2)
        assert list(h.hub.partial) == [h.messages[0][0].conn_id]
        w.write(c[10:])
        await until(lambda: len(h.messages) == 3)
        assert [m for _, m in h.messages] == [a, b, c]
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_message_one_byte_at_a_time() -> None:
    """A message trickled one byte per write is reassembled (within the read cap)."""

    async def main() -> None:
        msg = request(b"hello")
        h = await Hub(Tcp(max_reads_per_message=len(msg) + 1)).start()
        _, w = await h.client()
        for i in range(len(msg)):
            w.write(msg[i : i + 1])
            await w.drain()
        await until(lambda: h.messages)
        assert h.messages[0][1] == msg
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


# -- inbound: slow senders and oversize / malformed messages ----------------------------------


def test_slow_sender_closed_after_deadline() -> None:
    """Part of a message that does not complete within the deadline: closed, one event."""

    async def main() -> None:
        h = await Hub(Tcp(message_deadline_ms=150)).start()
        r, w = await h.client()
        w.write(request()[:40])
        assert await closed_by_server(r) == b""
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    closed = events(logs, "tcp_closed")
    assert [e["reason"] for e in closed] == ["message_deadline"]
    assert closed[0]["buffered"] == 40


def test_too_many_reads_closed() -> None:
    """A message needing more reads than allowed: closed on the read past the cap."""

    async def main() -> None:
        h = await Hub(Tcp(max_reads_per_message=3)).start()
        r, w = await h.client()
        msg = request()

        def buffered() -> int:
            conns = list(h.hub.partial.values())
            return conns[0].framer.buffered if conns and conns[0].framer else 0

        for i in range(3):  # one byte per read: wait for each before sending the next
            w.write(msg[i : i + 1])
            await until(lambda n=i + 1: buffered() == n)  # type: ignore[misc]
        w.write(msg[3:4])
        assert await closed_by_server(r) == b""
        assert h.messages == []
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    assert [(e["reason"], e["reads"]) for e in events(logs, "tcp_closed")] == [
        ("too_many_reads", 4)
    ]


def test_oversize_header_answered_513_then_closed() -> None:
    """A header section past its cap gets 513 from the codec via on_error, then EOF."""

    async def main() -> None:
        h = await Hub(Tcp(max_header_bytes=512)).start()
        r, w = await h.client()
        w.write(request(pad=2000))
        answer = await closed_by_server(r)
        assert answer.startswith(b"SIP/2.0 513 "), answer
        assert b"Call-ID: a84b4c76e66710\r\n" in answer
        assert h.messages == [] and [e.status for e in h.errors] == [513]
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    assert [(e["reason"], e["status"]) for e in events(logs, "tcp_closed")] == [
        ("framing_error", 513)
    ]


def test_oversize_header_without_terminator_answered_513() -> None:
    """Header bytes past the cap with no blank line yet: 513 without waiting for the rest."""

    async def main() -> None:
        h = await Hub(Tcp(max_header_bytes=512)).start()
        r, w = await h.client()
        w.write(request(pad=2000)[:1500])
        # the codec answers when it can salvage Via/From/To/Call-ID/CSeq from a truncated
        # head; either way the connection is closed at once, not left to the deadline
        answer = await closed_by_server(r)
        assert answer == b"" or answer.startswith(b"SIP/2.0 513 "), answer
        assert [e.status for e in h.errors] == [513]
        await h.stop()

    run(main)


def test_oversize_body_answered_413_then_closed() -> None:
    """A Content-Length past the body cap gets 413 and the connection is closed."""

    async def main() -> None:
        h = await Hub(Tcp(max_body_bytes=1000)).start()
        r, w = await h.client()
        w.write(request(b"x" * 5000))
        answer = await closed_by_server(r)
        assert answer.startswith(b"SIP/2.0 413 "), answer
        assert [e.status for e in h.errors] == [413] and h.messages == []
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_missing_content_length_answered_400_then_closed() -> None:
    """No Content-Length on a stream: 400 and closed (the framing is lost)."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        r, w = await h.client()
        w.write(request(content_length=False))
        answer = await closed_by_server(r)
        assert answer.startswith(b"SIP/2.0 400 "), answer
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_keepalive_ping_gets_pong() -> None:
    """RFC 5626 §3.5.1: CRLFCRLF is answered with CRLF and the connection stays usable."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        r, w = await h.client()
        w.write(b"\r\n\r\n")
        assert await r.readexactly(2) == b"\r\n"
        w.write(b"\r\n\r\n" + request())
        assert await r.readexactly(2) == b"\r\n"
        await until(lambda: h.messages)
        assert h.messages[0][1] == request() and h.hub.partial == {}
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


# -- inbound: caps and timeouts -----------------------------------------------------------------


def test_per_ip_cap_refuses_extra_connection() -> None:
    """Past max_connections_per_ip a source's new connection is refused; other sources are not."""

    async def main() -> None:
        h = await Hub(Tcp(max_connections_per_ip=2)).start()
        clients = [await h.client() for _ in range(2)]
        await until(lambda: h.hub.per_ip.get("127.0.0.1") == 2)
        r3, _ = await h.client()
        assert await closed_by_server(r3) == b""
        r4, w4 = await h.client("127.0.0.2")  # another source is still welcome
        w4.write(request())
        await until(lambda: len(h.messages) == 1)
        assert h.hub.per_ip == {"127.0.0.1": 2, "127.0.0.2": 1}
        for _, w in [*clients, (r4, w4)]:
            w.close()
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    assert [e["reason"] for e in events(logs, "tcp_refused")] == ["max_connections_per_ip"]


def test_global_cap_refuses_extra_connection() -> None:
    """Past max_connections any new connection is refused, whatever its source."""

    async def main() -> None:
        h = await Hub(Tcp(max_connections=2)).start()
        clients = [await h.client(f"127.0.0.{i}") for i in (2, 3)]
        await until(lambda: len(h.hub.conns) == 2)
        r3, _ = await h.client("127.0.0.4")
        assert await closed_by_server(r3) == b""
        assert h.hub.per_ip == {"127.0.0.2": 1, "127.0.0.3": 1}
        for _, w in clients:
            w.close()
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    assert [e["reason"] for e in events(logs, "tcp_refused")] == ["max_connections"]


def test_closes_and_refusals_are_counted_by_source_not_logged() -> None:
    """Every close and refusal a peer causes goes to the hub's tally under its address and
    reason; the per-connection events are DEBUG only (a peer must not set our log volume)."""

    async def main() -> None:
        h = await Hub(Tcp(max_connections_per_ip=1, message_deadline_ms=100)).start()
        r1, w1 = await h.client()
        await until(lambda: h.hub.per_ip.get("127.0.0.1") == 1)
        for _ in range(3):  # refused: over the per-IP cap
            r, _ = await h.client()
            assert await closed_by_server(r) == b""
        w1.write(request()[:40])  # never completed: closed at the deadline
        assert await closed_by_server(r1) == b""
        await until(lambda: settled(h))
        assert h.hub.rejects.totals == {"tcp_refused_max_connections_per_ip": 3,
                                        "tcp_message_deadline": 1}  # fmt: skip
        (line,) = h.hub.rejects.take(h.hub.loop.time())
        assert (line["src"], line["count"]) == ("127.0.0.1", 4)
        await h.stop()

    with capture_logs() as logs:
        run(main)
    per_conn = events(logs, "tcp_closed") + events(logs, "tcp_refused")
    assert len(per_conn) == 4 and {e["log_level"] for e in per_conn} == {"debug"}


def test_idle_connection_closed() -> None:
    """A connection with no traffic for idle_timeout_s is closed, one event."""

    async def main() -> None:
        h = await Hub(Tcp(idle_timeout_s=0.2)).start()
        r, w = await h.client()
        w.write(b"\r\n\r\n")
        assert await r.readexactly(2) == b"\r\n"
        assert await closed_by_server(r) == b""
        await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    assert [e["reason"] for e in events(logs, "tcp_closed")] == ["idle"]


# -- outbound and reuse -------------------------------------------------------------------------


class _Writers:
    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers

    def close(self) -> None:
        for w in self.writers:
            w.close()


async def peer_server() -> tuple[asyncio.Server, int, list[bytes], list[asyncio.StreamWriter]]:
    """A plain TCP peer recording every byte it receives, and its accepted writers."""
    got: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        writers.append(w)
        while chunk := await r.read(65536):
            got.append(chunk)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    _opened.append(server)
    _opened.append(_Writers(writers))
    return server, server.sockets[0].getsockname()[1], got, writers


def test_outbound_send_arrives_and_is_reused() -> None:
    """A send to a new peer connects, delivers, and later sends reuse that connection."""

    async def main() -> None:
        h = Hub(Tcp())
        server, port, got, writers = await peer_server()
        assert h.hub.send("127.0.0.1", port, 0, b"one")  # queued while connecting
        assert h.hub.send("127.0.0.1", port, 0, b"two")
        await until(lambda: b"".join(got) == b"onetwo")
        assert len(h.hub.conns) == 1
        (conn,) = h.hub.conns.values()
        assert h.hub.send("127.0.0.1", port, 0, b"three")
        assert h.hub.send("127.0.0.1", port, conn.conn_id, b"four")
        await until(lambda: b"".join(got) == b"onetwothreefour")
        assert len(writers) == 1 and h.hub.per_ip == {}
        # the peer answers on the same connection: it is framed like any inbound stream
        writers[0].write(request())
        await until(lambda: h.messages)
        assert h.messages[0][0] is conn
        writers[0].close()
        await until(lambda: settled(h))
        server.close()
        await h.stop()

    run(main)


def test_reply_reuses_inbound_connection() -> None:
    """A send to the address of an inbound connection goes on it, by address, or by id with
    the peer's address and another port (a Via without rport names its listening port)."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        r, w = await h.client()
        w.write(request())
        await until(lambda: h.messages)
        conn = h.messages[0][0]
        ip, port = w.get_extra_info("sockname")[:2]
        assert conn.peer == (ip, port)
        assert h.hub.send(ip, port, 0, b"by-address")
        assert h.hub.send(ip, 5060, conn.conn_id, b"by-id")
        assert await r.readexactly(len(b"by-addressby-id")) == b"by-addressby-id"
        assert h.hub._connects == set()  # nothing was dialled
        assert h.hub.mismatched == 0
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_connection_id_of_another_peer_is_not_used() -> None:
    """A connection id naming a connection to another address (a forged Via tag) is treated
    as unknown: counted, and the message goes where the address says, never on that
    connection."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        r, w = await h.client()
        w.write(request())
        await until(lambda: h.messages)
        conn = h.messages[0][0]
        ip, port = w.get_extra_info("sockname")[:2]
        with capture_logs() as logs:
            h.hub.send("127.0.0.2", free_port(), conn.conn_id, b"forged")
            await until(lambda: any(e["event"] == "tcp_connect_failed" for e in logs))
        assert h.hub.mismatched == 1 and h.hub.stats()["tcp_conn_mismatch"] == 1
        assert h.hub.send(ip, port, 0, b"after")  # the stream's next bytes are these
        assert await r.readexactly(len(b"after")) == b"after"
        w.close()
        await until(lambda: settled(h))
        await h.stop()

    run(main)


def test_outbound_connection_checks_port_too() -> None:
    """A connection we dialled leads to its address and port only; an inbound one to its
    peer's address whatever the port (rule 4)."""

    async def main() -> None:
        h = Hub(Tcp())
        out = TcpConnection(h.hub, 1, outbound=True)
        out.peer = ("127.0.0.5", 5070)
        assert out.reaches("127.0.0.5", 5070)
        assert not out.reaches("127.0.0.5", 5071) and not out.reaches("127.0.0.6", 5070)
        inb = TcpConnection(h.hub, 2, outbound=False)
        inb.peer = ("127.0.0.5", 40000)
        assert inb.reaches("127.0.0.5", 5060) and not inb.reaches("127.0.0.6", 40000)
        await h.stop()

    run(main)


def test_connect_to_dead_port_fails_logs_and_leaks_nothing() -> None:
    """A send to a dead port is accepted while connecting; the failure drops it with one
    event, and the next send makes a fresh attempt."""

    async def main() -> None:
        h = Hub(Tcp())
        port = free_port()
        for attempt in (1, 2):
            assert h.hub.send("127.0.0.1", port, 0, b"a")
            assert h.hub.send("127.0.0.1", port, 0, b"b")
            assert len(h.hub._connects) == 1
            await until(lambda: settled(h))
        await h.stop()

    with capture_logs() as logs:
        run(main)
    failed = events(logs, "tcp_connect_failed")
    assert [e["dropped"] for e in failed] == [2, 2]
    assert failed[0]["peer"].startswith("127.0.0.1:")


def test_write_queue_bounded_while_connecting() -> None:
    """While connecting, sends past write_queue_bytes fail instead of growing the queue."""

    async def main() -> None:
        h = Hub(Tcp(write_queue_bytes=4096))
        server, port, got, _ = await peer_server()
        assert h.hub.send("127.0.0.1", port, 0, b"x" * 3000)
        assert not h.hub.send("127.0.0.1", port, 0, b"y" * 3000)
        assert h.hub.send("127.0.0.1", port, 0, b"z" * 1000)
        await until(lambda: sum(map(len, got)) == 4000)
        assert b"y" not in b"".join(got)
        server.close()
        await h.stop()

    run(main)


def test_write_queue_full_fails_send() -> None:
    """A peer that never reads: sends succeed until the bounded queue is full, then fail."""

    async def main() -> None:
        h = Hub(Tcp(write_queue_bytes=65536))
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()  # never accepts, never reads: the kernel completes the handshake
        port = lsock.getsockname()[1]
        try:
            assert h.hub.send("127.0.0.1", port, 0, b"hello")
            await until(lambda: h.hub.conns)
            (conn,) = h.hub.conns.values()
            assert conn.transport is not None
            chunk = b"x" * 8192
            for _ in range(20_000):  # bounded: kernel buffers are a few MB at most
                if not h.hub.send("127.0.0.1", port, 0, chunk):
                    break
                await asyncio.sleep(0)  # let the kernel buffers fill
            else:
                raise AssertionError("the write queue never filled")
            assert 65536 - len(chunk) < conn.transport.get_write_buffer_size() <= 65536
            assert not h.hub.send("127.0.0.1", port, conn.conn_id, chunk)  # and stays full
            await h.stop()
            assert settled(h) or h.hub.conns == {}
        finally:
            lsock.close()

    run(main)


# -- lifecycle ------------------------------------------------------------------------------


def test_close_is_fast_idempotent_and_cancels_connects() -> None:
    """close() drops every connection and pending connect at once and may be called twice."""

    async def main() -> None:
        h = await Hub(Tcp()).start()
        clients = [await h.client() for _ in range(5)]
        await until(lambda: len(h.hub.conns) == 5)
        server, port, _, _ = await peer_server()
        assert h.hub.send("127.0.0.1", port, 0, b"x")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await h.stop()
        await h.stop()
        assert loop.time() - t0 < 1.0
        assert h.hub._connects == set() and h.hub.conns == {}
        for r, _ in clients:
            assert await closed_by_server(r) == b""
        assert not h.hub.send("127.0.0.1", port, 0, b"y")  # no connects after close
        server.close()

    with capture_logs() as logs:
        run(main)
    (shutdown,) = events(logs, "tcp_shutdown")
    assert shutdown["closed"] == 5 and events(logs, "tcp_closed") == []


def test_connect_timeout_drops_queued_sends() -> None:
    """A connect that hangs (the peer's accept queue is full, SYNs are dropped) gives up after
    connect_timeout_ms; what was queued is dropped with one event and nothing is left."""

    async def main() -> None:
        h = Hub(Tcp(connect_timeout_ms=150))
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)  # never accepts: a queue of one, filled below
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(3):  # fill the accept queue (the kernel allows backlog + 1)
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", port))
                fillers.append(f)
            assert h.hub.send("127.0.0.1", port, 0, b"INVITE")
            await until(lambda: settled(h))
        finally:
            for f in fillers:
                f.close()
            lsock.close()

    with capture_logs() as logs:
        run(main)
    (failed,) = events(logs, "tcp_connect_failed")
    assert failed["error"] == "timeout" and failed["dropped"] == 1
