"""SIP over TLS through a real node (docs/tls.md): a Python TLS phone, sipp over UDP, and a
Python TLS UAS as the peer (the Debian sipp has no TLS)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conf import tlsfiles
from tests.tlscerts import Pki, issue, make_pki
from tests.workers.test_dns_resolver import ZoneServer

from .conftest import StartNode
from .node import Proc, free_port, sipp_uac
from .test_ctl import ctl
from .test_dns import nameserver  # noqa: F401 -- a fixture
from .tlspeer import TlsPhone, TlsUas, headers, response

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_uas(pki: Pki) -> Iterator[TlsUas]:
    uas = TlsUas(tlsfiles.server_context(pki.server_cert, pki.server_key)).start()
    yield uas
    uas.stop()


def tls_listen(pki: Pki, port: int, extra: str = "") -> str:
    return f"""
[[listen]]
transport = "tls"
address = "127.0.0.1"
port = {port}
cert_file = "{pki.server_cert}"
key_file = "{pki.server_key}"
{extra}
"""


def node_tls(pki: Pki, port: int, extra: str = "") -> str:
    return tls_listen(pki, port, extra) + f'\n[tls]\nca_file = "{pki.ca}"\nhandshake_timeout_ms = 500\n'


def phone_ctx(pki: Pki, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    return tlsfiles.client_context(True, pki.ca, *(cert or ("", "")))


def test_tls_phone_options_register_invite(start_node: StartNode, uas: Uas, pki: Pki) -> None:
    """A phone over TLS: OPTIONS and REGISTER are answered and an INVITE is relayed to a sipp
    UAS over UDP, every answer on the phone's one connection; Record-Route names the TLS
    listener with transport=tls; the ACK and BYE follow, and the BYE is answered."""
    dport, _ = uas("u1", "uas_rr")
    tport = free_port()
    extra = node_tls(pki, tport) + '\n[registrar]\nenabled = true\ndomains = ["example.com"]\n'
    node = start_node([f"sip:127.0.0.1:{dport};transport=udp"], "worker=2", extra)
    phone = TlsPhone(tport, phone_ctx(pki))
    try:
        phone.request("OPTIONS", f"sip:127.0.0.1:{tport}", max_forwards=0)
        assert phone.final().startswith(b"SIP/2.0 200 ")
        phone.request("REGISTER", "sip:example.com", to="sip:alice@example.com",
                      extra="Expires: 60\r\n")  # fmt: skip
        reg = phone.final()
        assert reg.startswith(b"SIP/2.0 200 "), reg
        assert b"transport=tls" in b"".join(headers(reg, "Contact"))
        call_id = phone.request("INVITE", f"sip:service@127.0.0.1:{tport}")
        ok = phone.final()
        assert ok.startswith(b"SIP/2.0 200 "), ok
        rr = b",".join(headers(ok, "Record-Route"))
        assert f"127.0.0.1:{tport};transport=tls;lr".encode() in rr, rr
        to_tag = headers(ok, "To")[0].split(b"tag=")[1].split(b";")[0].decode()
        phone.request("ACK", f"sip:service@127.0.0.1:{tport}", call_id, 1, to_tag)
        phone.request("BYE", f"sip:service@127.0.0.1:{tport}", call_id, 2, to_tag)
        bye = phone.final()
        assert bye.startswith(b"SIP/2.0 200 ") and b"BYE" in headers(bye, "CSeq")[0], bye
    finally:
        phone.close()
    assert node.proc.events("ingress_listening")


def test_udp_calls_to_a_tls_destination(start_node: StartNode, tls_uas: TlsUas, pki: Pki,
                                        tmp_path: Path) -> None:  # fmt: skip
    """sipp over UDP -> node -> TLS UAS: every call completes over one verified TLS
    connection, and what reaches the UAS carries our Via with transport TLS."""
    tport = free_port()
    node = start_node([f"sip:127.0.0.1:{tls_uas.port};transport=tls"], "worker=2",
                      node_tls(pki, tport))  # fmt: skip
    res = sipp_uac(node.port, "u1", 50, 25, tmp_path, timeout_s=60)
    assert (res.successful, res.failed) == (50, 0), res.output
    invites = [m for m in tls_uas.received if m.startswith(b"INVITE ")]
    assert len(invites) == 50
    assert all(headers(m, "Via")[0].startswith(f"SIP/2.0/TLS 127.0.0.1:{tport};".encode())
               for m in invites)  # fmt: skip
    assert sum(m.startswith(b"BYE ") for m in tls_uas.received) == 50
    assert tls_uas.connections == 2 or tls_uas.connections == 1  # one per worker's ingress at most


def test_unverified_tls_destination_is_not_used(start_node: StartNode, pki: Pki, tmp_path: Path,
                                                ) -> None:  # fmt: skip
    """A TLS destination whose certificate our CA did not sign: no INVITE is delivered, the
    calls fail, the node logs the failed connect and keeps running."""
    other = make_pki(tmp_path / "other")
    uas = TlsUas(tlsfiles.server_context(other.server_cert, other.server_key)).start()
    try:
        tport = free_port()
        node = start_node([f"sip:127.0.0.1:{uas.port};transport=tls"], "worker=1",
                          node_tls(pki, tport))  # fmt: skip
        res = sipp_uac(node.port, "u1", 2, 2, tmp_path, timeout_s=15)
        assert res.successful == 0
        assert not [m for m in uas.received if m.startswith(b"INVITE ")]
        assert node.proc.wait_events("tcp_connect_failed", 1, timeout_s=10)
        assert ctl(node.conf, "stats")
    finally:
        uas.stop()


def test_client_certificate_required(start_node: StartNode, uas: Uas, pki: Pki) -> None:
    """A trunk listener requiring a client certificate naming trunk.example.com: a client
    without one, or with another name, is refused; the trunk is answered; silent
    connections (handshakes never started) are cut at the handshake timeout and do not
    hold the trunk up."""
    dport, _ = uas("u1")
    tport = free_port()
    extra = node_tls(pki, tport, f'verify_client = "require"\nca_file = "{pki.ca}"\n'
                                 'client_names = ["trunk.example.com"]\n')  # fmt: skip
    node = start_node([f"sip:127.0.0.1:{dport};transport=udp"], "worker=1", extra)
    silent = [socket.create_connection(("127.0.0.1", tport), timeout=5) for _ in range(3)]
    try:
        for cert in (None, pki.client("rogue.example.com")):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                phone = TlsPhone(tport, phone_ctx(pki, cert))
                try:
                    phone.request("OPTIONS", f"sip:127.0.0.1:{tport}", max_forwards=0)
                    phone.final()
                finally:
                    phone.close()
        t0 = time.monotonic()
        trunk = TlsPhone(tport, phone_ctx(pki, pki.client("trunk.example.com")))
        trunk.request("OPTIONS", f"sip:127.0.0.1:{tport}", max_forwards=0)
        assert trunk.final().startswith(b"SIP/2.0 200 ")
        assert time.monotonic() - t0 < 2.0
        trunk.close()
        for s in silent:  # cut at handshake_timeout_ms (500) by the hub's sweep
            assert s.recv(100) == b""
    finally:
        for s in silent:
            s.close()
    totals = {}
    for row in ctl(node.conf, "stats")["stats"]:  # type: ignore[attr-defined]
        if row["role"] == "ingress":
            totals = row["rejected"]
    assert totals.get("tls_handshake_timeout") == 3, totals
    assert totals.get("tls_handshake_failed", 0) + totals.get("tls_client_name", 0) == 2, totals


@pytest.mark.parametrize("named", ["uas.example.test", "other.example.test"])
def test_tls_destination_by_host_name(start_node: StartNode, pki: Pki, tmp_path: Path,
                                      nameserver: Callable[..., tuple[int, ZoneServer]],  # noqa: F811 -- the fixture
                                      named: str) -> None:  # fmt: skip
    """sips:uas.example.test:PORT, resolved by the stateful proxy: the TLS server is verified
    against the host name (its certificate has no IP address), so calls complete when the
    certificate names uas.example.test and none is delivered when it names another host."""
    cert, key = issue(tmp_path, named, f"DNS:{named}", pki)
    uas = TlsUas(tlsfiles.server_context(cert, key)).start()
    try:
        ns_port, _ = nameserver({("uas.example.test", "A"): ["127.0.0.1"]})
        tport = free_port()
        extra = node_tls(pki, tport) + (f'\n[proxy]\nmode = "stateful"\n'
                                        f'\n[dns]\nnameservers = ["127.0.0.1:{ns_port}"]\n')  # fmt: skip
        node = start_node([f"sips:uas.example.test:{uas.port}"], "worker=1", extra)
        if named == "uas.example.test":
            res = sipp_uac(node.port, "u1", 10, 10, tmp_path, scenario="uac_rr", timeout_s=60)
            assert (res.successful, res.failed) == (10, 0), res.output
            assert sum(m.startswith(b"BYE ") for m in uas.received) == 10
        else:
            res = sipp_uac(node.port, "u1", 1, 1, tmp_path, timeout_s=15)
            assert res.successful == 0
            assert not [m for m in uas.received if m.startswith(b"INVITE ")]
            failed = node.proc.wait_events("tcp_connect_failed", 1, timeout_s=10)
            assert failed[0]["tls"] is True
    finally:
        uas.stop()


def test_call_to_a_phone_registered_over_tls(start_node: StartNode, uas: Uas, pki: Pki,
                                             tmp_path: Path) -> None:  # fmt: skip
    """A phone registers over TLS; calls to its AOR from sipp over UDP reach it on the
    connection it registered on (the registrar keeps the source), and the ACK and BYE follow
    the route set to it over the same connection."""
    dport, _ = uas("u1")
    tport = free_port()
    node = start_node([f"sip:127.0.0.1:{dport};transport=udp"], "worker=2",
                      node_tls(pki, tport) + "\n[registrar]\nenabled = true\nnear_cache_ttl_s = 0\n")  # fmt: skip
    phone = TlsPhone(tport, phone_ctx(pki), timeout_s=30)
    got: list[bytes] = []
    try:
        # the AOR sipp calls: alice at the node's UDP address
        phone.request("REGISTER", "sip:127.0.0.1", to=f"sip:alice@127.0.0.1:{node.port}",
                      extra="Expires: 60\r\n")  # fmt: skip
        assert phone.final().startswith(b"SIP/2.0 200 ")
        contact = f"Contact: <sip:alice@127.0.0.1:{phone.lport};transport=tls>"

        def answer() -> None:
            try:
                while True:
                    msg = phone.read()
                    got.append(msg)
                    if msg.startswith(b"INVITE "):
                        phone.sock.sendall(response(msg, "200 OK", "ph1", contact))
                    elif msg.startswith(b"BYE "):
                        phone.sock.sendall(response(msg, "200 OK", "ph1"))
            except (OSError, ConnectionError):
                pass

        threading.Thread(target=answer, daemon=True).start()
        res = sipp_uac(node.port, "u1", 5, 5, tmp_path, scenario="uac_rr", service="alice",
                       timeout_s=60)  # fmt: skip
        assert (res.successful, res.failed) == (5, 0), res.output
    finally:
        phone.close()
    methods = [m.split(b" ", 1)[0] for m in got]
    assert methods.count(b"INVITE") == 5 and methods.count(b"BYE") == 5, methods
    assert all(headers(m, "Via")[0].startswith(f"SIP/2.0/TLS 127.0.0.1:{tport};".encode())
               for m in got)  # fmt: skip
