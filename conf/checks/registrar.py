"""Load-time checks of ``[registrar]`` and ``[nat]`` (``conf/sections/registrar.py``)."""

from __future__ import annotations

from conf import cluster_url
from conf.checks.common import CACHEDB_SCHEMES, DOMAIN_RE
from conf.checks.errors import ConfigError
from conf.settings import Settings

#: statuses a request for one of our users may get when no binding is found (docs/registrar.md)
REGISTRAR_MISS_STATUSES = (404, 410, 480, 604)


def check_registrar(f: str, s: Settings) -> None:
    r = s.registrar
    for i, domain in enumerate(r.domains):
        if not DOMAIN_RE.fullmatch(domain):
            raise ConfigError(f, f"registrar.domains[{i}]", "a host name or an address", domain)
    scheme = r.cachedb_url.partition("://")[0]
    if "://" not in r.cachedb_url or scheme not in CACHEDB_SCHEMES:
        expected = ("a cacheDB URL: local://, redis://host:port/db, "
                    "redis-cluster://host:port[,host:port...]/ or memcached://host:port")  # fmt: skip
        raise ConfigError(f, "registrar.cachedb_url", expected, r.cachedb_url)
    if scheme == cluster_url.SCHEME:
        try:
            cluster_url.parse(r.cachedb_url)
        except ValueError as exc:
            raise ConfigError(f, "registrar.cachedb_url", str(exc), r.cachedb_url) from None
    if r.min_expires_s > r.max_expires_s:
        expected = f"at most registrar.max_expires_s ({r.max_expires_s})"
        raise ConfigError(f, "registrar.min_expires_s", expected, r.min_expires_s)
    if not r.min_expires_s <= r.default_expires_s <= r.max_expires_s:
        expected = f"from min_expires_s ({r.min_expires_s}) to max_expires_s ({r.max_expires_s})"
        raise ConfigError(f, "registrar.default_expires_s", expected, r.default_expires_s)
    for name in ("unknown_aor_status", "no_binding_status"):
        status = getattr(r, name)
        if status not in REGISTRAR_MISS_STATUSES:
            expected = "one of " + ", ".join(map(str, REGISTRAR_MISS_STATUSES))
            raise ConfigError(f, f"registrar.{name}", expected, status)


#: the tests of ``[nat] detect`` (workers/nat.py)
NAT_TESTS = ("private_contact", "private_via", "contact_not_source", "via_not_source", "rport")


def check_nat(f: str, s: Settings) -> None:
    n = s.nat
    for i, name in enumerate(n.detect):
        if name not in NAT_TESTS:
            raise ConfigError(f, f"nat.detect[{i}]", "one of " + ", ".join(NAT_TESTS), name)
    if n.ping_method not in ("options", "crlf"):
        raise ConfigError(f, "nat.ping_method", "options or crlf", n.ping_method)
    if n.ping_interval_s > 0 and not s.registrar.enabled:
        raise ConfigError(f, "nat.ping_interval_s", "0 unless [registrar] enabled = true",
                          n.ping_interval_s)  # fmt: skip
    if 0 < n.ping_interval_s < 1:
        raise ConfigError(f, "nat.ping_interval_s", "0 (off) or at least 1", n.ping_interval_s)
    if n.ping_drop_after > 0 and n.ping_method != "options":
        raise ConfigError(f, "nat.ping_drop_after", "0 unless ping_method = \"options\"",
                          n.ping_drop_after)  # fmt: skip
