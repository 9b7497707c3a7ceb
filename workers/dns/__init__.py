"""RFC 3263 resolution of SIP URIs for the workers, cached and never blocking the loop.

Use one ``Resolver`` per event loop::

    resolver = Resolver(ResolverConfig(timeout_s=2.0))
    targets = await resolver.resolve(uri)   # [Target(transport, ip, port), ...] best first

``DnsError`` is the only exception it raises. Modules: ``targets`` (the RFC 3263/2782
decisions, no I/O), ``cache`` (TTL-bounded answers, injected clock), ``resolver`` (the
asyncio adapter over dnspython), ``errors``. See docs/dns.md.
"""

from workers.dns.errors import DnsError
from workers.dns.resolver import Resolver, ResolverConfig
from workers.dns.targets import Target

__all__ = ["DnsError", "Resolver", "ResolverConfig", "Target"]
