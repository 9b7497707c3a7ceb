"""What the checks of several sections share: the grammar of tokens, names, domains and
cacheDB URLs, the small checks of one value (an address, a unique name, a method list,
``host:port``), and lists of status codes (``"408"``, ``"5xx"``, ``"500-599"``)."""

from __future__ import annotations

import ipaddress
import re

from conf.checks.errors import ConfigError, Said, show

#: an ipc:// endpoint is a Unix socket path, at most 107 bytes (sun_path), and sockets.py
#: adds ``/<role>-<proc>-<pid>.ipc``: 31 bytes for ``/ingress-ingress.99-4194304.ipc``
MAX_RUN_DIR_BYTES = 107 - 31
#: RFC 3261 §25.1 token: methods and option tags are tokens
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")
#: a domain is a host name or an address; IPv6 with or without brackets
DOMAIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-._]*|\[?[0-9A-Fa-f:.]+\]?")
#: cacheDB URL schemes (workers/cachedb/factory.py; conf/ imports nothing of ours)
CACHEDB_SCHEMES = ("local", "redis", "rediss", "redis-cluster", "memcached")
_CIDR_HELP = "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32"


def _ip(file: str, key: str, text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(file, key, "an IPv4 or IPv6 address", text) from None


def _unique(f: str, table: str, i: int, name: str, seen: dict[str, int]) -> None:
    """``table[i].name`` must not repeat an earlier entry's; ``seen`` maps names to indexes."""
    if name in seen:
        found = Said(f"{show(name)} again ({table}[{seen[name]}])")
        raise ConfigError(f, f"{table}[{i}].name", "a unique name", found)
    seen[name] = i


def _methods(f: str, key: str, methods: list[str]) -> None:
    for j, method in enumerate(methods):
        if not TOKEN_RE.fullmatch(method) or method != method.upper():
            raise ConfigError(f, f"{key}.methods[{j}]", "a method in upper case, like INVITE",
                              method)  # fmt: skip


def _hostport(f: str, key: str, text: str) -> None:
    """``ip:port`` or ``[ipv6]:port``, port 1-65534 (the next one is used too)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        ok = 1 <= int(port) <= 65534 and (":" in host) == text.startswith("[")
    except ValueError:
        ok = False
    if not ok:
        expected = "an IP address and a port from 1 to 65534, like 192.0.2.1:7400 or [2001:db8::1]:7400"
        raise ConfigError(f, key, expected, text)


#: a status code list item: ``"503"``, ``"5xx"`` or ``"500-599"``
STATUS_SPEC_RE = re.compile(r"([1-6])xx|([1-6][0-9][0-9])(?:-([1-6][0-9][0-9]))?")


def parse_status_codes(specs: list[str]) -> frozenset[int]:
    """The statuses ``specs`` names: codes (``"408"``), classes (``"5xx"``), ranges.

    Raises:
        ValueError: an item is none of these, or a range runs backwards; ``args[0]`` is its
            index.
    """
    codes: set[int] = set()
    for i, spec in enumerate(specs):
        m = STATUS_SPEC_RE.fullmatch(spec)
        if m is None:
            raise ValueError(i)
        if m.group(1):
            lo = int(m.group(1)) * 100
            hi = lo + 99
        else:
            lo = int(m.group(2))
            hi = int(m.group(3) or lo)
        if hi < lo:
            raise ValueError(i)
        codes.update(range(lo, hi + 1))
    return frozenset(codes)


def _codes(file: str, key: str, specs: list[str], lo: int, hi: int) -> None:
    expected = f'status codes from {lo} to {hi} like "408", "5xx" or "500-599"'
    try:
        codes = parse_status_codes(specs)
    except ValueError as exc:
        i = exc.args[0]
        raise ConfigError(file, f"{key}[{i}]", expected, specs[i]) from None
    for i, spec in enumerate(specs):
        if not parse_status_codes([spec]) <= set(range(lo, hi + 1)):
            raise ConfigError(file, f"{key}[{i}]", expected, spec)
    if not codes:
        raise ConfigError(file, key, "at least one status code", specs)
