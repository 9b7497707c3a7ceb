"""TcpHub with TLS over real loopback sockets on uvloop: handshakes, client certificates and
their names, handshake bounds (time, count per source), fragmentation over TLS, outbound TLS
with server verification, and TLS kept apart from TCP."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conf import tlsfiles
from conf.settings import Tcp, Tls
from ingress.tcp import TcpConnection, TcpHub
from ingress.tls import TlsClient, TlsServer
from tests import aio
from tests.ingress.test_tcp import request, until
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Hub:
    """A TcpHub with one TLS listener, recording what arrives."""

    def __init__(self, pki: Pki, tls: Tls | None = None, verify_client: str = "none",
                 names: tuple[str, ...] = (), client: TlsClient | None = None) -> None:  # fmt: skip
        self.messages: list[tuple[TcpConnection, bytes]] = []
        self.hub = TcpHub(Tcp(message_deadline_ms=2000), self._on_message, lambda c, e: None,
                          tls_cfg=tls or Tls(), tls_client=client)  # fmt: skip
        ctx = tlsfiles.server_context(pki.server_cert, pki.server_key, verify_client, pki.ca)
        self.server = TlsServer(ctx, names)
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Hub:
        _, self.port = await self.hub.listen("127.0.0.1", 0, self.server)
        return self

    def _on_message(self, conn: TcpConnection, data: bytes) -> None:
        self.messages.append((conn, data))

    async def client(self, ctx: ssl.SSLContext, source: str = "127.0.0.1",
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:  # fmt: skip
        r, w = await asyncio.open_connection("127.0.0.1", self.port, ssl=ctx,
                                             local_addr=(source, 0),
                                             server_hostname="127.0.0.1")  # fmt: skip
        self.writers.append(w)
        return r, w

    async def raw(self, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(source, 0))
        self.writers.append(w)
        return r, w

    async def stop(self) -> None:
        await self.hub.close()
        for w in self.writers:
            w.close()


def client_ctx(pki: Pki, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    return tlsfiles.client_context(True, pki.ca, *(cert or ("", "")))


async def closed_by_peer(r: asyncio.StreamReader, timeout: float = 3.0) -> bool:
    """True once the hub ended the connection (EOF or reset)."""
    try:
        async with asyncio.timeout(timeout):
            return await r.read(100) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def run_hub(pki: Pki, body: object, **kw: object) -> None:
    async def main() -> None:
        hub = await Hub(pki, **kw).start()  # type: ignore[arg-type]
        try:
            await body(hub)  # type: ignore[operator]
        finally:
            await hub.stop()

    aio.run(main, 10.0)


class TestInbound:
    def test_request_and_answer_on_the_same_connection(self, pki: Pki) -> None:
        """A request over TLS arrives whole, marked TLS; the answer goes back on it."""

        async def body(hub: Hub) -> None:
            r, w = await hub.client(client_ctx(pki))
            w.write(request(b"v=0\r\n"))
            await until(lambda: hub.messages)
            conn, data = hub.messages[0]
            assert data == request(b"v=0\r\n") and conn.tls and not conn.outbound
            assert conn.write(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            assert await r.readuntil(b"\r\n\r\n") == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
            assert hub.hub.stats()["tls_handshaking"] == 0

        run_hub(pki, body)

    def test_fragmented_over_tls(self, pki: Pki) -> None:
        """A message written a few bytes per TLS record is framed like over TCP."""

        async def body(hub: Hub) -> None:
            _, w = await hub.client(client_ctx(pki))
            data = request(b"x" * 40) * 2
            for i in range(0, len(data), 37):
                w.write(data[i:i + 37])
                await w.drain()
            await until(lambda: len(hub.messages) == 2)
            assert [m for _, m in hub.messages] == [request(b"x" * 40)] * 2

        run_hub(pki, body)

    def test_slow_sender_over_tls(self, pki: Pki) -> None:
        """A message left unfinished over TLS is cut at the message deadline (2 s here), as
        over TCP: the deadline applies to the decrypted bytes."""

        async def body(hub: Hub) -> None:
            r, w = await hub.client(client_ctx(pki))
            t0 = asyncio.get_running_loop().time()  # the message's first byte comes later
            w.write(request()[:40])
            await until(lambda: hub.hub.partial)
            assert await closed_by_peer(r, 8.0)
            assert asyncio.get_running_loop().time() - t0 >= 2.0
            assert hub.hub.rejects.totals.get("tcp_message_deadline") == 1 and not hub.messages

        run_hub(pki, body)

    def test_client_certificate_required(self, pki: Pki) -> None:
        """verify_client = require: a client without a certificate, or with one the CA did
        not sign, is refused; one with a CA-signed certificate gets through."""

        async def body(hub: Hub) -> None:
            for cert in (None, pki.client("self.example.com", ca=False)):
                try:
                    r, w = await hub.client(client_ctx(pki, cert))
                    w.write(request())
                    assert await closed_by_peer(r)  # TLS 1.3: refused after the client's Finished
                except (ssl.SSLError, ConnectionError):
                    pass
            await until(lambda: hub.hub.rejects.totals.get("tls_handshake_failed", 0) == 2)
            assert hub.messages == [] and not hub.hub.conns
            _, w = await hub.client(client_ctx(pki, pki.client("trunk.example.com")))
            w.write(request())
            await until(lambda: hub.messages)

        run_hub(pki, body, verify_client="require")

    def test_client_names(self, pki: Pki) -> None:
        """client_names: a CA-signed certificate naming another host is refused after the
        handshake, one naming an allowed host is served."""

        async def body(hub: Hub) -> None:
            r, w = await hub.client(client_ctx(pki, pki.client("rogue.example.org")))
            w.write(request())
            assert await closed_by_peer(r)
            assert hub.hub.rejects.totals.get("tls_client_name") == 1
            _, w = await hub.client(client_ctx(pki, pki.client("gw1.carrier.net")))
            w.write(request())
            await until(lambda: hub.messages)
            assert len(hub.messages) == 1

        run_hub(pki, body, verify_client="require", names=("*.carrier.net",))

    def test_silent_and_garbage_handshakes_do_not_block_others(self, pki: Pki) -> None:
        """A client that says nothing is cut at the handshake timeout, one that sends garbage
        at once; meanwhile another client is served."""

        async def body(hub: Hub) -> None:
            silent_r, _ = await hub.raw()
            garbage_r, garbage_w = await hub.raw()
            garbage_w.write(b"INVITE sip:x SIP/2.0\r\n\r\n" * 4)
            _, w = await hub.client(client_ctx(pki))
            w.write(request())
            await until(lambda: hub.messages)
            assert await closed_by_peer(garbage_r, 1.0)
            t0 = asyncio.get_running_loop().time()
            assert await closed_by_peer(silent_r, 3.0)
            assert asyncio.get_running_loop().time() - t0 < 2.0
            totals = hub.hub.rejects.totals
            assert totals.get("tls_handshake_timeout") == 1
            assert totals.get("tls_handshake_failed") == 1
            assert hub.hub.stats()["tls_handshaking"] == 0 and len(hub.hub.conns) == 1

        run_hub(pki, body, tls=Tls(handshake_timeout_ms=400))

    def test_handshakes_per_source_bounded(self, pki: Pki) -> None:
        """Past max_handshakes_per_ip, a source's next connection is refused at once; another
        source is not affected, and a slot frees when a handshake ends."""

        async def body(hub: Hub) -> None:
            held = [await hub.raw("127.0.0.2") for _ in range(2)]
            await until(lambda: hub.hub.stats()["tls_handshaking"] == 2)
            r3, _ = await hub.raw("127.0.0.2")
            assert await closed_by_peer(r3, 1.0)
            assert hub.hub.rejects.totals.get("tls_refused_max_handshakes_per_ip") == 1
            _, w = await hub.client(client_ctx(pki), "127.0.0.3")
            w.write(request())
            await until(lambda: hub.messages)
            held[0][1].close()
            await until(lambda: hub.hub.stats()["tls_handshaking"] == 1)
            _, w = await hub.client(client_ctx(pki), "127.0.0.2")
            w.write(request())
            await until(lambda: len(hub.messages) == 2)

        run_hub(pki, body, tls=Tls(max_handshakes_per_ip=2, handshake_timeout_ms=5000))


    def test_handshakes_in_total_bounded(self, pki: Pki) -> None:
        """Past max_handshakes, a connection from any source is refused at once."""

        async def body(hub: Hub) -> None:
            held = [await hub.raw(src) for src in ("127.0.0.2", "127.0.0.3")]
            await until(lambda: hub.hub.stats()["tls_handshaking"] == 2)
            r, _ = await hub.raw("127.0.0.4")
            assert await closed_by_peer(r, 1.0)
            assert hub.hub.rejects.totals.get("tls_refused_max_handshakes") == 1
            assert len(held) == 2

        run_hub(pki, body, tls=Tls(max_handshakes=2, max_handshakes_per_ip=2,
                                   handshake_timeout_ms=5000))  # fmt: skip

    def test_bad_record_after_the_handshake_ends_that_connection(self, pki: Pki) -> None:
        """Bytes that are not a TLS record, written under an established session, end that
        connection (tls_error); the hub and another connection carry on."""

        def handshake_then_garbage(port: int) -> bytes:
            raw = socket.create_connection(("127.0.0.1", port), timeout=3)
            tls = client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1")
            with socket.socket(fileno=os.dup(tls.fileno())) as under:
                under.sendall(b"\x17\x03\x03\x00\x10" + b"not a real record")
            try:
                return tls.recv(100)
            except (ssl.SSLError, OSError):
                return b""
            finally:
                tls.close()

        async def body(hub: Hub) -> None:
            _, w = await hub.client(client_ctx(pki))
            assert await asyncio.to_thread(handshake_then_garbage, hub.port) == b""
            assert hub.hub.rejects.totals.get("tls_error") == 1
            w.write(request())
            await until(lambda: hub.messages)

        run_hub(pki, body)


class TestOutbound:
    @staticmethod
    async def tls_server(pki: Pki, got: list[bytes]) -> tuple[asyncio.Server, int]:
        ctx = tlsfiles.server_context(pki.server_cert, pki.server_key)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                got.append(await r.readuntil(b"\r\n\r\n"))
                w.write(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
                await w.drain()
                await r.read()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        return server, server.sockets[0].getsockname()[1]

    def test_send_verifies_the_server(self, pki: Pki) -> None:
        """A TLS send connects, verifies the server for the destination's address, delivers
        and reads the answer on the same connection; TCP sends to it use another one."""

        async def main() -> None:
            got: list[bytes] = []
            server, port = await self.tls_server(pki, got)
            hub = await Hub(pki, client=TlsClient(client_ctx(pki))).start()
            try:
                assert hub.hub.send("127.0.0.1", port, 0, b"OPTIONS sip:x SIP/2.0\r\n\r\n", tls=True)
                await until(lambda: got and hub.messages)
                conn = hub.messages[0][0]
                assert conn.tls and conn.outbound
                assert hub.hub.by_peer_tls[("127.0.0.1", port)] is conn
                assert ("127.0.0.1", port) not in hub.hub.by_peer
                # a TCP send naming the TLS connection's id does not use it (rule 7)
                hub.hub.send("127.0.0.1", port, conn.conn_id, b"X", tls=False)
                assert hub.hub.mismatched == 1
            finally:
                await hub.stop()
                server.close()

        aio.run(main, 10.0)

    def test_unverified_server_is_not_used(self, pki: Pki, tmp_path: Path) -> None:
        """A server whose certificate another CA signed: the connect fails, logged once,
        and what was queued for it is dropped; the process goes on."""

        async def main() -> None:
            got: list[bytes] = []
            server, port = await self.tls_server(pki, got)
            other = make_pki(tmp_path / "other")
            hub = await Hub(pki, client=TlsClient(client_ctx(other))).start()
            try:
                with capture_logs() as logs:
                    assert hub.hub.send("127.0.0.1", port, 0, b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                                        tls=True)  # fmt: skip
                    await until(lambda: any(e["event"] == "tcp_connect_failed" for e in logs))
                failed = next(e for e in logs if e["event"] == "tcp_connect_failed")
                assert failed["tls"] is True and failed["dropped"] == 1
                assert got == [] and not hub.hub.by_peer_tls
            finally:
                await hub.stop()
                server.close()

        aio.run(main, 10.0)

    def test_server_name(self, pki: Pki) -> None:
        """A send naming a host verifies the server against that name: one its certificate
        carries (localhost) is used, another fails the connect."""

        async def main() -> None:
            got: list[bytes] = []
            server, port = await self.tls_server(pki, got)
            hub = await Hub(pki, client=TlsClient(client_ctx(pki))).start()
            try:
                with capture_logs() as logs:
                    assert hub.hub.send("127.0.0.1", port, 0, b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                                        tls=True, server_name="wrong.example.com")  # fmt: skip
                    await until(lambda: any(e["event"] == "tcp_connect_failed" for e in logs))
                assert got == []
                assert hub.hub.send("127.0.0.1", port, 0, b"OPTIONS sip:x SIP/2.0\r\n\r\n",
                                    tls=True, server_name="localhost")  # fmt: skip
                await until(lambda: got)
                assert hub.hub.by_peer_tls[("127.0.0.1", port)].server_name == "localhost"
            finally:
                await hub.stop()
                server.close()

        aio.run(main, 10.0)

    def test_no_client_context_no_tls_send(self, pki: Pki) -> None:
        """Without a TLS context (no TLS listener) a TLS send fails at once."""

        async def main() -> None:
            hub = TcpHub(Tcp(), lambda c, d: None, lambda c, e: None)
            try:
                assert not hub.send("127.0.0.1", 5061, 0, b"x", tls=True)
            finally:
                await hub.close()

        aio.run(main)


def test_loopback_sources_usable() -> None:
    """The per-source tests bind 127.0.0.2/3 (all of 127/8 is loopback on Linux)."""
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))


@pytest.mark.parametrize(
    ("meta", "want"),
    [("tcp", (False, "")), ("tls", (True, "")), ("tls:carrier.example.com", (True, "carrier.example.com")),
     ("tls:bad name", (True, "")), ("tls:" + "a" * 300, (True, "")), ("tls:UPPER.example", (True, ""))],
)  # fmt: skip
def test_meta_transport(meta: str, want: tuple[bool, str]) -> None:
    """The ingress reads a worker's meta transport; a name that is not a plain lower-case
    host name is ignored (the address is verified instead)."""
    from ingress.service import _stream

    assert _stream(meta) == want
