"""A flood of bad packets at a real node: bounded cost, bounded log, calls still complete.

Two identical rounds of malformed, oversize, many-header and folded packets (UDP and TCP)
from one source. The node must stay up, log the refusals as a few ``rejected`` summary lines
(never one line per packet), keep the ingress's memory flat from one round to the next, and
then carry a sipp run with no failed call.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from ingress.sip.parser import MAX_HEADER_FIELDS

from .conftest import StartNode
from .node import LOCALHOST, Proc, sipp_uac

pytestmark = pytest.mark.e2e

INTERVAL_S = 1.0


def request(branch: str, *, rline: str = "OPTIONS sip:bob@127.0.0.1 SIP/2.0",
            call_id: bool = True, from_: bool = True, extra: bytes = b"") -> bytes:  # fmt: skip
    return (f"{rline}\r\nVia: SIP/2.0/UDP {LOCALHOST}:9;branch={branch}\r\n".encode()
            + (b"From: <sip:a@127.0.0.1>;tag=1\r\n" if from_ else b"")
            + b"To: <sip:bob@127.0.0.1>\r\n"
            + (f"Call-ID: {uuid.uuid4().hex}\r\n".encode() if call_id else b"")
            + b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n" + extra
            + b"Content-Length: 0\r\n\r\n")  # fmt: skip


def broken_rline(branch: str) -> bytes:
    """Refused by the ingress scan: 400."""
    return request(branch, rline="OPTIONS  sip:bob@127.0.0.1 SIP/2.0")


# (name, packet maker, how many per round, refused by: "ingress" / "worker")
UDP_KINDS: list[tuple[str, Any, int, str]] = [
    ("garbage", lambda b: bytes(range(1, 201)), 200, "ingress"),
    ("broken_request_line", broken_rline, 100, "ingress"),
    ("too_many_fields", lambda b: request(b, extra=b"X-A: 1\r\n" * 8000), 40, "ingress"),
    ("folded_64k", lambda b: request(b, call_id=False,
                                     extra=b"Subject: a\r\n" + b" b\r\n" * 15_800), 40, "ingress"),
    ("response_over_cap", lambda b: b"SIP/2.0 200 OK\r\n" + request(b, extra=b"X-A: 1\r\n" * (
        MAX_HEADER_FIELDS + 1)).split(b"\r\n", 1)[1], 40, "ingress"),
    ("no_from", lambda b: request(b, from_=False), 100, "worker"),
]  # fmt: skip


class Flood:
    """One UDP source and its TCP connections; markers tell when the ingress caught up."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((LOCALHOST, 0))
        self.sock.settimeout(5.0)
        self.sent = 0
        self.refused = {"ingress": 0, "worker": 0}

    def caught_up(self) -> None:
        """A marker the ingress answers 400, sent after everything else from this socket."""
        branch = f"z9hG4bK-mark{uuid.uuid4().hex}"
        self.sock.sendto(broken_rline(branch), (LOCALHOST, self.port))
        self.refused["ingress"] += 1
        while branch.encode() not in self.sock.recv(65535):
            pass  # other answers (the 400s of the flood): each recv is bounded by the timeout

    def udp_round(self) -> None:
        for _, make, count, by in UDP_KINDS:
            for i in range(count):
                self.sock.sendto(make(f"z9hG4bK-{uuid.uuid4().hex}"), (LOCALHOST, self.port))
                self.sent += 1
                self.refused[by] += 1
                if i % 20 == 19:  # at most 20 datagrams (1.3 MB) in flight: the kernel drops none
                    self.caught_up()
            self.caught_up()

    def tcp_round(self) -> None:
        oversize = request("z9hG4bK-o", extra=b"X-Pad: " + b"a" * 20_000 + b"\r\n")
        # 513 then close; no Content-Length (and nothing to answer with): closed unanswered
        for data, status in [(oversize, b"SIP/2.0 513 "), (b"hello\r\n\r\n", None)] * 20:
            with socket.create_connection((LOCALHOST, self.port), timeout=5.0) as s:
                s.sendall(data)
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert answer.startswith(status) if status else answer == b"", answer[:80]
            self.sent += 1
            self.refused["ingress"] += 2  # the message, and the connection it closed
        with socket.create_connection((LOCALHOST, self.port), timeout=5.0) as s:
            for i in range(20):  # framed but refused: answered, the connection stays
                s.sendall(broken_rline(f"z9hG4bK-t{i}"))
                self.sent += 1
                self.refused["ingress"] += 1
                assert s.recv(65536).startswith(b"SIP/2.0 400 ")
        # that connection was closed by us: nothing refused it


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def rejected_totals(proc: Proc) -> dict[str, int]:
    """Refusals since start per stage, from each process's latest load_stats."""
    latest: dict[str, dict[str, int]] = {}
    for e in proc.events("load_stats"):
        if isinstance(r := e.get("rejected"), dict):
            latest[str(e["proc"])] = r
    out = {"ingress": 0, "worker": 0}
    for name, r in latest.items():
        out[name.split(".")[0]] += sum(r.values())
    return out


