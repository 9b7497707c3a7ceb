"""SIP over TLS peers for the e2e tests (the Debian sipp has no TLS): a phone (one blocking
``ssl`` client connection) and a UAS (an ``ssl`` server answering INVITE, BYE and OPTIONS)."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field

LOCALHOST = "127.0.0.1"
HEADER_RE = re.compile(rb"^([A-Za-z-]+)[ \t]*:[ \t]*(.*)$")


def read_message(sock: ssl.SSLSocket, buf: bytearray) -> bytes:
    """One SIP message from the stream (Content-Length framed); raises on EOF or timeout."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, _ = bytes(buf).partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
    total = len(head) + 4 + (int(m.group(1)) if m else 0)
    while len(buf) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    msg = bytes(buf[:total])
    del buf[:total]
    return msg


def headers(msg: bytes, name: str) -> list[bytes]:
    out = []
    for line in msg.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        m = HEADER_RE.match(line)
        if m and m.group(1).decode().lower() == name.lower():
            out.append(m.group(2))
    return out


def response(req: bytes, status: str, to_tag: str = "", extra: str = "") -> bytes:
    """A response to ``req`` copying Via, From, To (with ``to_tag``), Call-ID, CSeq."""
    lines = [f"SIP/2.0 {status}".encode()]
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Record-Route"):
        for value in headers(req, name):
            if name == "To" and to_tag and b";tag=" not in value:
                value += f";tag={to_tag}".encode()
            lines.append(name.encode() + b": " + value)
    lines += [line.encode() for line in extra.split("\r\n") if line]
    return b"\r\n".join([*lines, b"Content-Length: 0", b"", b""])


class TlsPhone:
    """A UA with one TLS connection to the proxy."""

    def __init__(self, port: int, ctx: ssl.SSLContext, timeout_s: float = 5.0) -> None:
        raw = socket.create_connection((LOCALHOST, port), timeout=timeout_s)
        self.sock = ctx.wrap_socket(raw, server_hostname=LOCALHOST)
        self.port = port
        self.lport = self.sock.getsockname()[1]
        self.buf = bytearray()

    def request(self, method: str, uri: str, call_id: str = "", cseq: int = 1, to_tag: str = "",
                extra: str = "", max_forwards: int = 70, to: str = "") -> str:  # fmt: skip
        call_id = call_id or uuid.uuid4().hex
        to = f"<{to or uri}>" + (f";tag={to_tag}" if to_tag else "")
        text = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {LOCALHOST}:{self.lport};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:alice@example.com>;tag=a1\r\n"
            f"To: {to}\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:alice@{LOCALHOST}:{self.lport};transport=tls>\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n"
        )
        self.sock.sendall(text.encode())
        return call_id

    def read(self) -> bytes:
        return read_message(self.sock, self.buf)

    def final(self) -> bytes:
        """The first final response (skipping 1xx)."""
        while True:
            msg = self.read()
            if not msg.startswith(b"SIP/2.0 1"):
                return msg

    def close(self) -> None:
        self.sock.close()


@dataclass
class TlsUas:
    """Answers INVITE (100 then 200), BYE and OPTIONS (200) on every TLS connection; records
    what it received. ``port`` once started."""

    ctx: ssl.SSLContext
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    connections: int = 0
    _server: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> TlsUas:
        srv = socket.create_server((LOCALHOST, 0))
        srv.settimeout(0.2)
        self._server = srv
        self.port = srv.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                raw, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(30)
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        buf = bytearray()
        contact = f"Contact: <sip:uas@{LOCALHOST}:{self.port};transport=tls>"
        try:
            while not self._stop.is_set():
                msg = read_message(sock, buf)
                self.received.append(msg)
                method = msg.split(b" ", 1)[0]
                if method == b"INVITE":
                    sock.sendall(response(msg, "100 Trying"))
                    sock.sendall(response(msg, "200 OK", "uas1", contact))
                elif method in (b"BYE", b"OPTIONS", b"CANCEL"):
                    sock.sendall(response(msg, "200 OK", "uas1"))
        except (OSError, ssl.SSLError, ConnectionError):
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
