"""The one error a DNS resolution raises.

Every failure below the resolver (dnspython exceptions, ``OSError`` from the socket, our own
timeout) is translated at the boundary into ``DnsError`` with ``raise ... from exc``, so a
caller handles exactly one type (httpx ``map_httpcore_exceptions``)::

    DnsError(reason, name)
      reason = "timeout"                no answer within the resolver's timeout
               "servfail"               every nameserver failed (SERVFAIL, REFUSED, bad reply)
               "network"                the socket failed (OSError)
               "no_address"             the name exists nowhere we can send to (NXDOMAIN,
                                        NODATA, SRV target ".", no A/AAAA for any target)
               "unsupported_transport"  the URI asks for a transport we were not given
               "bad_name"               the host is not a valid DNS name
"""

from __future__ import annotations


class DnsError(Exception):
    """Resolution of ``name`` failed for ``reason`` (see the module docstring).

    A proxy answers the request itself: Kamailio and OpenSIPS reply 478 Unresolvable
    destination for ``no_address`` and 503 for ``timeout``/``servfail``/``network``.
    """

    def __init__(self, reason: str, name: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {name}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.name = name
        self.detail = detail