def wait_totals(proc: Proc, want: dict[str, int], deadline_s: float = 10.0) -> dict[str, int]:
    end = time.monotonic() + deadline_s
    while (got := rejected_totals(proc)) != want and time.monotonic() < end:
        time.sleep(0.1)  # polling step for the next load_stats, bounded by the deadline
    return got


def test_flood_of_bad_packets(start_node: StartNode, uas: Any, tmp_path: Path) -> None:
    """Two rounds of ~1 000 bad packets (UDP and TCP): the node stays up, logs a handful of
    ``rejected`` lines and no line per packet, the ingress's RSS does not grow in the second
    round, and 200 sipp calls then complete with 0 failed."""
    uas_port, _ = uas("u1")
    node = start_node(uas_port, "worker=2", log_extra=f"rejected_interval_s = {INTERVAL_S}")
    ingress = node.pid("ingress.1")
    flood = Flood(node.port)
    rss = []
    for _ in range(2):
        flood.udp_round()
        flood.tcp_round()
        rss.append(rss_kb(ingress))
    flood.sock.close()
    assert node.proc.popen.poll() is None, node.proc.text()[-3000:]
    assert not [ln for ln in node.proc.lines if " stopped (rc=" in ln]
    # memory: the second round (same packets) must not take more than the first left behind
    assert rss[1] - rss[0] < 4096, f"ingress RSS grew {rss[1] - rss[0]} KB in round 2: {rss}"

    # every refusal counted in load_stats, by the process that refused it
    assert wait_totals(node.proc, flood.refused) == flood.refused
    # and summarised: a line per process and interval that saw any, all for our one source
    # a busy box can spread the flood over several intervals: wait until the summaries name
    # every kind of refusal the flood made, from both stages that refuse, not for a count of lines
    expected = {"bad_request", "too_many_headers", "message_too_large", "tcp_framing_error"}
    stages = {"ingress", "worker"}
    end = time.monotonic() + 3 * INTERVAL_S + 5
    while True:
        lines = node.proc.events("rejected")
        reasons: dict[str, int] = {}
        for e in lines:
            for k, v in e["reasons"].items():  # type: ignore[attr-defined]
                reasons[k] = reasons.get(k, 0) + v
        seen = {str(e["proc"]).split(".")[0] for e in lines}
        if (expected <= set(reasons) and stages <= seen) or time.monotonic() > end:
            break
        time.sleep(0.1)  # polling step, bounded by the deadline
    assert expected <= set(reasons), reasons
    assert {e["src"] for e in lines} == {LOCALHOST}
    assert seen >= stages, seen
    assert len(lines) * 50 < flood.sent, f"{len(lines)} rejected lines for {flood.sent} packets"
    per_packet = [e for name in ("message_rejected", "tcp_closed", "tcp_refused")
                  for e in node.proc.events(name)]  # fmt: skip
    assert per_packet == [], per_packet[:3]

    # and the node still carries calls
    result = sipp_uac(node.port, "u1", 200, 100, tmp_path, timeout_s=60)
    assert (result.successful, result.failed) == (200, 0), result.output


def test_sources_past_the_table_share_one_line(start_node: StartNode) -> None:
    """Bad packets from 300 loopback addresses in one interval: 256 per-source lines and one
    ``others`` line from the ingress, whose counts add up to the 300 packets."""
    node = start_node(9, "worker=1", log_extra="rejected_interval_s = 60")
    for i in range(300):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
            s.settimeout(5.0)
            s.sendto(broken_rline(f"z9hG4bK-s{i}"), (LOCALHOST, node.port))
            assert s.recv(65535).startswith(b"SIP/2.0 400 ")
    node.stop()  # the ingress logs what its last interval counted as it stops
    lines = [e for e in node.proc.events("rejected") if str(e["proc"]).startswith("ingress")]
    others = [e for e in lines if e["src"] == "others"]
    assert len(lines) == 257 and len(others) == 1, len(lines)
    assert sum(int(str(e["count"])) for e in lines) == 300
    assert others[0]["count"] == 300 - 256
