"""Load-time checks of the TLS configuration: ``[[listen]]`` TLS keys and ``[tls]``
(``docs/tls.md``). Every PEM file is read and every context built once here, so a node
never starts with a certificate, key or CA file it cannot use (``conf/tlsfiles.py``)."""

from __future__ import annotations

import os

from conf import tlsfiles
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Listener, Settings

#: the keys of a listener that only a TLS listener may set
LISTENER_KEYS = ("cert_file", "key_file", "ca_file", "client_names")
#: what a PEM key expects, by the field the error names
EXPECTED = {
    "cert_file": "a readable PEM certificate file",
    "key_file": "a readable, unencrypted PEM private key matching cert_file",
    "ca_file": "a readable PEM file of CA certificates",
}


def _path(f: str, key: str, path: str, required: bool) -> None:
    if not path and not required:
        return
    if not path or not os.path.isabs(path):
        raise ConfigError(f, key, "an absolute file path", path)


def _listener(f: str, i: int, lst: Listener) -> None:
    key = f"listen[{i}]"
    if lst.transport != "tls":
        for name in LISTENER_KEYS:
            if getattr(lst, name):
                raise ConfigError(f, f"{key}.{name}", 'nothing unless transport = "tls"',
                                  getattr(lst, name))  # fmt: skip
        if lst.verify_client != "none":
            raise ConfigError(f, f"{key}.verify_client", '"none" unless transport = "tls"',
                              lst.verify_client)  # fmt: skip
        return
    _path(f, f"{key}.cert_file", lst.cert_file, True)
    _path(f, f"{key}.key_file", lst.key_file, True)
    if lst.verify_client != "none" and not lst.ca_file:
        raise ConfigError(f, f"{key}.ca_file", f"a CA file (verify_client = {show(lst.verify_client)})",
                          Said("nothing"))  # fmt: skip
    _path(f, f"{key}.ca_file", lst.ca_file, False)
    if lst.client_names and lst.verify_client != "require":
        raise ConfigError(f, f"{key}.client_names", 'nothing unless verify_client = "require"',
                          lst.client_names)  # fmt: skip
    for j, name in enumerate(lst.client_names):
        label = name.removeprefix("*.")
        if not label or any(c.isspace() or c in "*/\\" for c in label):
            raise ConfigError(f, f"{key}.client_names[{j}]",
                              "a host name, an address, or *.domain", name)  # fmt: skip
    try:
        tlsfiles.server_context(lst.cert_file, lst.key_file, lst.verify_client, lst.ca_file)
    except tlsfiles.TlsFileError as exc:
        raise ConfigError(f, f"{key}.{exc.field}", EXPECTED[exc.field], Said(str(exc))) from None


def check(f: str, s: Settings) -> None:
    """Raises:
    ConfigError: a TLS key of a listener or of ``[tls]`` is wrong, or a file it names
    cannot be used (the error names the file and the fault, never a key's content).
    """
    for i, lst in enumerate(s.listen):
        _listener(f, i, lst)
    t = s.tls
    _path(f, "tls.ca_file", t.ca_file, False)
    _path(f, "tls.cert_file", t.cert_file, False)
    _path(f, "tls.key_file", t.key_file, bool(t.cert_file))
    if t.key_file and not t.cert_file:
        raise ConfigError(f, "tls.cert_file", "a certificate file (key_file is set)", Said("nothing"))
    if t.max_handshakes_per_ip > t.max_handshakes:
        raise ConfigError(f, "tls.max_handshakes_per_ip",
                          f"at most tls.max_handshakes ({t.max_handshakes})",
                          t.max_handshakes_per_ip)  # fmt: skip
    if not any(lst.transport == "tls" for lst in s.listen):
        return  # no TLS anywhere: the outbound context is never built
    try:
        tlsfiles.client_context(t.verify_server, t.ca_file, t.cert_file, t.key_file)
    except tlsfiles.TlsFileError as exc:
        raise ConfigError(f, f"tls.{exc.field}", EXPECTED[exc.field], Said(str(exc))) from None
