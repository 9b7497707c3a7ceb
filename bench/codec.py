"""Time the SIP codec, the ingress's scan and the stateless proxy core on sipp's INVITE
(no sockets).

    python bench/codec.py                # minimum of 3 x 20 000 calls each
    python bench/codec.py --distinct     # every INVITE with its own branch, tag and Call-ID
    python bench/codec.py --call         # a sipp call's six messages as the worker sees them

CPU time (``time.process_time``) per call, the minimum of 3 runs.
"""

from __future__ import annotations

import argparse
import time
import timeit
from pathlib import Path

from conf.load import load
from ingress.sip.parser import parse_message
from ingress.sip.scan import scan_message
from workers.proxy import Inbound, StatelessProxy
from workers.routing.table import RoutingTable

INVITE = (
    b"INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-{n}-0\r\n"
    b"From: sipp <sip:sipp@127.0.0.1:5063>;tag=6655SIPpTag00{n}\r\n"
    b"To: service <sip:service@127.0.0.1:5060>\r\n"
    b"Call-ID: {n}-6655@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: sip:sipp@127.0.0.1:5063\r\n"
    b"Max-Forwards: 70\r\n"
    b"Subject: Performance Test\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length:   129\r\n\r\n"
    b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)

# The other five messages of a sipp call (``-sn uac``/``-sn uas``) as they reach the worker:
# the UAS answers with both Vias on one line, ours on top.
_RESP_VIA = (
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-sl6c8b6546{n:08d}.54655867, "
    b"SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-{n}-0\r\n"
)
_DIALOG = (
    b"From: sipp <sip:sipp@127.0.0.1:5063>;tag=6655SIPpTag00{n}\r\n"
    b"To: service <sip:service@127.0.0.1:5060>;tag=6648SIPpTag01{n}\r\n"
    b"Call-ID: {n}-6655@127.0.0.1\r\n"
)
_SDP = INVITE[INVITE.index(b"\r\n\r\n") + 4 :]
CALL = (
    INVITE,
    b"SIP/2.0 180 Ringing\r\n" + _RESP_VIA + _DIALOG
    + b"CSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5080;transport=UDP>\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n" + _RESP_VIA + _DIALOG
    + b"CSeq: 1 INVITE\r\nContact: <sip:127.0.0.1:5080;transport=UDP>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length:   129\r\n\r\n" + _SDP,
    b"ACK sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-{n}-5\r\n" + _DIALOG
    + b"CSeq: 1 ACK\r\nContact: sip:sipp@127.0.0.1:5063\r\nMax-Forwards: 70\r\n"
    b"Subject: Performance Test\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-6655-{n}-7\r\n" + _DIALOG
    + b"CSeq: 2 BYE\r\nContact: sip:sipp@127.0.0.1:5063\r\nMax-Forwards: 70\r\n"
    b"Subject: Performance Test\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\n" + _RESP_VIA.replace(b"-0\r", b"-7\r") + _DIALOG
    + b"CSeq: 2 BYE\r\nContact: <sip:127.0.0.1:5080;transport=UDP>\r\n"
    b"Content-Length: 0\r\n\r\n",
)


def _messages(n: int, distinct: bool, call: bool) -> list[bytes]:
    if not call:
        return [INVITE.replace(b"{n}", str(i if distinct else 1).encode()) for i in range(n)]
    out = []
    for i in range(n // len(CALL) + 1):
        for m in CALL:
            out.append(m.replace(b"{n:08d}", b"%08d" % i).replace(b"{n}", b"%d" % i))
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--distinct", action="store_true", help="vary branch, tag and Call-ID")
    ap.add_argument("--call", action="store_true", help="a sipp call's 6 messages, distinct calls")
    args = ap.parse_args()
    n = args.count
    msgs = _messages(n, args.distinct, args.call)
    settings = load(Path(__file__).resolve().parents[1] / "conf/sipline.toml")
    proxy = StatelessProxy(settings, RoutingTable(settings))
    inb = Inbound("ingress.1-1", "udp", "127.0.0.1", 5063, 0, "127.0.0.1", 5060)
    it = iter(range(0))

    def parse() -> None:
        parse_message(msgs[next(it)])

    def handle() -> None:
        proxy.handle(msgs[next(it)], inb)

    def scan() -> None:  # what the ingress reads of each message (ingress/udp.py)
        scan_message(msgs[next(it)])

    for name, fn in (("parse_message", parse), ("StatelessProxy.handle", handle),
                     ("scan_message (ingress)", scan)):  # fmt: skip
        best = float("inf")
        for _ in range(3):
            it = iter(range(n))
            # CPU time, not wall time: on a shared box other processes' bursts add wall time
            best = min(best, timeit.timeit(fn, number=n, timer=time.process_time))
        print(f"{name:22s} {best / n * 1e6:7.2f} us CPU (min of 3 x {n})")


if __name__ == "__main__":
    main()
