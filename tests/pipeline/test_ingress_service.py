"""The ingress core over a real UDP socket: what it answers itself, what it sheds."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zmq
from structlog.testing import capture_logs

from conf.load import from_dict
from conf.loadstats import LoadMeter
from ingress.main import serve
from ingress.service import Ingress
from ingress.sip.parser import MAX_HEADER_FIELDS
from tests.e2e.node import free_port
from tests.pipeline.helpers import run, until
from workers.bus import IngressBus

INVITE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-1\r\n"
    b"From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    b"To: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.1\r\n"
    b"CSeq: 1 {method}\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _free_port() -> int:
    return free_port()  # from below the ephemeral range (tests/e2e/node.py)


class Client:
    """A UDP peer on loopback."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]

    def request(self, method: str = "INVITE", rline: bytes | None = None) -> bytes:
        data = INVITE.replace(b"{port}", b"%d" % self.port).replace(b"{method}", method.encode())
        if method != "INVITE":
            data = data.replace(b"INVITE sip:", method.encode() + b" sip:", 1)
        if rline is not None:
            data = rline + data[data.index(b"\r\n") :]
        return data

    def marker(self) -> bytes:
        """A new INVITE of its own call: with no worker the ingress answers it 503 at once,
        so its answer tells that whatever was sent before it was not answered."""
        return self.request().replace(b"c1@", b"marker@")

    async def recv(self, timeout: float = 1.0) -> bytes | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                return await loop.sock_recv(self.sock, 65535)
        except TimeoutError:
            return None


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    port = _free_port()
    return from_dict(
        {
            "node": {"run_dir": str(tmp_path)},
            "listen": [{"transport": "udp", "address": "127.0.0.1", "port": port}],
            # these tests are about an ingress with no worker: it listens at once
            "bus": {"retry_after_s": 7, "first_worker_wait_s": 0},
        }
    )


def _with_ingress(ctx: zmq.Context[Any], settings: Any, test: Any) -> None:
    async def body() -> None:
        ing = Ingress(settings, "ingress.t-1", ctx)
        await ing.start()
        client = Client()
        try:
            await test(ing, client, ("127.0.0.1", settings.listen[0].port))
        finally:
            client.sock.close()
            await ing.close()

    run(body)


def test_new_invite_without_workers_gets_503(ctx: zmq.Context[Any], settings: Any) -> None:
    """With no worker alive a new INVITE is answered 503 with Retry-After."""

    async def test(ing: Ingress, client: Client, addr: tuple[str, int]) -> None:
        client.sock.sendto(client.request(), addr)
        reply = await client.recv()
        assert reply is not None and reply.startswith(b"SIP/2.0 503 ")
        assert b"Retry-After: 7\r\n" in reply
        assert b"Call-ID: c1@127.0.0.1\r\n" in reply
        assert ing.meter.counters["rejected_503"] == 1

    _with_ingress(ctx, settings, test)


def test_other_requests_without_workers_are_dropped_and_counted(
    ctx: zmq.Context[Any], settings: Any
) -> None:
    """A BYE (not a new INVITE) with no worker is dropped and counted, never queued."""

    async def test(ing: Ingress, client: Client, addr: tuple[str, int]) -> None:
        client.sock.sendto(client.request("BYE"), addr)
        await until(lambda: ing.meter.counters["drop_no_worker"] == 1)
        client.sock.sendto(client.marker(), addr)
        reply = await client.recv()
        assert reply is not None and b"Call-ID: marker@" in reply  # the BYE got nothing
        assert ing.bus.queued == 0

    _with_ingress(ctx, settings, test)


@pytest.mark.parametrize(
    ("rline", "status", "reason"),
    [(b"INVITE sip:bob@127.0.0.1 SIP/7.0", b"505", "version_not_supported"),
     (b"INVITE  sip:bob@127.0.0.1 SIP/2.0", b"400", "bad_request")],
    ids=["bad-version", "bad-request-line"],
)  # fmt: skip
def test_malformed_requests_are_answered_and_summarised(
    ctx: zmq.Context[Any], settings: Any, rline: bytes, status: bytes, reason: str
) -> None:
    """Each malformed request gets the codec's status; the 20 of them are logged as one
    ``rejected`` line for their source (counts by reason), nothing per message above DEBUG,
    and stay counted in load_stats."""
    settings = replace(settings, log=replace(settings.log, rejected_interval_s=0.1))

    async def test(ing: Ingress, client: Client, addr: tuple[str, int]) -> None:
        with capture_logs() as logs:
            for _ in range(20):
                client.sock.sendto(client.request(rline=rline), addr)
                reply = await client.recv()
                assert reply is not None and reply.split(b" ")[1] == status

            def summarised() -> bool:
                ing.heartbeat()
                return any(e["event"] == "rejected" for e in logs)

            await until(summarised)
        assert [e for e in logs if e["event"] == "message_rejected" and
                e["log_level"] != "debug"] == []  # fmt: skip
        (line,) = [e for e in logs if e["event"] == "rejected"]
        assert (line["src"], line["count"], line["answered"]) == ("127.0.0.1", 20, 20)
        assert line["reasons"] == {reason: 20} and line["log_level"] == "info"
        assert ing.stats(1.0)["rejected"] == {reason: 20}
        assert ing.meter.counters["drop_malformed"] == 20

    _with_ingress(ctx, settings, test)


