"""Bytes the transaction layer holds per held (finished) and per live transaction (tracemalloc).

Usage (repo root):  SIPLINE_PURE=1 .venv/bin/python bench/txn_memory.py [--calls 20000] [--tcp]

Method. For each call a stateful proxy's transaction table sees what sipp's uac/uas send:
INVITE (with SDP) from upstream -> server transaction (100 Trying at once) -> client
transaction for the forwarded INVITE -> 180 and 200 (with SDP) from downstream, relayed through
the server transaction; then ACK for the 2xx (its own branch: not a transaction) and BYE -> 200
through a non-INVITE server + client pair. A second mix answers 486 instead: hop-by-hop ACK
downstream, ACK absorbed upstream. Events are drained and dropped as the TU would once acted on.

After the last call every transaction is "finished" (final response sent/received): the
answered INVITE's pair is folded by ``hold`` as the stateful proxy does, and the table has
swapped every other one for a held entry (workers/txn/held.py): Completed (J = 32 s, D = 32 s,
K = T4 = 5 s) or Confirmed (I = T4). tracemalloc's current size is compared with a baseline
taken before the run; the codec's parse caches (bounded, not the transaction layer's) are
cleared before both readings. The last lines give the calls/s per worker the default
``max_held`` sustains for the whole hold, and the worst case per worker: every live
transaction in flight plus a full held store.

Kamailio's tm figure to compare with: ~16-20 KB per finished transaction held ~5 s
(``wt_timer``), ~200 KB per call/s. The last lines convert ours into bytes per call/s, both at
our real hold times (RFC timers) and at Kamailio's 5 s.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingress.sip import grammar
from ingress.sip.message import Request
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from workers.transactions import HeldPair, ServerTransaction, TransactionTable
from workers.txn.table import DEFAULT_MAX_HELD, DEFAULT_MAX_HELD_BYTES, DEFAULT_MAX_TRANSACTIONS

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(
    i: int,
    method: str = "INVITE",
    cseq: int = 1,
    via: str = "",
    branch: str = "",
    to_tag: bool = False,
) -> bytes:
    """A sipp uac request (``-sn uac``), optionally with our Via on top (forwarded copy)."""
    body = SDP if method == "INVITE" else b""
    top = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n" if via else ""
    return (
        f"{method} sip:service@127.0.0.1:5080 SIP/2.0\r\n{top}"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{i}-{cseq};rport\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5070>;tag=1{i}\r\n"
        "To: service <sip:service@127.0.0.1:5080>"
        + (f";tag=2{i}" if method == "BYE" or to_tag else "")
        + f"\r\nCall-ID: {i}-4242@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@127.0.0.1:5070\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def parse_req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def one_call(table: TransactionTable, i: int, now: float, status: int, bye: bool = True) -> None:
    up = parse_req(invite(i))
    st = table.receive_request(up, reliable=table_reliable, now=now)
    assert st is not None
    branch = f"z9hG4bK-fw{i}"
    fwd = invite(i, via="x", branch=branch)
    ct = table.send_request(fwd, branch=branch, method="INVITE", reliable=table_reliable,
                            now=now, context=st)  # fmt: skip
    fwd_req = parse_req(fwd)
    for code in (180, status):
        resp = parse_message(build_response(fwd_req, code, "X", to_tag=f"2{i}"))
        table.receive_response(resp, now)  # type: ignore[arg-type]
        relayed = build_response(up, code, "X", to_tag=f"2{i}") + (SDP if code == 200 else b"")
        table.respond(st, relayed, code, now)
    if status == 200:
        assert isinstance(st, ServerTransaction)
        assert table.hold(st, ct) is not None  # as the stateful proxy does (its rule 9)
    if status == 200 and bye:
        bye_up = parse_req(invite(i, "BYE", 2))
        sb = table.receive_request(bye_up, reliable=table_reliable, now=now)
        assert sb is not None
        b2 = f"z9hG4bK-fwb{i}"
        bye_fwd = invite(i, "BYE", 2, via="x", branch=b2)
        table.send_request(bye_fwd, branch=b2, method="BYE", reliable=table_reliable, now=now)
        table.receive_response(parse_message(build_response(parse_req(bye_fwd), 200, "OK")), now)  # type: ignore[arg-type]
        table.respond(sb, build_response(bye_up, 200, "OK"), 200, now)
    elif status != 200:
        ack = parse_req(invite(i, "ACK", 1, to_tag=True))  # same branch: the non-2xx ACK
        table.receive_request(ack, reliable=table_reliable, now=now)
    while table.next_event() is not None:
        pass


def in_flight(table: TransactionTable, i: int, now: float) -> None:
    """A call still ringing: INVITE server in Proceeding, client INVITE in Calling (UDP)."""
    up = parse_req(invite(i))
    table.receive_request(up, reliable=table_reliable, now=now)
    branch = f"z9hG4bK-fw{i}"
    fwd = invite(i, via="x", branch=branch)
    table.send_request(fwd, branch=branch, method="INVITE", reliable=table_reliable, now=now)
    while table.next_event() is not None:
        pass


def clear_codec_caches() -> None:
    for name in dir(grammar):
        obj = getattr(grammar, name)
        if name.endswith("_CACHE") and isinstance(obj, dict):
            obj.clear()


def measure(calls: int, status: int, bye: bool = True) -> tuple[int, int, Counter[str], float, int]:
    """Returns (bytes held, transactions or entries held, kinds, mean remaining hold time in s,
    bytes the held entries keep to re-send).

    ``status`` 0 leaves every call in flight (no answer yet) instead.
    """
    table = TransactionTable(max_transactions=8 * calls, max_held=8 * calls,
                             max_held_bytes=2**40)  # fmt: skip
    one_call(table, -1, 0.0, 200)  # warm lazily built objects outside the measurement
    while table.next_deadline() is not None:
        table.handle_timer(1e9)
    clear_codec_caches()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i in range(calls):
        if status:
            one_call(table, i, 1.0, status, bye)
        else:
            in_flight(table, i, 1.0)
    clear_codec_caches()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert table.held.evicted == 0
    seen = {id(t): t for t in (*table._clients.values(), *table._servers.values())}
    txns = list(seen.values())
    states = Counter(("INVITE pair:Accepted" if isinstance(t, HeldPair)
                      else f"{t.kind.split(' transaction')[0]}:{t.state.value}")
                     for t in txns)  # fmt: skip
    holds = [(t.until if hasattr(t, "until") else t.next_deadline() or 1.0) - 1.0 for t in txns]
    return (held, len(txns), states, (sum(holds) / len(holds) if holds else 0.0),
            table.held.bytes)  # fmt: skip


def main() -> None:
    global table_reliable
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--tcp", action="store_true", help="reliable transport (no wait states)")
    args = ap.parse_args()
    table_reliable = args.tcp
    from ingress.sip import serialize

    if not serialize.__file__ or serialize.__file__.endswith(".so"):
        print("warning: compiled build: with mypyc 1.20.2 every bytes + bytes in a compiled "
              "module leaks its left operand (mypyc/mypyc#1192), this script's own "
              "build_response calls too; run with SIPLINE_PURE=1 for the table's figures")  # fmt: skip
    print(f"transport {'TCP' if args.tcp else 'UDP'}, {args.calls} calls per mix, Python "
          f"{sys.version.split()[0]}")  # fmt: skip
    per_entry = 0.0  # bytes per held entry beyond what it re-sends, the largest mix's
    in_flight_txn = 0.0
    rates = []
    for status, bye in ((200, True), (486, True), (200, False), (0, True)):
        held, n, states, hold, resend = measure(args.calls, status, bye)
        if not status:
            in_flight_txn = held / max(n, 1)
            print(
                "\nin flight: INVITE not answered yet (server Proceeding holds the parsed request)"
            )
            print(
                f"  bytes per call         {held / args.calls:.0f} ({in_flight_txn:.0f} per live txn)"
            )
            continue
        if not n:
            print(f"\nmix: INVITE answered {status}: every transaction ended at once (reliable)")
            print(f"  bytes held             {held} (table structures only)")
            continue
        per_call = held / args.calls
        per_entry = max(per_entry, (held - resend) / n)
        # entries per call/s: each held for its own time, so the store's count is n/calls * hold
        entries_per_cps = n / args.calls * hold
        rates.append(DEFAULT_MAX_HELD / entries_per_cps)
        if status == 200 and not bye:  # the largest entry: what the worst case counts
            print(f"\nthe answered INVITE's pair alone: {held / n:.0f} bytes per entry")
            per_entry = max(per_entry, held / n)
            continue
        print(f"\nmix: INVITE answered {status}" + (" + BYE" if status == 200 else ""))
        print(
            f"  held entries           {n} ({', '.join(f'{k} {v}' for k, v in sorted(states.items()))})"
        )
        print(f"  bytes held             {held} ({resend} of them to re-send)")
        print(
            f"  bytes per held entry   {held / n:.0f} ({(held - resend) / n:.0f} without the bytes to re-send)"
        )
        print(f"  bytes per call         {per_call:.0f}")
        print(
            f"  mean hold (RFC timers) {hold:.1f} s -> {entries_per_cps:.0f} entries, "
            f"{per_call * hold / 1024:.1f} KB per call/s"
        )
        print(
            f"  default max_held ({DEFAULT_MAX_HELD}) sustains {rates[-1]:.0f} calls/s for the whole hold"
        )
    live_mb = in_flight_txn * DEFAULT_MAX_TRANSACTIONS / 2**20
    held_mb = (per_entry * DEFAULT_MAX_HELD + DEFAULT_MAX_HELD_BYTES) / 2**20
    print("\nworst case per worker (defaults)")
    print(
        f"  live: max_transactions {DEFAULT_MAX_TRANSACTIONS} x {in_flight_txn:.0f} B in flight = {live_mb:.0f} MB"
    )
    print(f"  held: max_held {DEFAULT_MAX_HELD} x {per_entry:.0f} B + max_held_bytes "
          f"{DEFAULT_MAX_HELD_BYTES // 2**20} MB = {held_mb:.0f} MB")  # fmt: skip
    print(f"  total {live_mb + held_mb:.0f} MB")


table_reliable = False

if __name__ == "__main__":
    main()
