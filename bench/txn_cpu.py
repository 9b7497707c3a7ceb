"""CPU per call in the transaction table alone, from the INVITE to the end of the last timer.

Usage (repo root):  .venv/bin/python bench/txn_cpu.py [--calls 40000] [--rate 3000] [--repeats 3]

Method. The calls of bench/txn_memory.py (INVITE with SDP, 180, 200 relayed, the pair held
as the stateful proxy does, then BYE/200 through a server and a client transaction; or
INVITE/486 with the hop-by-hop ACK), ``--rate`` calls per simulated second, fed to one
``TransactionTable`` with their messages parsed beforehand (the codec is not counted). The
loop fires the table's timers as a worker does (``handle_timer`` whenever ``next_deadline``
is due before the next call), events are drained and dropped, and after the last call time
runs on until every timer has fired. CPU is ``time.process_time`` around all of that, per
call, the minimum over ``--repeats`` runs (a noisy box only adds time). Only APIs both
before and after the held entries (workers/txn/held.py) have, so the script runs against
either tree: ``PYTHONPATH=<other checkout> python -P bench/txn_cpu.py``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any

if not sys.flags.safe_path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingress.sip.message import Request, Response
from ingress.sip.parser import parse_message
from ingress.sip.serialize import build_response
from workers.transactions import ServerTransaction, TransactionTable

SDP = (
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def request(i: int, method: str = "INVITE", cseq: int = 1, branch: str = "") -> bytes:
    body = SDP if method == "INVITE" else b""
    top = f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n" if branch else ""
    return (
        f"{method} sip:service@127.0.0.1:5080 SIP/2.0\r\n{top}"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{i}-{cseq};rport\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5070>;tag=1{i}\r\n"
        "To: service <sip:service@127.0.0.1:5080>"
        + (f";tag=2{i}" if method != "INVITE" else "")
        + f"\r\nCall-ID: {i}-4242@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@127.0.0.1:5070\r\nMax-Forwards: 70\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def req(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def resp(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def messages(i: int, status: int) -> dict[str, Any]:
    """One call's messages, parsed: what the table is fed (and the bytes the TU relays)."""
    up = req(request(i))
    fwd = request(i, branch=f"z9hG4bK-fw{i}")
    fwd_req = req(fwd)
    m: dict[str, Any] = {"up": up, "fwd": fwd, "branch": f"z9hG4bK-fw{i}"}
    m["down"] = [(resp(build_response(fwd_req, code, "X", to_tag=f"2{i}")),
                  build_response(up, code, "X", to_tag=f"2{i}")) for code in (180, status)]  # fmt: skip
    if status == 200:
        bye_up = req(request(i, "BYE", 2))
        bye_fwd = request(i, "BYE", 2, branch=f"z9hG4bK-fwb{i}")
        m.update(bye_up=bye_up, bye_fwd=bye_fwd, bye_branch=f"z9hG4bK-fwb{i}",
                 bye_ok=resp(build_response(req(bye_fwd), 200, "OK")),
                 bye_relay=build_response(bye_up, 200, "OK"))  # fmt: skip
    else:
        m["ack"] = req(request(i, "ACK", 1))
    return m


def one_call(t: TransactionTable, m: dict[str, Any], now: float, status: int) -> None:
    st = t.receive_request(m["up"], reliable=False, now=now)
    assert isinstance(st, ServerTransaction)
    ct = t.send_request(m["fwd"], branch=m["branch"], method="INVITE", reliable=False, now=now)
    for (r, relay), code in zip(m["down"], (180, status)):
        t.receive_response(r, now)
        t.respond(st, relay, code, now)
    if status == 200:
        t.hold(st, ct)  # as the stateful proxy does (workers/stateful.py rule 9)
        sb = t.receive_request(m["bye_up"], reliable=False, now=now)
        assert isinstance(sb, ServerTransaction)
        t.send_request(m["bye_fwd"], branch=m["bye_branch"], method="BYE", reliable=False,
                       now=now)  # fmt: skip
        t.receive_response(m["bye_ok"], now)
        t.respond(sb, m["bye_relay"], 200, now)
    else:
        t.receive_request(m["ack"], reliable=False, now=now)
    drain(t)


def drain(t: TransactionTable) -> None:
    """Take and drop the table's events, as a worker would act on them."""
    while t.next_event() is not None:
        pass


def fire_due(t: TransactionTable, until: float | None) -> None:
    """Fire every timer due by ``until`` (every timer left, with None), earliest first."""
    while (d := t.next_deadline()) is not None and (until is None or d <= until):
        t.handle_timer(d)
        drain(t)


def run(calls: int, rate: float, status: int) -> float:
    """CPU µs per call, the whole life of every transaction."""
    kw: dict[str, Any] = {"max_transactions": 8 * calls}
    try:  # the held entries' own bound, where the tree has them
        t = TransactionTable(**kw, max_held=8 * calls, max_held_bytes=2**40)
    except TypeError:
        t = TransactionTable(**kw)
    msgs = [messages(i, status) for i in range(calls)]
    gc.collect()
    start = time.process_time()
    for i, m in enumerate(msgs):
        now = i / rate
        fire_due(t, now)
        one_call(t, m, now, status)
    fire_due(t, None)
    spent = time.process_time() - start
    assert len(t) == 0
    return spent / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=40_000)
    ap.add_argument("--rate", type=float, default=3000.0, help="calls per simulated second")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import workers.txn.table as table_mod

    compiled = not table_mod.__file__ or not table_mod.__file__.endswith(".py")
    print(f"{args.calls} calls at {args.rate:.0f}/s simulated, min of {args.repeats}, "
          f"{'compiled' if compiled else 'pure Python'} ({table_mod.__file__})")  # fmt: skip
    for status in (200, 486):
        best = min(run(args.calls, args.rate, status) for _ in range(args.repeats))
        mix = "INVITE 200 + BYE" if status == 200 else "INVITE 486 + ACK"
        print(f"  {mix:17s} {best:6.1f} µs per call (transaction table, whole hold)")


if __name__ == "__main__":
    main()
