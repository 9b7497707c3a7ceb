"""Bytes the dialog table holds per confirmed dialog (tracemalloc), sipp-like calls.

Usage (repo root):  .venv/bin/python bench/dialog_memory.py [--dialogs 100000] [--distinct]
                    [--profiles]

Method. For each call the table sees what a stateful proxy between sipp's uac and uas sees:
the INVITE (with SDP) from the caller, forwarded to the callee (``invite_forwarded`` with the
caller and callee destinations the worker would hand in: ``(ingress, (transport, ip, port,
conn, local ip, local port))``, built afresh for every call as the worker builds them), then a
180 and a 200 (with SDP, Contact and our Record-Route) from the callee. The parsed messages
are dropped; the table keeps the confirmed dialogs. tracemalloc's current size is compared
with a baseline taken before the run; the codec's parse caches (bounded, not the dialog
table's) are cleared before both readings, and the deltas and CDRs queues are drained as the
worker would.

``--distinct`` gives every caller its own source port (no destination shared between calls:
the worst case; sipp's uac sends every call from one port). ``--profiles`` puts every dialog
in a profile without value and one with a value per caller (From user, distinct per call).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conf.settings import DialogProfile, Dialogs, Settings
from dialogstate.record import State
from dialogstate.table import DialogTable
from ingress.sip import grammar
from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(i: int, port: int) -> bytes:
    """sipp uac's INVITE (``-sn uac``), as it reaches the proxy."""
    return (
        f"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{i}-1-0\r\n"
        f"From: sipp <sip:sipp{i}@127.0.0.1:{port}>;tag={i}SIPpTag00{i}\r\n"
        "To: service <sip:service@127.0.0.1:5060>\r\n"
        f"Call-ID: {i}-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: sip:sipp@127.0.0.1:{port}\r\nMax-Forwards: 70\r\n"
        "Subject: Performance Test\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def answer(i: int, port: int, status: int) -> bytes:
    """sipp uas's 180/200 to it, with our Record-Route, as it reaches the proxy."""
    body = SDP if status == 200 else b""
    return (
        f"SIP/2.0 {status} {'OK' if status == 200 else 'Ringing'}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sl{i:016x}.abcd1234\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{i}-1-0\r\n"
        "Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
        f"From: sipp <sip:sipp{i}@127.0.0.1:{port}>;tag={i}SIPpTag00{i}\r\n"
        f"To: service <sip:service@127.0.0.1:5060>;tag={i}SIPpTag01{i}\r\n"
        f"Call-ID: {i}-4242@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        "Contact: <sip:127.0.0.1:5080;transport=UDP>\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def one_call(table: DialogTable, i: int, distinct: bool, now: float, wall: float) -> None:
    port = 10_000 + i % 50_000 if distinct else 5061
    req = parse_message(invite(i, port))
    assert isinstance(req, Request)
    # a fresh address string per call, as msgpack hands the worker one (not a shared constant)
    caller = ("ingress-1", ("udp", "127.0.0.1".join(["", ""]), port, 0, "127.0.0.1", 5060))  # noqa: FLY002
    callee = ("ingress-1", ("udp", "127.0.0.1".join(["", ""]), 5080, 0, "127.0.0.1", 5060))  # noqa: FLY002
    table.invite_forwarded(req, caller=caller, callee=callee, source_ip=req.vias[0].host,
                           source_port=port, destination=f"127.0.0.1:{5080}", now=now,
                           wall=wall, route="default")  # fmt: skip
    for status in (180, 200):
        resp = parse_message(answer(i, port, status))
        assert isinstance(resp, Response)
        table.receive_response(resp, now, wall)
    table.take_deltas()


def clear_codec_caches() -> None:
    for name in dir(grammar):
        obj = getattr(grammar, name)
        if name.endswith("_CACHE") and isinstance(obj, dict):
            obj.clear()


def measure(n: int, distinct: bool, profiles: bool) -> tuple[int, int]:
    defs = [DialogProfile(name="all"),
            DialogProfile(name="caller", with_value=True, value_from="from_user")]
    s = replace(Settings(), dialogs=Dialogs(enabled=True, max_dialogs=2 * n + 10),
                dialog_profile=defs if profiles else [])  # fmt: skip
    table = DialogTable(s, is_us=lambda uri: uri.port == 5060 and uri.host == "127.0.0.1")
    one_call(table, -1, distinct, 0.0, 1.7e9)  # warm lazily built objects
    clear_codec_caches()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        one_call(table, i, distinct, float(i) * 1e-4, 1.7e9 + i * 1e-4)
    clear_codec_caches()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    confirmed = sum(d.state is State.CONFIRMED for d in table._table.values())
    assert confirmed == n + 1, confirmed
    return held, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dialogs", type=int, default=100_000)
    ap.add_argument("--distinct", action="store_true", help="a source port per caller")
    ap.add_argument("--profiles", action="store_true", help="two profiles per dialog")
    a = ap.parse_args()
    held, n = measure(a.dialogs, a.distinct, a.profiles)
    print(f"dialogs={n} distinct_sources={a.distinct} profiles={a.profiles}")
    print(f"held_bytes={held} bytes_per_dialog={held / n:.0f} (target <= 1024)")


if __name__ == "__main__":
    main()
