"""Load-time checks of ``[[listen]]`` and ``[tcp]`` (``conf/sections/listen.py``); the TLS keys
and ``[tls]`` are checked in ``tls.py``."""

from __future__ import annotations

import ipaddress

from conf.checks.common import _ip
from conf.checks.errors import ConfigError, Said
from conf.settings import Settings


def check_listen(f: str, s: Settings) -> None:
    """[[listen]]: specific addresses, each listener once."""
    if not s.listen:
        raise ConfigError(f, "listen", "at least one [[listen]] table", Said("none"))
    seen: dict[tuple[str, str, int], int] = {}
    for i, lst in enumerate(s.listen):
        _ip(f, f"listen[{i}].address", lst.address)
        ip = ipaddress.ip_address(lst.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            expected = "an address without a %zone (it goes into Via and Record-Route)"
            raise ConfigError(f, f"listen[{i}].address", expected, lst.address)
        if ip.is_unspecified:
            # workers write the listener's address into Via and Record-Route; a wildcard
            # there sends responses and in-dialog requests nowhere
            expected = "a specific address (it goes into Via and Record-Route)"
            raise ConfigError(f, f"listen[{i}].address", expected, lst.address)
        k = (lst.transport, str(ip), lst.port)
        if k in seen:
            found = Said(f"{lst.transport} {lst.address}:{lst.port} again (listen[{seen[k]}])")
            raise ConfigError(f, f"listen[{i}]", "each listener once", found)
        seen[k] = i


def check_tcp(f: str, s: Settings) -> None:
    if s.tcp.max_connections_per_ip > s.tcp.max_connections:
        expected = f"at most tcp.max_connections ({s.tcp.max_connections})"
        raise ConfigError(f, "tcp.max_connections_per_ip", expected, s.tcp.max_connections_per_ip)