def test_too_many_headers_answered_400_by_the_ingress(
    ctx: zmq.Context[Any], settings: Any
) -> None:
    """A request over the header-field cap never reaches a worker: 400 Too Many Headers."""

    async def test(ing: Ingress, client: Client, addr: tuple[str, int]) -> None:
        data = client.request()
        data = data.replace(
            b"Content-Length", b"X-F: 1\r\n" * MAX_HEADER_FIELDS + b"Content-Length"
        )
        client.sock.sendto(data, addr)
        reply = await client.recv()
        assert reply is not None and reply.startswith(b"SIP/2.0 400 Too Many Headers\r\n")
        assert ing.rejects.totals == {"too_many_headers": 1}
        assert ing.meter.counters["drop_no_worker"] == 0  # refused before any routing

    _with_ingress(ctx, settings, test)


def test_malformed_ack_is_never_answered(ctx: zmq.Context[Any], settings: Any) -> None:
    """RFC 3261 §17: no response to an ACK, even a broken one; the process keeps serving."""

    async def test(ing: Ingress, client: Client, addr: tuple[str, int]) -> None:
        bad_ack = client.request("ACK").replace(b"ACK sip:", b"ACK  sip:", 1)
        client.sock.sendto(bad_ack, addr)
        await until(lambda: ing.meter.counters["drop_malformed"] == 1)
        client.sock.sendto(client.marker(), addr)  # still alive: answers the next one
        reply = await client.recv()
        assert reply is not None and b"Call-ID: marker@" in reply  # the ACK got nothing

    _with_ingress(ctx, settings, test)


def _waiting(settings: Any, first_s: float) -> Any:
    """``settings`` whose ingress waits ``first_s`` for a first worker (heartbeats of 50 ms)."""
    return replace(settings, bus=replace(settings.bus, heartbeat_ms=50, first_worker_wait_s=first_s))


def test_a_starting_ingress_listens_once_the_first_worker_joins(
    ctx: zmq.Context[Any], settings: Any, tmp_path: Path
) -> None:
    """At a node's start no worker is live yet: the ingress binds nothing while none has
    joined (well within its 4 s bound), and binds its listeners once one has, so its first
    INVITE reaches that worker instead of a 503 (service.py rule 7)."""
    settings = _waiting(settings, 4.0)

    async def body() -> None:
        ing = Ingress(settings, "ingress.t-1", ctx)
        worker: IngressBus | None = None
        with capture_logs() as logs:
            started = asyncio.create_task(ing.start())
            try:
                await asyncio.sleep(0.5)  # the test's claim: still not listening after 0.5 s
                assert not started.done() and not ing.udp
                got: list[bytes] = []
                worker = IngressBus(ctx, settings.bus, str(tmp_path), "worker.1-2",
                                    lambda _i, _m, p: got.extend(p), LoadMeter(0))  # fmt: skip
                await until(lambda: bool(worker.heartbeat()) or started.done(), 0.05)
                await started
                assert ing.udp and ing.bus.workers
                client = Client()
                client.sock.sendto(client.request(), ("127.0.0.1", settings.listen[0].port))
                await until(lambda: bool(got))
                client.sock.close()
            finally:
                started.cancel()
                if worker is not None:
                    worker.close()
                await ing.close()
        (ready,) = [e for e in logs if e["event"] == "ingress_ready"]
        assert ready["workers"] == 1 and ready["waited_ms"] >= 500, ready
        assert ing.meter.counters["rejected_503"] == 0

    run(body)


def test_a_starting_ingress_without_workers_listens_at_its_bound(
    ctx: zmq.Context[Any], settings: Any
) -> None:
    """No worker ever comes: the ingress still binds its listeners after ``[bus]
    first_worker_wait_s`` (1 s here) and answers a new INVITE 503."""
    settings = _waiting(settings, 1.0)

    async def body() -> None:
        ing = Ingress(settings, "ingress.t-1", ctx)
        with capture_logs() as logs:
            try:
                await ing.start()
                client = Client()
                client.sock.sendto(client.request(), ("127.0.0.1", settings.listen[0].port))
                reply = await client.recv()
                client.sock.close()
            finally:
                await ing.close()
        assert reply is not None and reply.startswith(b"SIP/2.0 503 "), reply
        (ready,) = [e for e in logs if e["event"] == "ingress_ready"]
        assert ready["workers"] == 0 and ready["waited_ms"] >= 1000, ready

    run(body)


def test_a_stop_ends_the_wait_for_a_first_worker(ctx: zmq.Context[Any], settings: Any) -> None:
    """SIGTERM while a starting ingress waits for its first worker (30 s bound): ``start``
    returns at once (the test's 5 s bound) with nothing bound."""
    settings = _waiting(settings, 30.0)

    async def body() -> None:
        ing = Ingress(settings, "ingress.t-1", ctx)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, stop.set)
        try:
            await ing.start(stop)
            assert not ing.udp
        finally:
            await ing.close()

    run(body)


def test_a_taken_port_is_logged_with_the_listener_that_could_not_bind(settings: Any) -> None:
    """Another process holds the node's TCP port (bound without SO_REUSEPORT): the ingress
    exits 1 and its ``listen_failed`` line names the transport, address and port, so a
    clash in a log names the port that clashed."""
    port = settings.listen[0].port
    tcp = replace(settings.listen[0], transport="tcp")
    settings = replace(settings, listen=[settings.listen[0], tcp])
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", port))
    holder.listen()

    async def body() -> None:
        with capture_logs() as logs:
            assert await serve(settings, asyncio.Event()) == 1
        (failed,) = [e for e in logs if e["event"] == "listen_failed"]
        assert f"listen tcp 127.0.0.1:{port}: " in failed["error"], failed
        assert "[Errno 98]" in failed["error"], failed  # EADDRINUSE, as the kernel said

    try:
        run(body)
    finally:
        holder.close()
