"""Load-time checks of ``[proxy]`` option tags, ``[[destination_set]]``, ``[[route]]`` and
``[[trusted]]`` (``conf/sections/routing.py``, ``conf/sections/proxy.py``): destinations that
parse and that some listener can send to, one action per route, names that resolve. What a
route may say beyond where it sends is checked in ``route_rules.py``; prefix tables in
``prefix_tables.py``."""

from __future__ import annotations

import ipaddress
import re

from conf.checks.common import _CIDR_HELP, NODE_NAME_RE, TOKEN_RE, _codes, _methods, _unique
from conf.checks.errors import ConfigError, Said, _num, show
from conf.checks.route_rules import check_route
from conf.settings import DestinationSet, Route, Settings


def check_proxy(f: str, s: Settings) -> None:
    for i, tag in enumerate(s.proxy.proxy_require_supported):
        if not TOKEN_RE.fullmatch(tag):
            raise ConfigError(
                f, f"proxy.proxy_require_supported[{i}]", "an option tag (a SIP token)", tag
            )


def check_destination_sets(f: str, s: Settings) -> dict[str, int]:
    """[[destination_set]]: names, destinations some listener can send to, weights, probing.
    Returns the sets' names and indexes, for the routes."""
    sets: dict[str, int] = {}
    for i, ds in enumerate(s.destination_set):
        key = f"destination_set[{i}]"
        if not ds.name:
            raise ConfigError(f, f"{key}.name", "a non-empty name", ds.name)
        _unique(f, "destination_set", i, ds.name, sets)
        if not ds.destinations:
            raise ConfigError(f, f"{key}.destinations", "at least one SIP URI", ds.destinations)
        for j, uri in enumerate(ds.destinations):
            _destination(f, f"{key}.destinations[{j}]", uri, s)
        if ds.weights and ds.algorithm != "weighted":
            expected = 'no weights unless algorithm = "weighted"'
            raise ConfigError(f, f"{key}.weights", expected, ds.weights)
        if ds.weights and len(ds.weights) != len(ds.destinations):
            expected = f"one weight per destination ({len(ds.destinations)})"
            raise ConfigError(f, f"{key}.weights", expected, ds.weights)
        for j, w in enumerate(ds.weights):
            if not 1 <= w <= 1_000_000:
                raise ConfigError(f, f"{key}.weights[{j}]", "a number from 1 to 1000000", w)
        _check_probing(f, key, ds)
        named = [u for u in ds.destinations if _is_host_name(u)]
        if named and ds.probe_interval_s > 0:
            raise ConfigError(f, f"{key}.probe_interval_s",
                              "0 (probes go to addresses; this set names hosts)", ds.probe_interval_s)
    return sets


def check_routes(f: str, s: Settings, sets: dict[str, int]) -> None:
    """[[route]]: names, one action, regexes that compile, and what ``route_rules.py`` checks."""
    named_sets = {ds.name for ds in s.destination_set
                  if any(_is_host_name(u) for u in ds.destinations)}  # fmt: skip
    names: dict[str, int] = {}
    for i, r in enumerate(s.route):
        key = f"route[{i}]"
        if r.to in named_sets and (r.mode or s.proxy.mode) != "stateful":
            expected = ('"stateful" (here or in [proxy]): destination set '
                        f"{show(r.to)} names hosts, and only the stateful proxy resolves them")
            raise ConfigError(f, f"{key}.mode", expected, r.mode or s.proxy.mode)
        if not r.name:
            raise ConfigError(f, f"{key}.name", "a non-empty name", r.name)
        _unique(f, "route", i, r.name, names)
        _check_action(f, key, r, sets)
        _methods(f, key, r.methods)
        for field_name in ("ruri_user", "ruri_host"):
            pattern = getattr(r, field_name)
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                found = Said(f"{show(pattern)} ({exc})")
                raise ConfigError(f, f"{key}.{field_name}", "a regular expression", found) from None
        if r.source:
            try:
                ipaddress.ip_network(r.source, strict=False)
            except ValueError:
                expected = "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32"
                raise ConfigError(f, f"{key}.source", expected, r.source) from None
        check_route(f, key, r, s)


