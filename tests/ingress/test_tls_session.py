"""TlsSession without sockets: a client and a server session joined in memory, byte by byte
and whole; and the invariant the adapter relies on: whatever bytes arrive, the session
returns plaintext or raises ``ssl.SSLError`` / ``TlsClosed`` (never anything else)."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf import tlsfiles
from ingress.tls import TlsClosed, TlsSession
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def pair(pki: Pki, hostname: str = "127.0.0.1") -> tuple[TlsSession, TlsSession]:
    server = TlsSession(tlsfiles.server_context(pki.server_cert, pki.server_key), True)
    client = TlsSession(tlsfiles.client_context(True, pki.ca), False, hostname)
    return client, server


def shuttle(client: TlsSession, server: TlsSession, step: int = 0) -> bytes:
    """Move bytes both ways until neither side has any; ``step`` > 0 feeds that many bytes
    at a time. Returns the plaintext the server got."""
    got = b""
    client.handshake()
    for _ in range(1000):
        c2s, s2c = client.data_to_send(), server.data_to_send()
        if not c2s and not s2c:
            return got
        for i in range(0, len(c2s), step or len(c2s) or 1):
            got += server.receive_data(c2s[i:i + (step or len(c2s))])
        for i in range(0, len(s2c), step or len(s2c) or 1):
            client.receive_data(s2c[i:i + (step or len(s2c))])
    raise AssertionError("no end")


@pytest.mark.parametrize("step", [0, 1, 7], ids=["whole", "byte-by-byte", "7-bytes"])
def test_handshake_and_data_in_memory(pki: Pki, step: int) -> None:
    """The handshake completes however the bytes are cut, and plaintext crosses."""
    client, server = pair(pki)
    shuttle(client, server, step)
    assert client.done and server.done
    client.encrypt(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert shuttle(client, server, step) == b"OPTIONS sip:x SIP/2.0\r\n\r\n"


def test_wrong_name_fails_the_client(pki: Pki) -> None:
    """The client refuses a server certificate that does not name the host it expects."""
    client, server = pair(pki, "other.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        shuttle(client, server)


def test_close_notify(pki: Pki) -> None:
    client, server = pair(pki)
    shuttle(client, server)
    with pytest.raises(ssl.SSLWantReadError):  # unwrap waits for the peer's close_notify
        client.obj.unwrap()
    with pytest.raises(TlsClosed):
        server.receive_data(client.data_to_send())


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=6), hello=st.booleans())
def test_any_bytes_give_plaintext_or_ssl_error(pki: Pki, chunks: list[bytes], hello: bool) -> None:
    """Random bytes (after a real ClientHello or not): b"" or ssl.SSLError, nothing else."""
    _, server = pair(pki)
    if hello:
        client, _ = pair(pki)
        client.handshake()
        chunks = [client.data_to_send(), *chunks]
    try:
        for c in chunks:
            assert server.receive_data(c) == b""
    except (ssl.SSLError, TlsClosed):
        pass


def test_data_then_close_notify_in_one_read(pki: Pki) -> None:
    """A message and close_notify arriving together: the message is delivered."""
    client, server = pair(pki)
    shuttle(client, server)
    client.encrypt(b"BYE sip:x SIP/2.0\r\n\r\n")
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()
    assert server.receive_data(client.data_to_send()) == b"BYE sip:x SIP/2.0\r\n\r\n"
