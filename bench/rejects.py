"""CPU time a real ingress process spends per packet it refuses, by kind of bad packet.

Method: start one ``sipline ingress`` (no worker: every packet here is refused before any
routing, so none is needed) on a free port, logging at INFO to a file as honcho would. For
each kind, send packets from one UDP socket in bursts of at most ~1 MB (well under the 4 MB
receive buffer, so the kernel drops none), each burst followed by a marker request with a
broken request line whose 400 proves the ingress has handled everything before it (loopback
keeps one socket's datagrams in order). A TCP kind opens one connection per packet and waits
for the answer and the close. The ingress's CPU time is read from
``/proc/PID/task/*/schedstat`` (nanoseconds, every thread) before and after; the idle rate
measured first (timers, heartbeats) and the markers' own cost are subtracted. The log's
lines are counted too: refused packets per log line shows the aggregation.

Bounded: each kind stops at ``--seconds`` of sending or ``--max`` packets, whichever first;
every wait has a deadline. Standard library only; Linux only.

    .venv/bin/python bench/rejects.py                   # this tree (the ingress runs on this interpreter)
    .venv/bin/python bench/rejects.py --tree /tmp/old   # another checkout (git archive REV | tar -x)
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _node import HOST, REPO, Group, free_port

BURST_BYTES = 1 << 20


def request(branch: str, *, rline: bytes = b"OPTIONS sip:bob@127.0.0.1 SIP/2.0",
            call_id: bool = True, extra: bytes = b"") -> bytes:  # fmt: skip
    return (rline + b"\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=" + branch.encode() + b"\r\n"
            b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
            + (b"Call-ID: bench-rejects@h\r\n" if call_id else b"")
            + b"CSeq: 1 OPTIONS\r\n" + extra + b"Content-Length: 0\r\n\r\n")  # fmt: skip


def fill(unit: bytes, size: int) -> bytes:
    """``unit`` repeated to make a request of about ``size`` bytes."""
    return unit * ((size - 300) // len(unit))


MARKER_RLINE = b"OPTIONS  sip:bob@127.0.0.1 SIP/2.0"  # two spaces: 400 from the scan


def marker(branch: str) -> bytes:
    return request(branch, rline=MARKER_RLINE)


@dataclass
class Kind:
    name: str
    what: str
    packet: bytes
    transport: str = "udp"
    #: the ingress answers each packet (so the marker is not needed to know it was handled)
    answered: bool = False


KINDS = [
    Kind("garbage", "200 bytes that are no SIP, dropped unanswered",
         bytes(range(32, 232))),
    Kind("malformed_400", "a request with a broken request line, answered 400",
         marker("z9hG4bK-m"), answered=True),
    Kind("too_many_headers_64k", "a 64 KB request of 8-byte fields, answered 400",
         request("z9hG4bK-t", extra=fill(b"X-A: 1\r\n", 64_000))),
    Kind("folded_64k", "a 64 KB request of one-byte folds and no Call-ID, answered 400",
         request("z9hG4bK-f", call_id=False, extra=b"Subject: a\r\n" + fill(b" b\r\n", 64_000))),
    Kind("folded_1000_lines", "1 000 folds of 60 bytes (under the line cap) and no Call-ID, "
         "answered 400", request("z9hG4bK-g", call_id=False,
                                 extra=b"Subject: a\r\n" + (b" " + b"b" * 58 + b"\r\n") * 1000)),
    Kind("oversize_tcp", "a TCP message whose 20 KB header section passes the 16 KB cap: "
         "513, then close (one connection each)",
         request("z9hG4bK-o", extra=b"X-Pad: " + b"a" * 20_000 + b"\r\n"), transport="tcp"),
]  # fmt: skip


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that just ended
    return total


class Client:
    """One UDP socket toward the ingress, and the markers that pace it."""

    def __init__(self, port: int) -> None:
        self.addr = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((HOST, 0))
        self.sock.settimeout(5.0)
        self.markers = 0

    def wait_for(self, token: bytes, count: int = 1) -> None:
        """Read answers until ``count`` of them carry ``token`` (5 s per answer at most)."""
        seen = 0
        while seen < count:
            if token in self.sock.recv(65535):
                seen += 1

    def burst(self, packet: bytes, n: int, answered: bool) -> None:
        for _ in range(n):
            self.sock.sendto(packet, self.addr)
        if answered:
            self.wait_for(packet[packet.index(b"branch=") : packet.index(b"\r\n", 40)], n)
            return
        branch = f"z9hG4bK-mk{uuid.uuid4().hex}"
        self.sock.sendto(marker(branch), self.addr)
        self.markers += 1
        self.wait_for(branch.encode())


def tcp_one(port: int, packet: bytes) -> None:
    with socket.create_connection((HOST, port), timeout=5.0) as s:
        s.sendall(packet)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        if not answer.startswith(b"SIP/2.0 513 "):
            raise SystemExit(f"oversize_tcp: unexpected answer {answer[:60]!r}")


def run_kind(kind: Kind, pid: int, port: int, seconds: float, max_n: int) -> tuple[int, int, int]:
    """(packets, markers, ns of ingress CPU) for one kind."""
    client = Client(port)
    per_burst = max(1, min(500, BURST_BYTES // len(kind.packet)))
    sent = 0
    t0, c0 = time.monotonic(), cpu_ns(pid)
    while sent < max_n and time.monotonic() - t0 < seconds:
        if kind.transport == "tcp":
            tcp_one(port, kind.packet)
            sent += 1
            continue
        n = min(per_burst, max_n - sent)
        client.burst(kind.packet, n, kind.answered)
        sent += n
    used = cpu_ns(pid) - c0
    elapsed = time.monotonic() - t0
    client.sock.close()
    return sent, client.markers, used - int(IDLE_NS_PER_S * elapsed)


IDLE_NS_PER_S = 0.0


def start_ingress(group: Group, tree: Path, workdir: Path, log: Path) -> tuple[int, int]:
    port = free_port(socket.SOCK_DGRAM)
    conf = workdir / "rejects.toml"
    conf.write_text(f"""