def _check_action(f: str, key: str, r: Route, sets: dict[str, int]) -> None:
    """A route does one thing: ``to`` a set, ``to_request_uri`` or ``reject``; or, with
    ``continue_routing``, none of them (its rewrites and edits, then the next rules)."""
    actions = [name for name, on in (("to", r.to != ""), ("to_request_uri", r.to_request_uri),
                                     ("reject", r.reject != 0),
                                     ("prefix_table", r.prefix_table != "")) if on]  # fmt: skip
    known = ", ".join(sets) if sets else "none is defined"
    if r.continue_routing:
        if actions:
            expected = "no to, to_request_uri, reject or prefix_table with continue_routing = true"
            raise ConfigError(f, f"{key}.{actions[0]}", expected, getattr(r, actions[0]))
        if not (r.strip_user or r.prefix_user or r.user_regex or r.header_edit):
            expected = "a rewrite (strip_user, prefix_user, user_regex) or a header_edit"
            raise ConfigError(f, f"{key}.continue_routing", expected, Said("none"))
        return
    if not actions:
        expected = (f"an action: the name of a [[destination_set]] ({known}), "
                    "to_request_uri = true or reject (a status)")  # fmt: skip
        raise ConfigError(f, f"{key}.to", expected, Said("nothing"))
    if len(actions) > 1:
        expected = f"one action per route (this one has {actions[0]} already)"
        raise ConfigError(f, f"{key}.{actions[1]}", expected, getattr(r, actions[1]))
    if r.to and r.to not in sets:
        expected = f"the name of a [[destination_set]] ({known})"
        raise ConfigError(f, f"{key}.to", expected, r.to)
    if r.reject and r.reject < 400:
        raise ConfigError(f, f"{key}.reject", "a status from 400 to 699 (or 0)", r.reject)
    if r.reason and not r.reject:
        raise ConfigError(f, f"{key}.reason", 'nothing unless reject is set ("")', r.reason)
    if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in r.reason):
        # it goes into the status line as it is (RFC 3261 §25.1 Reason-Phrase)
        raise ConfigError(f, f"{key}.reason", "a reason phrase without control characters",
                          r.reason)  # fmt: skip


def check_trusted(f: str, s: Settings) -> None:
    """[[trusted]] tables and the routes' ``trusted`` conditions (docs/security.md)."""
    tags: set[str] = set()
    transports = {lst.transport for lst in s.listen}
    for i, t in enumerate(s.trusted):
        key = f"trusted[{i}]"
        try:
            ipaddress.ip_network(t.cidr, strict=False)
        except ValueError:
            raise ConfigError(f, f"{key}.cidr", _CIDR_HELP, t.cidr) from None
        if t.transport and t.transport not in transports:
            expected = f"a transport some [[listen]] uses ({', '.join(sorted(transports))})"
            raise ConfigError(f, f"{key}.transport", expected, t.transport)
        if t.tag and not NODE_NAME_RE.fullmatch(t.tag):
            raise ConfigError(f, f"{key}.tag", "a tag of letters, digits, '.', '_' or '-'", t.tag)
        tags.add(t.tag)
    tags.discard("")
    for i, r in enumerate(s.route):
        if r.trusted is False or r.trusted in tags or (r.trusted is True and s.trusted):
            continue
        if r.trusted is True:
            expected = "false when no [[trusted]] table is defined (it would never match)"
        else:
            known = ", ".join(sorted(tags)) if tags else "no [[trusted]] table has one"
            expected = f"true, false or the tag of a [[trusted]] table ({known})"
        raise ConfigError(f, f"route[{i}].trusted", expected, r.trusted)


# conf/ imports nothing of ours, so destinations are checked with their own small grammar
# (RFC 3261 §25.1 SIP-URI without userinfo: host, port, uri-parameters; the scheme is
# case-insensitive, §19.1.4).
DESTINATION_RE = re.compile(
    r"(?i:sips?):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?((?:;[A-Za-z0-9\-_.!~*'%]+(?:=[^;]*)?)*)"
)
_URI_HELP = "a SIP URI like sip:192.0.2.1:5060;transport=tcp (or sips:)"
#: RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens
HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _is_host_name(uri: str) -> bool:
    m = DESTINATION_RE.fullmatch(uri)
    if m is None:
        return False
    host = m.group(1)
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return True
    return False


