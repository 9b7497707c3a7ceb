"""OPTIONS probes of destinations: what one looks like on the wire, and which worker
sends it (rules 5 and 6 of ``workers/routing/dispatcher.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from conf.settings import Listener
from ingress.sip.grammar import parse_uri

#: every probe's branch starts so (and no proxied request's: those are ``z9hG4bK-sl``)
PROBE_BRANCH_PREFIX = "z9hG4bK-dp"
PROBE_MAX_FORWARDS = 70  # RFC 3261 §8.1.1.6


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """An OPTIONS to send: ``data`` to ``(transport, host, port)`` from ``listener``."""

    branch: str
    set_name: str
    uri: str
    transport: str
    host: str
    port: int
    listener: Listener
    data: bytes
    deadline: float  # it times out then (``handle_timer``)


def build_options(uri: str, lst: Listener, branch: str, call_id: str, from_uri: str = "",
                  *, tag: str) -> bytes:  # fmt: skip
    """An OPTIONS request for ``uri`` sent from ``lst`` (RFC 3261 §11.1, the headers of
    §8.1.1), with ``rport`` so the answer comes back to the port it left from (RFC 3581)."""
    host = f"[{lst.address}]" if ":" in lst.address else lst.address
    target = parse_uri(uri)
    to = f"sip:{target.host}" + (f":{target.port}" if target.port else "")
    lines = [
        f"OPTIONS {uri} SIP/2.0",
        f"Via: SIP/2.0/{lst.transport.upper()} {host}:{lst.port};branch={branch};rport",
        f"Max-Forwards: {PROBE_MAX_FORWARDS}",
        f"From: <{from_uri or f'sip:sipline@{host}'}>;tag={tag}",
        f"To: <{to}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def probe_share(keys: Iterable[tuple[str, str]], workers: Collection[str],
                me: str) -> set[tuple[str, str]]:  # fmt: skip
    """The destinations ``me`` probes when ``workers`` share them: each goes to the worker
    with the highest rendezvous score (as the ingress spreads Call-IDs), so every worker
    computes the same split and a worker joining or leaving moves only its own share."""
    mine = set()
    for key in keys:
        base = zlib.crc32(f"{key[0]}\n{key[1]}".encode())
        best = max(workers, key=lambda w: (_fmix32(base ^ zlib.crc32(w.encode())), w))
        if best == me:
            mine.add(key)
    return mine


def _fmix32(x: int) -> int:
    """MurmurHash3's finaliser: crc32 alone is affine in its seed and would split badly."""
    x = ((x ^ (x >> 16)) * 0x85EBCA6B) & 0xFFFFFFFF
    x = ((x ^ (x >> 13)) * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)

