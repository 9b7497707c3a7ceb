"""The asyncio DNS resolver a worker uses to turn a SIP URI into targets (RFC 3263 §4).

Rules of this module:

1. Never block the loop: every query goes through dnspython's asyncio resolver
   (``dns.asyncresolver``), and ``resolve`` as a whole is bounded by ``timeout_s``.
2. Ask the network at most once per ``(name, type)`` at a time: a lookup first reads the
   cache (``cache.py``), then joins a query already in flight for the same key, and only
   then starts one. The shared query runs in its own task, shielded from the callers, so a
   caller that gives up does not cancel it for the others, and its answer is cached.
3. One error type: dnspython exceptions, ``OSError`` and our timeout become ``DnsError``
   here, at the boundary (``raise ... from exc``).
4. A query slower than ``slow_ms`` logs ``dns_slow`` (name, type, ms); the caller logs
   failures, so nothing else is logged here.
5. The decisions of RFC 3263 (which names to ask, SRV order, ports) live in ``targets.py``;
   this module only sends the queries they name and assembles the answers.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import structlog

from workers.dns import targets as t
from workers.dns.cache import Answer, AnswerCache, Key
from workers.dns.errors import DnsError
from workers.dns.targets import Naptr, Srv, Target

log = structlog.get_logger()

#: RFC 3263 leaves the order of transports to the client; UDP first as RFC 3261 §18.1.1
#: makes it the default, TCP after it. TLS is a later step (docs/design.md §3): add "tls" when the
#: proxy has a TLS listener, then SIPS URIs resolve too.
DEFAULT_TRANSPORTS = ("udp", "tcp")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolverConfig:
    """How the resolver asks and how long it remembers."""

    nameservers: tuple[str, ...] = ()
    """Nameservers to ask in turn, ``"ip"`` or ``"ip:port"`` (``"[v6]:port"``); empty reads
    the system's ``/etc/resolv.conf`` once, at start-up."""
    port: int = 53
    """Port of the nameservers given without one."""
    timeout_s: float = 2.0
    """Bound on one ``resolve`` call, all its queries included (a SIP Timer B is 32 s; a
    proxy must fail over well before that)."""
    attempt_timeout_s: float = 0.5
    """Wait for one nameserver before asking the next (or the same again, with one): a
    lost UDP datagram or a dead first server must not eat the whole ``timeout_s``."""
    slow_ms: float = 100.0
    """A query slower than this logs ``dns_slow``; a LAN resolver answers in a few ms."""
    cache_size: int = 10_000
    """Cached answers (name and type) kept at most; LRU beyond that."""
    min_ttl_s: float = 1.0
    """Floor for every cached answer: a zero TTL would send one query per request."""
    max_ttl_s: float = 3600.0
    """Ceiling for positive answers: a renumbered peer is picked up within an hour."""
    negative_ttl_s: float = 60.0
    """NXDOMAIN/NODATA TTL without an SOA, and the cap with one (Kamailio dns_neg_cache_ttl)."""
    failure_ttl_s: float = 5.0
    """Timeouts and SERVFAIL are remembered this long (RFC 2308 §7: at most 5 minutes)."""
    transports: tuple[str, ...] = DEFAULT_TRANSPORTS
    """Transports the caller can send on, in order of preference (SRV queries follow it)."""
    address_types: tuple[str, ...] = ("A", "AAAA")
    """Address records to ask for each host, in order of preference."""
    naptr: bool = False
    """Ask NAPTR first (RFC 3263 §4.1, optional); off like Kamailio's dns_try_naptr."""


