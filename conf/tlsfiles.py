"""TLS contexts from PEM files (``[[listen]]`` with ``transport = "tls"``, ``[tls]``), and the
names a peer certificate carries. ``conf.load`` builds every context once to validate the
files; the ingress builds them again to use them (``docs/tls.md``).

Rules:
1. A file is read and judged here, before OpenSSL sees it, so every fault names the file
   and what is wrong with it: missing or unreadable, no PEM block of the kind expected, a
   PEM block OpenSSL refuses, an encrypted key, a key that does not match its certificate.
   OpenSSL never prompts for a pass phrase (that would block a process on its terminal).
2. Nothing here puts a key's bytes, or any part of them, into an error or a log line: the
   messages are built from the path and a fixed description of the fault.
3. TLS 1.2 is the least version either way (RFC 8996 retires 1.0 and 1.1). Server
   verification checks the chain and the host name (``check_hostname``; an IP literal is
   matched against the certificate's IP subjectAltNames). Client verification checks the
   chain; ``names_allowed`` then checks the names a trunk's certificate must carry.
4. ``cert_names`` and ``names_allowed`` are pure functions of the dictionary
   ``SSLSocket.getpeercert()`` returns: DNS and IP subjectAltNames, else the subject's
   commonName (RFC 5922 §7.1 takes subjectAltName first). A wildcard in an allowed name
   matches one whole left-most label; a wildcard in a certificate is taken literally, as
   RFC 5922 §7.2 asks of SIP domain certificates.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

#: a PEM file larger than this is a mistake (a chain of a few certificates is a few KB)
MAX_PEM_BYTES = 1 << 20

CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
KEY_MARK = b"PRIVATE KEY-----"


class TlsFileError(ValueError):
    """A PEM file that cannot be used. ``field`` is the configuration key that named it
    (``cert_file``, ``key_file``, ``ca_file``); ``str()`` names the file and the fault."""

    def __init__(self, field: str, path: str, fault: str) -> None:
        super().__init__(f"{path}: {fault}")
        self.field = field
        self.path = path
        self.fault = fault


def _no_pass_phrase() -> bytes:
    raise TlsFileError("key_file", "", "an encrypted key (give it unencrypted)")


def read_pem(field: str, path: str, marker: bytes, kind: str) -> bytes:
    """The bytes of ``path``, which must hold a PEM block containing ``marker`` (rule 1)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise TlsFileError(field, path, exc.strerror or type(exc).__name__) from None
    if len(data) > MAX_PEM_BYTES:
        raise TlsFileError(field, path, f"larger than {MAX_PEM_BYTES} bytes")
    if marker not in data:
        raise TlsFileError(field, path, f"no PEM {kind} in it")
    return data


def _check_certs(field: str, path: str) -> None:
    """``path`` holds certificates OpenSSL parses."""
    data = read_pem(field, path, CERT_BEGIN, "certificate (BEGIN CERTIFICATE)")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=data.decode("ascii", "replace")
        )
    except (ssl.SSLError, ValueError):
        raise TlsFileError(field, path, "a PEM certificate OpenSSL cannot parse") from None


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str, prefix: str = "") -> None:
    _check_certs(prefix + "cert_file", cert_file)
    key = read_pem(prefix + "key_file", key_file, KEY_MARK, "private key (BEGIN ... PRIVATE KEY)")
    if b"ENCRYPTED" in key:
        raise TlsFileError(prefix + "key_file", key_file, "an encrypted key (give it unencrypted)")
    del key  # the bytes go no further (rule 2); OpenSSL reads the file itself
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_pass_phrase)
    except TlsFileError as exc:
        raise TlsFileError(prefix + "key_file", key_file, exc.fault) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            fault = f"the key does not match {prefix}cert_file"
        else:
            fault = "a PEM private key OpenSSL cannot parse"
        raise TlsFileError(prefix + "key_file", key_file, fault) from None
    except OSError as exc:  # the file went away between the two reads
        raise TlsFileError(prefix + "key_file", key_file, exc.strerror or "unreadable") from None


def server_context(cert_file: str, key_file: str, verify_client: str = "none",
                   ca_file: str = "") -> ssl.SSLContext:  # fmt: skip
    """The context of a TLS listener (rule 3).

    Raises:
        TlsFileError: a file breaks rule 1 (``field`` says which).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file)
    if verify_client != "none":
        _check_certs("ca_file", ca_file)
        ctx.load_verify_locations(cafile=ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if verify_client == "require" else ssl.CERT_OPTIONAL
    return ctx


def client_context(verify_server: bool = True, ca_file: str = "", cert_file: str = "",
                   key_file: str = "") -> ssl.SSLContext:  # fmt: skip
    """The context of the TLS connections we open (rule 3).

    Raises:
        TlsFileError: a file breaks rule 1 (``field`` says which).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify_server:
        if ca_file:
            _check_certs("ca_file", ca_file)
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert_file:
        _load_chain(ctx, cert_file, key_file)
    return ctx


def cert_names(peercert: dict[str, Any] | None) -> list[str]:
    """The names a peer certificate carries, lower case (rule 4)."""
    if not peercert:
        return []
    names = [str(v).lower() for k, v in peercert.get("subjectAltName", ())
             if k in ("DNS", "IP Address")]  # fmt: skip
    if names:
        return names
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                names.append(str(v).lower())
    return names


def _matches(name: str, allowed: str) -> bool:
    if allowed.startswith("*."):
        label, dot, rest = name.partition(".")
        return bool(label) and label != "*" and bool(dot) and rest == allowed[2:]
    return name == allowed


def names_allowed(peercert: dict[str, Any] | None, allowed: Iterable[str]) -> bool:
    """Whether the certificate names one of ``allowed`` (rule 4); True when none is given."""
    wanted = [a.lower() for a in allowed]
    if not wanted:
        return True
    return any(_matches(n, a) for n in cert_names(peercert) for a in wanted)
