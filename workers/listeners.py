"""Our own addresses, and the address tests a next hop or a Via must pass.

The proxy asks, per message, whether a Route, Via or Request-URI names us (``Listeners``)
and whether a host is an IP literal it can send to without DNS (``is_ip``, ``is_unicast``).
"""

from __future__ import annotations

import functools
import ipaddress

from conf.settings import Listener
from ingress.sip.message import Uri


class Listeners:
    """Our own addresses: to recognise Route, Via and Request-URI entries that name us."""

    def __init__(self, listen: list[Listener]) -> None:
        self.listen = listen
        self._addrs = {(lst.address, lst.port) for lst in listen}
        #: our Via up to the branch value, per listener (``pick`` returns one of ``listen``,
        #: which these hold alive, so ``id`` names it): a frozen dataclass hashes all its
        #: fields on every lookup, which cost ~2 % of a worker's time as a cache key
        self.via_prefixes = {id(lst): via_prefix(lst.transport, lst) for lst in listen}

    def is_us(self, host: str, port: int | None, transport: str = "udp") -> bool:
        if not port:  # the transport matters only for the default port
            port = 5061 if transport.lower() == "tls" else 5060
        return (host, port) in self._addrs

    def uri_is_us(self, uri: Uri) -> bool:
        return uri.is_sip and self.is_us(uri.host_plain, uri.port, uri.param("transport") or "")

    def pick(self, transport: str, dst_ip: str) -> Listener | None:
        """The listener to send from: same transport, same address family."""
        v6 = ":" in dst_ip
        for lst in self.listen:
            if lst.transport == transport and (":" in lst.address) == v6:
                return lst
        return None


def via_prefix(transport: str, lst: Listener) -> bytes:
    return f"Via: SIP/2.0/{transport.upper()} {hostport(lst)};branch=".encode()


def hostport(lst: Listener) -> str:
    host = f"[{lst.address}]" if ":" in lst.address else lst.address
    return f"{host}:{lst.port}"


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


@functools.lru_cache(maxsize=4096)
def is_unicast(host: str) -> bool:
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv4Address) and ip == ipaddress.IPv4Address("255.255.255.255"):
        return False
    return not (ip.is_multicast or ip.is_unspecified)


# Every message asks these of the same few peer addresses; ipaddress costs ~10 µs a parse.
@functools.lru_cache(maxsize=4096)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