[node]
name = "bench-rejects"
run_dir = "{workdir / 'run'}"

[[listen]]
transport = "udp"
address = "{HOST}"
port = {port}

[[listen]]
transport = "tcp"
address = "{HOST}"
port = {port}

[log]
level = "info"
stats_interval_s = 5.0
""")
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    env.pop("HONCHO_PROCESS_NAME", None)
    run = "import sys; from sipline.cli import main; sys.exit(main(sys.argv[1:]))"
    p = group.start([sys.executable, "-c", run, "ingress", "--conf", str(conf)],
                    cwd=tree, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    end = time.monotonic() + 20
    while "ingress_listening" not in log.read_text():
        if p.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"the ingress did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)  # polling step, bounded by the deadline
    return p.pid, port


def count_lines(log: Path, event: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if f'"event": "{event}"' in line)


def main() -> None:
    global IDLE_NS_PER_S
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=Path, default=REPO, help="the sipline tree to run")
    ap.add_argument("--seconds", type=float, default=3.0, help="sending time per kind")
    ap.add_argument("--max", type=int, default=20_000, help="packets per kind at most")
    ap.add_argument("--only", action="append", help="run only these kinds")
    args = ap.parse_args()
    group = Group()
    with tempfile.TemporaryDirectory(prefix="bench-rejects-") as tmp:
        log = Path(tmp) / "ingress.log"
        try:
            pid, port = start_ingress(group, args.tree.resolve(), Path(tmp), log)
            c0, t0 = cpu_ns(pid), time.monotonic()
            time.sleep(2.0)  # measuring the idle rate is the point of this wait
            IDLE_NS_PER_S = (cpu_ns(pid) - c0) / (time.monotonic() - t0)
            print(f"tree {args.tree}  ingress pid {pid}  idle {IDLE_NS_PER_S / 1e6:.2f} ms CPU/s")
            print(f"{'kind':22s} {'packets':>8s} {'µs CPU/packet':>14s}  what")
            marker_ns = 0.0
            for kind in KINDS:
                if args.only and kind.name not in args.only:
                    continue
                n, markers, used = run_kind(kind, pid, port, args.seconds, args.max)
                if kind.name == "malformed_400":
                    marker_ns = used / n
                used -= int(markers * marker_ns)
                print(f"{kind.name:22s} {n:8d} {used / n / 1000:14.1f}  {kind.what}")
            time.sleep(0.1)
            group.stop_all()
            lines = {e: count_lines(log, e) for e in ("message_rejected", "tcp_closed", "rejected")}
            print(f"log lines: {lines}")
        finally:
            group.stop_all()

if __name__ == "__main__":
    main()