def _host_destination(file: str, key: str, uri: str, host: str, port: str | None) -> None:
    """A host name destination is resolved by RFC 3263 when a request is forwarded."""
    if host.rstrip(".").rsplit(".", 1)[-1].isdigit():  # RFC 1123 §2.1: not a dotted quad
        raise ConfigError(file, key, _URI_HELP + " (an IP address)", uri)
    if not HOSTNAME_RE.fullmatch(host) or len(host) > 253:
        raise ConfigError(file, key, _URI_HELP + " (an IP address or a host name)", uri)
    if port and not 0 < int(port) < 65536:
        raise ConfigError(file, key, _URI_HELP + " (port from 1 to 65535)", uri)


def _destination(file: str, key: str, uri: str, s: Settings) -> None:
    m = DESTINATION_RE.fullmatch(uri)
    if m is None:
        raise ConfigError(file, key, _URI_HELP, uri)
    host = m.group(1)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        _host_destination(file, key, uri, host, m.group(2))
    if ip is not None and host.startswith("[") != (ip.version == 6):
        raise ConfigError(file, key, _URI_HELP + " (IPv6 in brackets)", uri)
    if m.group(2) and not 0 < int(m.group(2)) < 65536:
        raise ConfigError(file, key, _URI_HELP + " (port from 1 to 65535)", uri)
    param = re.search(r";transport=([^;]*)", m.group(3) or "", re.IGNORECASE)
    transport = param.group(1).lower() if param else None
    if transport not in (None, "udp", "tcp", "tls"):
        raise ConfigError(file, key, "transport=udp, transport=tcp or transport=tls", uri)
    if uri[:5].lower() == "sips:":
        transport = "tls"  # RFC 3261 §26.2.1: whatever the transport parameter says
    if ip is None:
        return  # a host name: its addresses are checked against the listeners when resolved
    # a worker sends from a listener of the same transport and address family
    family = f"IPv{ip.version}"
    usable = [
        lst for lst in s.listen
        if ipaddress.ip_address(lst.address).version == ip.version
        and transport in (None, lst.transport)
    ]  # fmt: skip
    if not usable:
        wanted = f"{transport} {family}" if transport else family
        expected = f"a destination some [[listen]] can send to (there is no {wanted} listener)"
        raise ConfigError(file, key, expected, uri)


#: probes more often than this flood a destination for no gain in detection time
MIN_PROBE_INTERVAL_S = 0.1


def _check_probing(file: str, key: str, ds: DestinationSet) -> None:
    interval = ds.probe_interval_s
    if 0 < interval < MIN_PROBE_INTERVAL_S:
        expected = f"0 (no probing) or at least {_num(MIN_PROBE_INTERVAL_S)}"
        raise ConfigError(file, f"{key}.probe_interval_s", expected, interval)
    if interval and ds.probe_timeout_s > interval:
        # one probe in flight per destination: the next is due when this one times out
        expected = f"at most probe_interval_s ({_num(interval)})"
        raise ConfigError(file, f"{key}.probe_timeout_s", expected, ds.probe_timeout_s)
    if ds.probe_from and not PROBE_FROM_RE.fullmatch(ds.probe_from):
        expected = "a sip: URI like sip:probe@192.0.2.10"
        raise ConfigError(file, f"{key}.probe_from", expected, ds.probe_from)
    # alive: finals only (a probe waits past provisionals); failover: never a 2xx, which
    # ends the transaction, nor a 6xx, which ends the search (RFC 3261 §16.7 step 5)
    _codes(file, f"{key}.alive_codes", ds.alive_codes, 200, 699)
    _codes(file, f"{key}.failover_codes", ds.failover_codes, 300, 599)


#: what goes into a From header as is: a SIP URI without spaces, angle brackets or controls
PROBE_FROM_RE = re.compile(r"(?i:sip):[^\s<>\x00-\x1f\x7f\"]+")