class UriLike(Protocol):
    """What ``resolve`` needs of a URI (``ingress.sip.message.Uri`` has it)."""

    @property
    def scheme(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    def param(self, name: str) -> str | None: ...


class Resolver:
    """RFC 3263 resolution with a cache and coalesced queries; one per event loop.

    Args:
        config: see ``ResolverConfig``.
        timer: the cache's clock (``time.monotonic``; tests pass their own).
        rng: randomness for the RFC 2782 weighted order (tests fix the seed).
    """

    def __init__(
        self,
        config: ResolverConfig | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = cfg = config or ResolverConfig()
        self._rng = rng or random.Random()
        self._cache = AnswerCache(
            cfg.cache_size,
            min_ttl_s=cfg.min_ttl_s,
            max_ttl_s=cfg.max_ttl_s,
            negative_ttl_s=cfg.negative_ttl_s,
            failure_ttl_s=cfg.failure_ttl_s,
            timer=timer,
        )
        self._inflight: dict[Key, asyncio.Task[Answer]] = {}
        self._dns = _dnspython_resolver(cfg)
        self.queries_sent = 0
        """Queries that went to the network (cache misses not joined to one in flight)."""

    async def resolve(self, uri: UriLike) -> list[Target]:
        """The targets for a SIP or SIPS URI, best first (RFC 3263 §4).

        Raises:
            DnsError: the URI cannot be resolved (see ``errors.py`` for the reasons).
        """
        return await self.resolve_host(
            uri.host, uri.port, uri.param("transport"), secure=uri.scheme.lower() == "sips"
        )

    async def resolve_host(
        self,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        *,
        secure: bool = False,
    ) -> list[Target]:
        """The targets for ``host`` (a name or a numeric IP) as a URI would give them.

        Args:
            host: the URI host, IPv6 brackets allowed.
            port: the URI port, None when absent.
            transport: the URI ``transport`` parameter, None when absent.
            secure: a SIPS URI.

        Raises:
            DnsError: no target (see ``errors.py`` for the reasons).
        """
        forced = t.uri_transport(transport, secure)
        ip = t.numeric_ip(host)
        if ip is not None:  # §4.1/§4.2: no DNS for a numeric IP
            tr = forced or t.default_transport(secure)
            t.check_supported(tr, self.config.transports)
            return [Target(tr, ip, port or t.DEFAULT_PORTS[tr])]
        name = t.normalise(host)
        try:
            async with asyncio.timeout(self.config.timeout_s):
                found = await self._resolve_name(name, port, forced, secure)
        except TimeoutError as exc:
            raise DnsError("timeout", name) from exc
        if not found:
            raise DnsError("no_address", name)
        return found

    async def _resolve_name(
        self, name: str, port: int | None, forced: str | None, secure: bool
    ) -> list[Target]:
        if port is not None:  # §4.2: a port in the URI means A/AAAA only
            return await self._host_targets(name, port, forced, secure)
        services = await self._services(name, forced, secure)
        answers = await self._settle([(n, "SRV") for _, n in services])
        srvs: list[tuple[str, Srv]] = []
        for (tr, _), res in zip(services, answers, strict=True):
            if isinstance(res, DnsError):
                raise res  # a failed SRV query is not "no SRV": no A/AAAA fallback
            srvs.extend((tr, r) for r in t.order_srv(_srvs(res), self._rng))
        if not srvs:  # §4.2: no SRV at all, A/AAAA at the default port
            return await self._host_targets(name, None, forced, secure)
        return await self._srv_targets(srvs)

    async def _services(self, name: str, forced: str | None, secure: bool) -> list[tuple[str, str]]:
        """The (transport, SRV name) pairs to ask: from NAPTR when enabled, else built."""
        supported = self.config.transports
        if forced is not None:
            t.check_supported(forced, supported)
        elif self.config.naptr:
            pairs = t.naptr_queries(_naptrs(await self.lookup(name, "NAPTR")), secure, supported)
            if pairs:
                return pairs
        pairs = t.srv_queries(name, forced, secure, supported)
        if not pairs:
            raise DnsError("unsupported_transport", name, "sips needs tls")
        return pairs

    async def _host_targets(
        self, name: str, port: int | None, forced: str | None, secure: bool
    ) -> list[Target]:
        tr = forced or t.default_transport(secure)
        t.check_supported(tr, self.config.transports)
        addresses, error = await self._addresses([name])
        if error is not None and not addresses[name]:
            raise error
        return [Target(tr, a, port or t.DEFAULT_PORTS[tr]) for a in addresses[name]]

    async def _srv_targets(self, srvs: list[tuple[str, Srv]]) -> list[Target]:
        """A/AAAA of every SRV target, in SRV order; targets that fail are left out."""
        ordered = [(tr, r, t.normalise(r.target)) for tr, r in srvs if r.target != "."]
        addresses, error = await self._addresses(list(dict.fromkeys(h for _, _, h in ordered)))
        out = [Target(tr, a, r.port) for tr, r, h in ordered for a in addresses[h]]
        if error is not None and not out:
            raise error  # every target failed: report the first failure
        return list(dict.fromkeys(out))

    async def _addresses(self, hosts: list[str]) -> tuple[dict[str, list[str]], DnsError | None]:
        """Addresses of each host (A then AAAA, as configured) and the first failure, if any.

        A host whose AAAA query fails still gives its A addresses: a broken AAAA server is
        common and must not hide a working IPv4 target.
        """
        keys = [(h, rdtype) for h in hosts for rdtype in self.config.address_types]
        addresses: dict[str, list[str]] = {h: [] for h in hosts}
        error: DnsError | None = None
        for (h, _), res in zip(keys, await self._settle(keys), strict=True):
            if isinstance(res, DnsError):
                error = error or res
            else:
                addresses[h].extend(str(a) for a in res)
        return addresses, error

    async def lookup(self, name: str, rdtype: str) -> tuple[Hashable, ...]:
        """The records of one type for ``name`` (empty when there are none), cached.

        A/AAAA give IP strings, SRV gives ``Srv``, NAPTR gives ``Naptr``.

        Raises:
            DnsError: the query failed now or, within ``failure_ttl_s``, before.
        """
        (res,) = await self._settle([(t.normalise(name), rdtype)])
        if isinstance(res, DnsError):
            raise res
        return res

    async def _settle(self, keys: list[Key]) -> list[tuple[Hashable, ...] | DnsError]:
        """Records or the error for each key: from the cache when it has them (no task, no
        await: the common case costs a dict lookup), else from one query per key shared
        with every other caller waiting for it (rule 2)."""
        out: list[tuple[Hashable, ...] | DnsError] = []
        missing: list[int] = []
        for i, key in enumerate(keys):
            answer = self._cache.get(key)
            if answer is None:
                missing.append(i)
                out.append(())
            else:
                out.append(_records(key, answer))
        if missing:
            landed = await asyncio.gather(*(self._shared(keys[i]) for i in missing))
            for i, answer in zip(missing, landed, strict=True):
                out[i] = _records(keys[i], answer)
        return out

    def _shared(self, key: Key) -> asyncio.Future[Answer]:
        """The query in flight for ``key``, started if there is none, shielded from us."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._query(key))
            self._inflight[key] = task
            task.add_done_callback(partial(self._landed, key))
        return asyncio.shield(task)

    def _landed(self, key: Key, task: asyncio.Task[Answer]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have left (rule 2)

    async def _query(self, key: Key) -> Answer:
        """Ask the network once for ``key`` and cache what comes back, failures included."""
        name, rdtype = key
        self.queries_sent += 1
        start = time.perf_counter()
        try:
            answer = await self._ask(name, rdtype)
        except DnsError as exc:
            return self._cache.put_failure(key, exc.reason)
        finally:
            ms = (time.perf_counter() - start) * 1000.0
            if ms > self.config.slow_ms:
                log.warning("dns_slow", name=name, type=rdtype, ms=round(ms, 1))
        return answer

    async def _ask(self, name: str, rdtype: str) -> Answer:
        key = (name, rdtype)
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise DnsError("bad_name", name) from exc
        try:
            ans = await self._dns.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            return self._cache.put_negative(key, _soa_ttl(next(iter(responses.values()), None)))
        except dns.exception.Timeout as exc:
            raise DnsError("timeout", name, rdtype) from exc
        except (dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
            raise DnsError("servfail", name, rdtype) from exc
        except dns.exception.DNSException as exc:
            raise DnsError("servfail", name, f"{rdtype}: {exc}") from exc
        except OSError as exc:
            raise DnsError("network", name, f"{rdtype}: {exc}") from exc
        if ans.rrset is None:  # NODATA (RFC 2308 §2.2)
            return self._cache.put_negative(key, _soa_ttl(ans.response))
        records = tuple(_record(rd) for rd in ans.rrset)
        return self._cache.put_positive(key, records, ans.chaining_result.minimum_ttl)


def _dnspython_resolver(cfg: ResolverConfig) -> dns.asyncresolver.Resolver:
    r = dns.asyncresolver.Resolver(configure=not cfg.nameservers)
    if cfg.nameservers:
        r.nameservers = [_nameserver(text, cfg.port) for text in cfg.nameservers]
    r.timeout = min(cfg.attempt_timeout_s, cfg.timeout_s)  # one nameserver, one try
    r.lifetime = cfg.timeout_s  # the whole query; resolve() has its own bound on top
    r.cache = None  # ours is cache.py
    return r


_NAMESERVER_RE = re.compile(
    r"\[(?P<v6>[^\]]+)\](?::(?P<port6>\d+))?"  # [v6] or [v6]:port
    r"|(?P<v4>[^:\[\]]+)(?::(?P<port>\d+))?"  # v4 or v4:port
    r"|(?P<bare>[0-9A-Fa-f:.]+)"  # a bare IPv6 address
)


def _nameserver(text: str, default_port: int) -> dns.nameserver.Nameserver:
    """``"ip"``, ``"ip:port"`` or ``"[v6]:port"`` as a dnspython UDP/TCP nameserver.

    Raises:
        ValueError: not an IP address with an optional port.
    """
    m = _NAMESERVER_RE.fullmatch(text)
    host = m and (m["v6"] or m["v4"] or m["bare"])
    port = int(m["port"] or m["port6"] or default_port) if m else 0
    if not host or t.numeric_ip(host) is None or not 0 < port < 65536:
        raise ValueError(f"nameserver {text!r}: expected ip, ip:port or [ipv6]:port")
    return dns.nameserver.Do53Nameserver(host, port)


def _record(rd: Any) -> Hashable:
    """Plain values for the records we use, so the cache and targets.py never see dnspython."""
    if rd.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rd.address)
    if rd.rdtype == dns.rdatatype.SRV:
        target = "." if rd.target == dns.name.root else rd.target.to_text(True)
        return Srv(rd.priority, rd.weight, rd.port, target)
    if rd.rdtype == dns.rdatatype.NAPTR:
        return Naptr(
            rd.order,
            rd.preference,
            rd.flags.decode("ascii", "replace"),
            rd.service.decode("ascii", "replace"),
            rd.replacement.to_text(True),
        )
    return str(rd.to_text())


def _soa_ttl(response: dns.message.Message | None) -> float | None:
    """min(SOA TTL, SOA MINIMUM) from the authority section (RFC 2308 §5), None without."""
    if response is None:
        return None
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def _records(key: Key, answer: Answer) -> tuple[Hashable, ...] | DnsError:
    if answer.failure is not None:
        return DnsError(answer.failure, key[0], key[1])
    return answer.records


def _srvs(records: Sequence[Hashable]) -> list[Srv]:
    return [r for r in records if isinstance(r, Srv)]


def _naptrs(records: Sequence[Hashable]) -> list[Naptr]:
    return [r for r in records if isinstance(r, Naptr)]
