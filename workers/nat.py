"""NAT detection and Contact fixing (OpenSIPS/Kamailio nathelper), sans-IO.

Rules:
1. The address a message came from (the ingress saw it) is the truth; what a peer writes in
   Contact or Via is a claim. A message is taken as sent from behind NAT when any configured
   test passes (Kamailio ``nat_uac_test``): a private Contact or top Via address (RFC 1918,
   RFC 6598 shared space, IPv6 ULA), a Contact or top Via that is not the source, or a top Via
   asking for ``rport`` (RFC 3581). For a stream transport only the host is compared: the
   source port of a TCP connection is ephemeral, whatever the Contact says.
2. ``contact_edit`` rewrites the host:port of the one Contact of a message to its source and
   marks it ``;sl-nat=<the original host:port>`` (nathelper ``fix_nated_contact``), so a
   reader can tell and undo it. The marker is informational: nothing here routes by it, so a
   forged one only lies about the original address. A marker already present is kept, not
   repeated. ``Contact: *``, several Contacts, or one that does not parse: left alone.
3. Where it applies (``workers/proxy.py``): a request is fixed only when it came straight
   from its UA (one Via), never a REGISTER (the registrar keeps the source instead, as
   fix_nated_register); a response only by ``private_contact`` (``RESPONSE_TESTS``): a
   response relayed by another proxy comes from that proxy, so "the Contact is not the
   source" says nothing about NAT, while a private Contact is unreachable from here anyway.
4. Nothing here opens sockets: the rewritten address is the source the ingress saw.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ingress.sip.errors import BadRequest
from ingress.sip.grammar import parse_name_addr
from ingress.sip.headers import split_commas
from ingress.sip.message import Message, Request, Uri
from ingress.sip.serialize import Edit

#: the tests that apply to a response (rule 3)
RESPONSE_TESTS = frozenset({"private_contact"})
#: the Contact parameter a rewritten Contact carries (rule 2)
MARKER = "sl-nat"
STREAMS = frozenset({"tcp", "tls"})
#: addresses a UA behind NAT writes: RFC 1918, RFC 6598 (carrier-grade NAT), RFC 4193 (ULA)
PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))  # fmt: skip
CRLF = b"\r\n"
#: hosts whose privacy is remembered (``is_private``); bounded, least recently used goes
PRIVATE_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=PRIVATE_CACHE_SIZE)
def is_private(host: str) -> bool:
    """Whether ``host`` (an address, IPv6 with or without brackets) is a private one; a name
    or anything else is not. Cached: a UA's hosts repeat on every message it sends."""
    h = host[1:-1] if host[:1] == "[" else host
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    return any(ip in net for net in PRIVATE_NETS if net.version == ip.version)


@dataclass(frozen=True, slots=True)
class Seen:
    """Where a message came from, as the ingress saw it."""

    transport: str  # lower case
    ip: str
    port: int


def _same_host(host: str, ip: str) -> bool:
    h = host[1:-1] if host[:1] == "[" else host
    if h == ip:
        return True
    if ":" not in h and ":" not in ip:
        return False  # IPv4 text has one spelling (ipaddress refuses leading zeros), names none
    try:
        return ipaddress.ip_address(h) == ipaddress.ip_address(ip)
    except ValueError:
        return False  # a name is never the source: a UA behind NAT often writes one


def _not_source(host: str, port: int | None, default_port: int, src: Seen) -> bool:
    if not _same_host(host, src.ip):
        return True
    return src.transport not in STREAMS and (port or default_port) != src.port


def behind_nat(msg: Message, src: Seen, tests: Collection[str],
               contacts: Iterable[Uri] | None = None) -> bool:  # fmt: skip
    """Whether ``msg`` came from behind NAT by any of ``tests`` (rule 1). ``contacts``: the
    Contact URIs to test (default: those of ``msg`` that parse); the Via tests apply to
    requests only (a response's top Via is ours)."""
    if contacts is None:
        contacts = contact_uris(msg)
    default_port = 5061 if src.transport == "tls" else 5060
    for uri in contacts:
        if not uri.is_sip:
            continue
        if "private_contact" in tests and is_private(uri.host):
            return True
        if "contact_not_source" in tests and _not_source(uri.host, uri.port, default_port, src):
            return True
    if not isinstance(msg, Request) or not msg.vias:
        return False
    top = msg.vias[0]
    if "private_via" in tests and is_private(top.host):
        return True
    if "via_not_source" in tests and _not_source(top.host, top.port, default_port, src):
        return True
    return "rport" in tests and "rport" in top.params


def contact_uris(msg: Message) -> list[Uri]:
    """The Contact URIs of ``msg`` that parse (``*`` and malformed ones left out)."""
    out: list[Uri] = []
    for value in msg.header_values("contact"):
        for part in split_commas(value):
            if part.strip() == b"*":
                continue
            try:
                out.append(parse_name_addr(part).uri)
            except BadRequest:
                continue
    return out


def fixed_uri(raw: str, src: Seen) -> str | None:
    """``raw`` (a sip:/sips: URI) with its host:port replaced by ``src`` and the marker added
    (rule 2), or None when it is not a SIP URI."""
    scheme, colon, rest = raw.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    at = rest.find("@")
    start = at + 1 if at >= 0 else 0
    i = start
    if rest[i : i + 1] == "[":
        close = rest.find("]", i)
        if close < 0:
            return None
        i = close + 1
    end = len(rest)
    for stop in (";", "?"):
        j = rest.find(stop, i)
        if 0 <= j < end:
            end = j
    original = rest[start:end]
    host = f"[{src.ip}]" if ":" in src.ip else src.ip
    tail = rest[end:]
    params, q, headers = tail.partition("?")
    if f";{MARKER}=" not in params.lower():
        params += f";{MARKER}={original}"
    return f"{scheme}:{rest[:start]}{host}:{src.port}{params}{q}{headers}"


def contact_edit(msg: Message, src: Seen) -> Edit | None:
    """The splice that rewrites the one Contact of ``msg`` to ``src`` (rule 2), or None."""
    found = None
    for name, value, start, end in msg.headers:
        if name != "contact":
            continue
        if found is not None:
            return None  # several Contact lines: not a dialog's single remote target
        found = (value, start, end)
    if found is None:
        return None
    value, start, end = found
    parts = split_commas(value)
    if len(parts) != 1 or parts[0].strip() == b"*":
        return None
    try:
        na = parse_name_addr(parts[0])
    except BadRequest:
        return None
    new_uri = fixed_uri(na.uri.raw, src)
    if new_uri is None:
        return None
    text = parts[0].decode("utf-8", "surrogateescape").strip()
    old = na.uri.raw
    pos = text.find("<" + old + ">")
    if pos >= 0:
        line = text[:pos] + "<" + new_uri + ">" + text[pos + len(old) + 2 :]
    elif text.startswith(old):  # addr-spec: its parameters belong to the header, bracket it
        line = "<" + new_uri + ">" + text[len(old) :]
    else:
        return None
    return (start, end, b"Contact: " + line.encode("utf-8", "surrogateescape") + CRLF)
