#!/usr/bin/env python3
"""Calls per second through a SIP proxy, measured with sipp.

Method
------
One run measures one or more target proxies in turn (presets such as ``kamailio-stateless``
or any shell command, e.g. ``honcho -f Procfile start -c worker=2`` for sipline) at a list of
call rates, and compares their best rates:

    sipp UAC --> 127.0.0.1:5060 (target proxy) --> 127.0.0.1:5080 sipp UAS

1. The target starts in its own session and process group. It is ready when it answers a SIP
   OPTIONS sent to 127.0.0.1:5060 with ``Max-Forwards: 0`` (RFC 3261 §16.3 step 3: a proxy
   answers such a request itself, 483 or 200), polled until a deadline. The probe therefore
   never reaches, and never disturbs, the UAS.
2. Each step starts a fresh sipp UAS (``-sn uas``), waits until port 5080 is bound (read from
   ``/proc/net/udp`` or ``/proc/net/tcp``, so nothing else touches the port), then runs the
   sipp UAC (``-sn uac``, no hold time) at ``rate`` for ``rate * duration`` calls. The UAS is
   per step because sipp's built-in UAS ends each call with a 4 s pause: the harness waits
   until the UAS's stat file shows no open call, then stops it (SIGTERM, on which sipp writes
   its final row), which gives exact per-step UAS counters. (SIGUSR1 does not drain: sipp
   exits with the paused calls still open.)
3. Bounds: the UAC stops placing calls after ``duration + margin`` s (``-timeout``), each call
   waits at most ``--recv-timeout`` ms for an expected message (``-recv_timeout``), and the
   harness kills sipp if it is still alive ``--kill-after`` s later. The run stops placing
   steps once ``--budget`` s have passed.
4. Counting (the step verdict): ``failed %`` is the larger of
   - UAC: ``(planned - successful) / planned``: sipp's failed calls, calls still open at exit
     and calls never placed (sipp fell behind) all count as failed;
   - UAS: ``(failed + still open) / created``: e.g. a BYE overtaking its ACK through a
     multi-process proxy is an unexpected message at the UAS although the UAC sees success.
   A step passes with ``failed % < 1`` and an effective rate (calls placed / time until the
   last call was placed, from sipp's once-a-second stat rows) of at least 95 % of the asked
   rate. Retransmissions, unexpected, out-of-call and dead-call messages, the kernel's UDP
   receive-buffer errors (``/proc/net/snmp``) and each socket's drops (``/proc/net/udp``:
   proxy, UAS or UAC) are reported beside the verdict: they show loss before it becomes
   failure, and where it happens.
   sipp's built-in scenarios are strict: a 180 arriving after its 200, or a BYE reaching
   the UAS before its ACK (a multi-process proxy reorders them: sipp sends them microseconds
   apart), aborts the call as an "unexpected message". ``--ignore-unexpected`` passes
   ``-default_behaviors all,-abortunexp`` so such messages are ignored (sipp counts them as
   warnings) and calls fail only on timeouts, retransmission limits and errors.
5. CPU: while the UAC runs, every process of the target's tree and both sipp processes are
   sampled from ``/proc/PID/stat`` (utime + stime, all threads); the delta over the UAC's
   wall time is reported as % of one core. The UAC is sampled once more as a zombie (waitid
   WNOWAIT) so its last ticks are not lost. Processes are named from honcho's
   ``HONCHO_PROCESS_NAME``, from the preset's process list (``kamcmd ps``) and from the
   cmdline. The harness's own CPU, the machine's busy % (from /proc/uptime's idle time) and
   the CPU of processes not measured here (other users of a shared box) are reported too,
   so a saturated sipp or harness, or a noisy neighbour, is visible (sipp at >= 90 % of a
   core is flagged).

Every process this script starts is stopped at the end, also on Ctrl-C, SIGTERM or errors:
SIGTERM to its process group, SIGKILL to whatever of its tree is left after a grace period.
Standard library only; Linux only (/proc).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

PROXY_HOST = "127.0.0.1"
PROXY_PORT = 5060
UAS_PORT = 5080
# sipp's 64 KB default socket buffer causes retransmissions from ~6 000 calls/s
# (docs/design.md §1).
SIPP_BUFF_SIZE = 4194304
FAIL_LIMIT_PCT = 1.0
MIN_RATE_FRACTION = 0.95  # a step whose sipp placed calls slower than this did not run at rate
SIPP_SATURATED_PCT = 90.0
SAMPLE_INTERVAL_S = 0.25
UAS_PAUSE_S = 4.0  # the built-in UAS pauses 4 s after each call's BYE/200
STOP_GRACE_S = 5.0  # honcho's own KILL_WAIT
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parents[1]
#: the Kamailio configs this benchmark compares with (a copy of the peers the project was
#: given, so a checkout runs the comparison on its own)
DEFAULT_PEERS = REPO_ROOT / "bench" / "peers"


class Interrupted(Exception):
    """SIGINT/SIGTERM/SIGHUP arrived: unwind so every started process is stopped."""


class HarnessError(Exception):
    """A step cannot be measured (sipp did not start, a port is someone else's)."""


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """A proxy to measure: how to start it, and how to name its processes."""

    name: str
    command: str  # run in its own process group
    cwd: Path
    shell: bool = True  # by /bin/sh -c; presets run their argv directly (no shell in the tree)
    run_dirs: tuple[Path, ...] = ()  # created before start
    ps_command: tuple[str, ...] = ()  # prints "pid<TAB>description" lines
    transports: tuple[str, ...] = ("udp", "tcp")


KAMAILIO_RUN_DIR = Path("/tmp/kamailio-peer")


def kamailio_preset(name: str, peers: Path) -> Target:
    """Kamailio 5.6 with a peers/ config, as peers/README.md starts it."""
    cfg = peers / f"{name}.cfg"
    if not cfg.is_file():
        raise SystemExit(f"cps: preset {name}: {cfg} not found (use --peers DIR)")
    argv = ["kamailio", "-f", str(cfg), "-DD", "-E", "-n", "2", "-m", "512",
            "-Y", str(KAMAILIO_RUN_DIR)]
    ctl = f"unix:{KAMAILIO_RUN_DIR}/kamailio_ctl"
    return Target(name=name, command=shlex.join(argv), shell=False, cwd=REPO_ROOT,
                  run_dirs=(KAMAILIO_RUN_DIR,), ps_command=("kamcmd", "-s", ctl, "ps"),
                  transports=("udp",))  # both configs set disable_tcp=yes


PRESETS = ("kamailio-stateless", "kamailio-stateful")


def resolve_targets(args: argparse.Namespace) -> list[Target]:
    """The --target presets, then the --target-cmd commands, in the order given."""
    peers = args.shared / "peers" if args.shared is not None else args.peers
    targets = [kamailio_preset(name, peers) for name in args.target or ()]
    if args.extra_args:
        targets = [replace(t, name=f"{t.name} {args.extra_args}",
                           command=f"{t.command} {args.extra_args}") for t in targets]
    names = args.name or []
    for i, command in enumerate(args.target_cmd or ()):
        name = names[i] if i < len(names) else f"custom-{i + 1}"
        targets.append(Target(name=name, command=command, cwd=args.cwd))
    for target in targets:
        if args.transport not in target.transports:
            raise SystemExit(f"cps: {target.name} supports {', '.join(target.transports)} only")
    return targets


# --------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat this script uses."""

    pid: int
    ppid: int
    state: str
    ticks: int  # utime + stime, all threads
    start: int  # starttime: tells a reused pid from the original


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/PID/stat; None if the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()  # comm may contain spaces and parentheses
    return ProcStat(pid=pid, ppid=int(rest[1]), state=rest[0],
                    ticks=int(rest[11]) + int(rest[12]), start=int(rest[19]))


def all_stats() -> list[ProcStat]:
    """Every process on the machine."""
    stats = (read_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [s for s in stats if s is not None]


def tree(root: int, stats: Iterable[ProcStat]) -> list[ProcStat]:
    """root and all its descendants."""
    by_parent: dict[int, list[ProcStat]] = {}
    found: list[ProcStat] = []
    for st in stats:
        by_parent.setdefault(st.ppid, []).append(st)
        if st.pid == root:
            found.append(st)
    for st in found:  # grows while iterating: breadth-first walk
        found.extend(by_parent.get(st.pid, ()))
    return found


def alive(st: ProcStat) -> bool:
    """The same process (pid and start time) still runs."""
    now = read_stat(st.pid)
    return now is not None and now.start == st.start and now.state != "Z"


def cmdline(pid: int) -> list[str]:
    """argv of a process ([] if gone or a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def environ_var(pid: int, name: str) -> str | None:
    """One environment variable of another process, if readable."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def short_command(argv: Sequence[str]) -> str:
    """Program and positional arguments: 'sipline worker', 'honcho start', 'kamailio'."""
    words = list(argv)
    if words and Path(words[0]).name.startswith("python") and len(words) > 1:
        words = words[1:]  # the script, not the interpreter
        if words[0] == "-m" and len(words) > 1:
            words = words[1:]
    if not words:
        return "?"
    kept = [Path(words[0]).name]
    for prev, word in itertools.pairwise(words):
        if not word.startswith("-") and not prev.startswith("-"):
            kept.append(word)
    return " ".join(kept)[:48]


def label(pid: int, ps_names: dict[int, str]) -> str:
    """A readable name: '1234 worker.1: sipline worker' or '1234 kamailio [timer]'."""
    name = short_command(cmdline(pid))
    honcho = environ_var(pid, "HONCHO_PROCESS_NAME")
    if honcho:
        name = f"{honcho}: {name}"
    if pid in ps_names:
        name = f"{name} [{ps_names[pid]}]"
    return f"{pid} {name}"


def machine_idle() -> tuple[float, float]:
    """(now, idle seconds summed over all cores). /proc/uptime, not /proc/stat: on this VM the
    aggregate jiffies of /proc/stat lose most busy time (0.09 busy cores reported while
    processes' own counters showed 0.97)."""
    return time.monotonic(), float(Path("/proc/uptime").read_text().split()[1])


def udp_errors() -> dict[str, int]:
    """Kernel UDP counters (InErrors, RcvbufErrors, SndbufErrors) from /proc/net/snmp."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    counters = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:])))
    return {k: counters.get(k, 0) for k in ("InErrors", "RcvbufErrors", "SndbufErrors")}


def listening_inodes(port: int, transport: str, host: str = PROXY_HOST) -> set[str]:
    """Inodes of the sockets bound (UDP) or listening (TCP) on host:port or the wildcard."""
    table, state = ("/proc/net/tcp", "0A") if transport == "tcp" else ("/proc/net/udp", "07")
    wanted = {f"{_hex_ip(host)}:{port:04X}", f"00000000:{port:04X}"}
    rows = (line.split() for line in Path(table).read_text().splitlines()[1:])
    return {cols[9] for cols in rows if cols[1] in wanted and cols[3] == state}


def listening(port: int, transport: str, host: str = PROXY_HOST) -> bool:
    """Something is bound (UDP) or listening (TCP) on host:port or the wildcard."""
    return bool(listening_inodes(port, transport, host))


def _hex_ip(host: str) -> str:
    """127.0.0.1 as /proc/net shows it on little-endian hosts: 0100007F."""
    return socket.inet_aton(host)[::-1].hex().upper()


# --------------------------------------------------------------------------- CPU sampling


@dataclass
class CpuSampler:
    """utime+stime deltas of a changing set of processes over one window."""

    names: dict[int, str] = field(default_factory=dict)  # pid -> fixed name (sipp roles)
    first: dict[tuple[int, int], int] = field(default_factory=dict)
    last: dict[tuple[int, int], int] = field(default_factory=dict)
    label_of: dict[tuple[int, int], str] = field(default_factory=dict)
    started: bool = False

    def sample(self, stats: Iterable[ProcStat], ps_names: dict[int, str]) -> None:
        """Record current ticks; a process first seen after the start began in the window."""
        for st in stats:
            key = (st.pid, st.start)
            if key not in self.first:
                self.first[key] = 0 if self.started else st.ticks
                self.label_of[key] = self.names.get(st.pid) or label(st.pid, ps_names)
            self.last[key] = st.ticks
        self.started = True

    def percent(self, wall_s: float) -> dict[str, float]:
        """% of one core per process over wall_s seconds."""
        return {self.label_of[k]: 100.0 * (self.last[k] - self.first[k]) / CLK_TCK / wall_s
                for k in self.first}


def udp_socket_drops() -> dict[tuple[int, str], int]:
    """(local port, inode) -> the kernel's drop count of every UDP socket (/proc/net/udp)."""
    drops = {}
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        drops[(int(cols[1].rsplit(":", 1)[1], 16), cols[9])] = int(cols[12])
    return drops


def socket_inodes(pid: int) -> set[str]:
    """Inode numbers of the sockets a process holds."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return set()
    return {ln[8:-1] for ln in links if ln.startswith("socket:[")}


@dataclass
class DropTracker:
    """Datagrams the kernel dropped per receiving socket (full receive buffer) over a window;
    tells whether the proxy, the UAS or the UAC could not keep up."""

    first: dict[tuple[int, str], int] = field(default_factory=dict)
    last: dict[tuple[int, str], int] = field(default_factory=dict)
    uac_inodes: set[str] = field(default_factory=set)
    started: bool = False

    def sample(self, uac_pid: int | None) -> None:
        if uac_pid is not None and not self.uac_inodes:
            self.uac_inodes = socket_inodes(uac_pid)
        for key, count in udp_socket_drops().items():
            self.first.setdefault(key, 0 if self.started else count)
            self.last[key] = count
        self.started = True

    def by_socket(self) -> dict[str, int]:
        """Non-zero drop counts named proxy:5060, uas:5080, uac:PORT or port:PORT."""
        named: dict[str, int] = {}
        for (port, inode), count in self.last.items():
            if count > self.first[(port, inode)]:
                name = ("proxy" if port == PROXY_PORT else "uas" if port == UAS_PORT
                        else "uac" if inode in self.uac_inodes else "port")
                key = f"{name}:{port}"
                named[key] = named.get(key, 0) + count - self.first[(port, inode)]
        return named


# --------------------------------------------------------------------------- processes


def spawn(argv: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start argv in its own session/process group, output to log."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S,
         first_signal: signal.Signals = signal.SIGTERM) -> None:
    """Signal proc's group, wait up to grace_s for its whole tree, then SIGKILL the rest."""
    members = tree(proc.pid, all_stats())  # children outlive a dead leader: remember them
    _signal_group(proc.pid, first_signal)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not any(alive(m) for m in members):
            _await_reaping(members, time.monotonic() + 1.0)
            return
        time.sleep(0.05)
    _signal_group(proc.pid, signal.SIGKILL)
    for member in members:
        if alive(member):
            _kill(member.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        print(f"cps: pid {proc.pid} survived SIGKILL", file=sys.stderr)


def _await_reaping(members: list[ProcStat], deadline: float) -> None:
    """Give init a moment to reap children orphaned by a leader that died first (tidy pgrep)."""
    while any(read_stat(m.pid) is not None for m in members) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def exited_unreaped(proc: subprocess.Popen[bytes]) -> bool:
    """proc has exited; it stays a zombie so its final CPU ticks can still be read."""
    if proc.returncode is not None:
        return True
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def process_names(target: Target) -> dict[int, str]:
    """pid -> description from the preset's ps command (e.g. kamcmd ps), if any."""
    if not target.ps_command:
        return {}
    try:
        out = subprocess.run(target.ps_command, capture_output=True, text=True, timeout=3.0,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    names: dict[int, str] = {}
    for line in out.splitlines():
        pid, _, desc = line.strip().partition("\t")
        if pid.isdigit():
            names[int(pid)] = desc.strip()
    return names


# --------------------------------------------------------------------------- readiness


def options_probe(transport: str, local_port: int, seq: int) -> bytes:
    """An OPTIONS the proxy must answer itself: Max-Forwards 0 (RFC 3261 §16.3 step 3)."""
    proto = transport.upper()
    return (f"OPTIONS sip:{PROXY_HOST}:{PROXY_PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/{proto} {PROXY_HOST}:{local_port};branch=z9hG4bK-cps-{seq};rport\r\n"
            "Max-Forwards: 0\r\n"
            f"From: <sip:cps@{PROXY_HOST}>;tag=cps{seq}\r\n"
            f"To: <sip:{PROXY_HOST}:{PROXY_PORT}>\r\n"
            f"Call-ID: cps-probe-{os.getpid()}-{seq}@{PROXY_HOST}\r\n"
            f"CSeq: {seq} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def probe_once(transport: str, seq: int, timeout_s: float) -> bool:
    """One OPTIONS; True if any SIP response came back."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.bind((PROXY_HOST, 0))
            if transport == "tcp":
                sock.connect((PROXY_HOST, PROXY_PORT))
            msg = options_probe(transport, sock.getsockname()[1], seq)
            sock.sendto(msg, (PROXY_HOST, PROXY_PORT)) if transport == "udp" else sock.sendall(msg)
            return sock.recv(65535).startswith(b"SIP/2.0 ")
        except OSError:  # refused, timed out, reset
            return False


def wait_until_ready(proc: subprocess.Popen[bytes], transport: str, timeout_s: float,
                     log: Path) -> float:
    """Poll OPTIONS until answered; seconds taken. Raises if the target dies or times out."""
    start = time.monotonic()
    for seq in range(1, 1_000_000):
        if proc.poll() is not None:
            raise SystemExit(f"cps: target exited ({proc.returncode}) before answering:\n"
                             f"{tail(log)}")
        if probe_once(transport, seq, timeout_s=0.25):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            break
        time.sleep(0.05)  # refused probes return at once: don't spin
    raise SystemExit(f"cps: no answer to OPTIONS on {PROXY_HOST}:{PROXY_PORT}/{transport} "
                     f"within {timeout_s:.0f} s:\n{tail(log)}")


def wait_listening(proc: subprocess.Popen[bytes], port: int, transport: str,
                   timeout_s: float, log: Path) -> None:
    """Poll /proc/net until proc itself holds port (not someone else on a shared box).
    Raises HarnessError if proc dies or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if listening_inodes(port, transport) & socket_inodes(proc.pid):
            return
        if proc.poll() is not None:
            raise HarnessError(f"sipp UAS exited ({proc.returncode}):\n{tail(log)}")
        time.sleep(0.02)
    raise HarnessError(f"sipp UAS not listening on {port}/{transport} after {timeout_s} s "
                       f"(port held by: {port_owners(port)})")


def check_target_owns_port(proc: subprocess.Popen[bytes], transport: str) -> None:
    """The answer to the probe came from the target, not from another proxy on the box."""
    held = set().union(*(socket_inodes(st.pid) for st in tree(proc.pid, all_stats())))
    if not listening_inodes(PROXY_PORT, transport) & held:
        raise HarnessError(f"{PROXY_HOST}:{PROXY_PORT} answered, but the target holds no socket "
                           f"on it (held by: {port_owners(PROXY_PORT)})")


# --------------------------------------------------------------------------- sipp


@dataclass(frozen=True)
class SippCounters:
    """The last row of a sipp -trace_stat file (cumulative counters)."""

    created: int = 0
    successful: int = 0
    failed: int = 0
    open_calls: int = 0
    retransmissions: int = 0
    out_of_call: int = 0
    dead_call: int = 0
    unexpected: int = 0
    max_udp_retrans: int = 0
    timeout_on_recv: int = 0
    cannot_send: int = 0
    warnings: int = 0  # with --ignore-unexpected, an ignored unexpected message is one
    elapsed_s: float = 0.0  # StartTime to the final row: includes the tail of the last calls
    placing_s: float = 0.0  # StartTime to the moment the last call was placed
    rows: int = 0


STAT_COLUMNS = {
    "created": "TotalCallCreated", "successful": "SuccessfulCall(C)",
    "failed": "FailedCall(C)", "open_calls": "CurrentCall",
    "retransmissions": "Retransmissions(C)", "out_of_call": "OutOfCallMsgs(C)",
    "dead_call": "DeadCallMsgs(C)", "unexpected": "FailedUnexpectedMessage(C)",
    "max_udp_retrans": "FailedMaxUDPRetrans(C)", "timeout_on_recv": "FailedTimeoutOnRecv(C)",
    "cannot_send": "FailedCannotSendMessage(C)", "warnings": "Warnings(C)",
}


def read_stat_rows(path: Path) -> list[dict[str, str]]:
    """The complete rows of a sipp -trace_stat CSV (';'-separated), maybe still being written."""
    try:
        with path.open(newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return []
    if not rows:
        return []
    return [dict(zip(rows[0], r)) for r in rows[1:] if len(r) >= len(rows[0])]


def read_sipp_stats(path: Path) -> SippCounters:
    """Counters from the last (final) row of a sipp stat file."""
    table = read_stat_rows(path)
    if not table:
        return SippCounters()
    row = table[-1]
    counts = {k: int(row.get(col) or 0) for k, col in STAT_COLUMNS.items()}
    # timestamps read "date<TAB>time<TAB>epoch"; ElapsedTime(C) has 1 s resolution only
    start = _epoch(row.get("StartTime", ""))
    elapsed = _epoch(row.get("CurrentTime", "")) - start
    return SippCounters(**counts, elapsed_s=elapsed, placing_s=placing_time(table, start),
                        rows=len(table))


def placing_time(table: list[dict[str, str]], start: float) -> float:
    """Seconds from start until the last call was placed, interpolated between the
    once-a-second rows (-fd 1) around the moment TotalCallCreated reached its final value."""
    final = int(table[-1].get("TotalCallCreated") or 0)
    prev_t, prev_n = start, 0
    for row in table:
        t, n = _epoch(row.get("CurrentTime", "")), int(row.get("TotalCallCreated") or 0)
        if n >= final:
            return prev_t - start + (t - prev_t) * (final - prev_n) / max(1, n - prev_n)
        prev_t, prev_n = t, n
    return prev_t - start


def _epoch(stamp: str) -> float:
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return 0.0


def sipp_common(cfg: StepConfig, stat_file: Path, timeout_s: int) -> list[str]:
    """Options both sipp roles share."""
    argv = ["-i", PROXY_HOST, "-bind_local", "-t", "t1" if cfg.transport == "tcp" else "u1",
            "-buff_size", str(SIPP_BUFF_SIZE), "-nostdin", "-trace_stat", "-stf", str(stat_file),
            "-fd", "1", "-timeout", f"{timeout_s}s", "-recv_timeout", str(cfg.recv_timeout_ms)]
    if cfg.ignore_unexpected:  # e.g. a 180 overtaken by its 200: ignored, not a failed call
        argv += ["-default_behaviors", "all,-abortunexp"]
    return argv


def uas_argv(cfg: StepConfig, stat_file: Path, timeout_s: int) -> list[str]:
    """The UAS behind the proxy on 127.0.0.1:5080."""
    return ["sipp", "-sn", "uas", "-p", str(UAS_PORT), *sipp_common(cfg, stat_file, timeout_s)]


def uac_argv(cfg: StepConfig, rate: int, calls: int, stat_file: Path, err_file: Path) -> list[str]:
    """The UAC in front of the proxy; local port chosen by sipp."""
    return ["sipp", "-sn", "uac", f"{PROXY_HOST}:{PROXY_PORT}", "-r", str(rate), "-m", str(calls),
            *sipp_common(cfg, stat_file, math.ceil(cfg.duration_s + cfg.margin_s)),
            "-trace_err", "-error_file",
            str(err_file), "-max_log_size", "1000000"]


# --------------------------------------------------------------------------- one step


@dataclass(frozen=True)
class StepConfig:
    """What every step shares."""

    transport: str
    duration_s: float
    margin_s: float
    recv_timeout_ms: int
    kill_after_s: float
    workdir: Path
    target_pid: int
    ignore_unexpected: bool
    max_background_pct: float
    quiet_wait_s: float
    max_others_pct: float


@dataclass
class StepResult:
    """Everything measured at one rate."""

    rate: int
    planned: int
    attempted: int
    successful: int
    failed: int
    unfinished: int
    not_started: int
    uac_failed_pct: float
    uas_calls: int
    uas_failed: int
    uas_unfinished: int
    uas_failed_pct: float
    failed_pct: float
    effective_rate: float
    wall_s: float
    step_s: float
    uac_retransmissions: int
    uas_retransmissions: int
    unexpected_msgs: int
    warnings: int
    out_of_call_msgs: int
    dead_call_msgs: int
    udp_errors: dict[str, int]
    udp_drops: dict[str, int]
    cpu_pct: dict[str, float]
    background_busy_pct: float  # before the step, UAS and UAC not running
    machine_busy_pct: float
    others_cpu_pct: float  # % of one core: machine busy minus everything measured here
    noisy: bool  # others_cpu_pct >= --max-others: the figure is doubtful
    harness_cpu_pct: float
    uac_exit: int | None
    uac_killed: bool
    verdict: str
    uac_counters: dict[str, Any]
    uas_counters: dict[str, Any]


@dataclass
class Window:
    """Counters taken at the start of the UAC run."""

    wall: float
    own_cpu: float
    machine: tuple[float, float]
    udp: dict[str, int]


def open_window() -> Window:
    times = os.times()
    return Window(time.monotonic(), times.user + times.system, machine_idle(), udp_errors())


@dataclass
class UacRun:
    """What the harness saw while the UAC ran."""

    cpu: CpuSampler
    drops: DropTracker
    exit_code: int | None = None
    killed: bool = False
    wall_s: float = 0.0
    end_epoch: float = 0.0


def run_uac(cfg: StepConfig, argv: list[str], log: Path, uas: subprocess.Popen[bytes],
            ps_names: dict[int, str]) -> UacRun:
    """Run the UAC to its end (or kill it past its deadline); sample CPU and drops meanwhile."""
    run = UacRun(CpuSampler(names={uas.pid: "sipp-uas"}), DropTracker())
    run.cpu.sample(_measured(cfg.target_pid, uas.pid, None), ps_names)
    run.drops.sample(None)
    start = time.monotonic()
    uac = spawn(argv, log)
    run.cpu.names[uac.pid] = "sipp-uac"
    deadline = start + cfg.duration_s + cfg.margin_s + cfg.recv_timeout_ms / 1000 + cfg.kill_after_s
    try:
        while not exited_unreaped(uac):
            if time.monotonic() > deadline:
                run.killed = True
                break
            time.sleep(SAMPLE_INTERVAL_S)
            run.cpu.sample(_measured(cfg.target_pid, uas.pid, uac.pid), ps_names)
            run.drops.sample(uac.pid)
        run.wall_s, run.end_epoch = time.monotonic() - start, time.time()
        run.cpu.sample(_measured(cfg.target_pid, uas.pid, uac.pid), ps_names)  # zombie's ticks
    finally:
        if run.killed or not exited_unreaped(uac):
            stop(uac, grace_s=2.0)  # SIGTERM: sipp still writes its final stat row
        uac.wait(timeout=2.0)  # reap the zombie
    run.exit_code = uac.returncode
    return run


def _measured(target_pid: int, uas_pid: int, uac_pid: int | None) -> list[ProcStat]:
    stats = all_stats()
    picked = tree(target_pid, stats)
    picked += [s for s in stats if s.pid in (uas_pid, uac_pid)]
    return picked


def drain_uas(uas: subprocess.Popen[bytes], stat_file: Path, uac_end: float,
              limit_s: float) -> None:
    """Wait until a UAS stat row written after the UAC ended shows no open call (each call
    of the built-in UAS ends with a 4 s pause), at most limit_s; then SIGTERM, on which sipp
    writes a final row. (SIGUSR1 is no drain: sipp then exits with paused calls open.)"""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and uas.poll() is None:
        rows = read_stat_rows(stat_file)
        last = rows[-1] if rows else {}
        if _epoch(last.get("CurrentTime", "")) > uac_end and last.get("CurrentCall") == "0":
            break
        time.sleep(SAMPLE_INTERVAL_S)
    stop(uas)


def run_step(cfg: StepConfig, rate: int, ps_names: dict[int, str]) -> StepResult:
    """Measure one rate: fresh UAS, UAC for duration, counters and CPU."""
    t0 = time.monotonic()
    calls = max(1, round(rate * cfg.duration_s))
    files = {k: cfg.workdir / f"step-{rate}-{k}" for k in
             ("uas.csv", "uac.csv", "uas.out", "uac.out", "uac-errors.log")}
    for path in files.values():
        path.unlink(missing_ok=True)
    drain_s = UAS_PAUSE_S + cfg.recv_timeout_ms / 1000 + 2.0
    uas_timeout = math.ceil(cfg.duration_s + cfg.margin_s + cfg.recv_timeout_ms / 1000
                            + cfg.kill_after_s + drain_s + 5.0)
    background = background_busy(cfg.max_background_pct, cfg.quiet_wait_s)
    if background >= cfg.max_background_pct:
        print(f"  warning: the box is {background:.0f} % busy before the step (other load)")
    uas = spawn(uas_argv(cfg, files["uas.csv"], uas_timeout), files["uas.out"])
    try:
        wait_listening(uas, UAS_PORT, cfg.transport, 5.0, files["uas.out"])
        window = open_window()
        run = run_uac(cfg, uac_argv(cfg, rate, calls, files["uac.csv"],
                                    files["uac-errors.log"]), files["uac.out"], uas, ps_names)
        own = os.times()
        harness = 100.0 * (own.user + own.system - window.own_cpu) / run.wall_s
        busy = machine_busy(window.machine)
        drain_uas(uas, files["uas.csv"], run.end_epoch, drain_s)
    finally:
        if uas.poll() is None:
            stop(uas)
    udp = {k: v - window.udp[k] for k, v in udp_errors().items()}
    result = summarise(rate, calls, read_sipp_stats(files["uac.csv"]),
                       read_sipp_stats(files["uas.csv"]), run, time.monotonic() - t0, udp,
                       (background, busy), harness, cfg.max_others_pct)
    return result


def background_busy(max_pct: float, wait_s: float, window_s: float = 0.5) -> float:
    """Busy % of all cores while no sipp runs (other users of a shared box), measured in
    window_s slices until it is below max_pct or wait_s has passed."""
    deadline = time.monotonic() + wait_s
    while True:
        before = machine_idle()
        time.sleep(window_s)
        busy = machine_busy(before)
        if busy < max_pct or time.monotonic() >= deadline:
            return busy


def machine_busy(before: tuple[float, float]) -> float:
    """Busy % of all cores since before."""
    now, idle = machine_idle()
    capacity = (now - before[0]) * (os.cpu_count() or 1)
    return max(0.0, 100.0 * (1.0 - (idle - before[1]) / capacity))


def others_pct(machine_busy_pct: float, cpu: dict[str, float], harness: float) -> float:
    """CPU used during the step by processes not measured here (other users of the box)."""
    return max(0.0, machine_busy_pct * (os.cpu_count() or 1) - sum(cpu.values()) - harness)


def summarise(rate: int, planned: int, uac: SippCounters, uas: SippCounters, run: UacRun,
              step_s: float, udp: dict[str, int], busy: tuple[float, float],
              harness: float, max_others_pct: float) -> StepResult:
    """Turn raw counters into the step's figures and verdict (see module docstring)."""
    unfinished = max(0, uac.created - uac.successful - uac.failed)
    uac_pct = 100.0 * (planned - uac.successful) / planned
    uas_bad = uas.failed + uas.open_calls
    uas_pct = 100.0 * uas_bad / uas.created if uas.created else 0.0
    failed_pct = max(uac_pct, uas_pct)
    effective = uac.created / uac.placing_s if uac.placing_s > 0 else 0.0
    others = others_pct(busy[1], run.cpu.percent(run.wall_s), harness)
    verdict = ("killed" if run.killed else f"fail>={FAIL_LIMIT_PCT:g}%"
               if failed_pct >= FAIL_LIMIT_PCT else "slow"
               if effective < MIN_RATE_FRACTION * rate else "ok")
    return StepResult(
        rate=rate, planned=planned, attempted=uac.created, successful=uac.successful,
        failed=uac.failed, unfinished=unfinished, not_started=max(0, planned - uac.created),
        uac_failed_pct=uac_pct, uas_calls=uas.created, uas_failed=uas.failed,
        uas_unfinished=uas.open_calls, uas_failed_pct=uas_pct, failed_pct=failed_pct,
        effective_rate=effective, wall_s=run.wall_s, step_s=step_s,
        uac_retransmissions=uac.retransmissions, uas_retransmissions=uas.retransmissions,
        unexpected_msgs=uac.unexpected + uas.unexpected, warnings=uac.warnings + uas.warnings,
        out_of_call_msgs=uac.out_of_call + uas.out_of_call,
        dead_call_msgs=uac.dead_call + uas.dead_call, udp_errors=udp,
        udp_drops=run.drops.by_socket(), cpu_pct=run.cpu.percent(run.wall_s),
        background_busy_pct=busy[0], machine_busy_pct=busy[1], harness_cpu_pct=harness,
        others_cpu_pct=others, noisy=others >= max_others_pct, uac_exit=run.exit_code, uac_killed=run.killed,
        verdict=verdict, uac_counters=asdict(uac), uas_counters=asdict(uas))


# --------------------------------------------------------------------------- reporting


def cpu_lines(cpu: dict[str, float], top: int = 12) -> list[str]:
    """sipp first, then target processes by CPU; idle ones folded into one line."""
    sipp = [(k, v) for k, v in cpu.items() if k.startswith("sipp-")]
    rest = sorted(((k, v) for k, v in cpu.items() if not k.startswith("sipp-")),
                  key=lambda kv: -kv[1])
    shown = [kv for kv in rest[:top] if kv[1] >= 0.05]
    idle = len(rest) - len(shown)
    lines = [f"    {v:6.1f} %  {k}{'  <-- saturated' if v >= SIPP_SATURATED_PCT else ''}"
             for k, v in sorted(sipp)]
    lines += [f"    {v:6.1f} %  {k}" for k, v in shown]
    if idle:
        lines.append(f"    {sum(v for _, v in rest[top:]):6.1f} %  ({idle} other processes)")
    lines.append(f"    {sum(v for _, v in rest):6.1f} %  target total")
    return lines


def print_step(r: StepResult) -> None:
    """The per-step block."""
    print(f"  rate {r.rate}/s: {r.verdict.upper()}{' (NOISY BOX)' if r.noisy else ''}  failed {r.failed_pct:.2f} % "
          f"(UAC {r.uac_failed_pct:.2f} %, UAS {r.uas_failed_pct:.2f} %)  "
          f"effective {r.effective_rate:.0f} calls/s  wall {r.wall_s:.1f} s "
          f"(step {r.step_s:.1f} s)")
    print(f"    UAC: planned {r.planned} attempted {r.attempted} ok {r.successful} "
          f"failed {r.failed} unfinished {r.unfinished} not-started {r.not_started}  "
          f"exit {r.uac_exit}{' KILLED' if r.uac_killed else ''}")
    print(f"    UAS: calls {r.uas_calls} failed {r.uas_failed} unfinished {r.uas_unfinished}  "
          f"retrans UAC {r.uac_retransmissions} UAS {r.uas_retransmissions}  unexpected "
          f"{r.unexpected_msgs}  warnings {r.warnings}  out-of-call {r.out_of_call_msgs}  "
          f"dead-call {r.dead_call_msgs}"
          f"  kernel UDP RcvbufErrors {r.udp_errors.get('RcvbufErrors', 0)} "
          f"{r.udp_drops or ''}")
    print(f"  CPU, % of one core over the UAC's {r.wall_s:.1f} s "
          f"(machine busy {r.machine_busy_pct:.0f} % of {os.cpu_count()} cores, "
          f"{r.background_busy_pct:.0f} % before the step, "
          f"unmeasured processes {r.others_cpu_pct:.0f} % of a core, "
          f"harness {r.harness_cpu_pct:.1f} %):")
    print("\n".join(cpu_lines(r.cpu_pct)), flush=True)


def target_total(r: StepResult) -> float:
    return sum(v for k, v in r.cpu_pct.items() if not k.startswith("sipp-"))


def print_summary(target: Target, results: list[StepResult], total_s: float,
                  ignore_unexpected: bool) -> None:
    """One row per step, then the best passing rate."""
    print(f"\n== {target.name}: summary (failed calls counted "
          f"{'ignoring' if ignore_unexpected else 'with'} unexpected messages) ==")
    print(f"{'rate':>7} {'bg%':>3} {'attempted':>9} {'ok':>8} {'fail%':>6} {'uas%':>6} {'retrans':>7} "
          f"{'unexp':>5} {'warn':>5} "
          f"{'eff/s':>7} {'wall s':>6} {'uac%':>5} {'uas%':>5} {'target%':>7} {'busy%':>5} "
          f"{'oth%':>4} {'harn%':>5}  verdict")
    for r in results:
        print(f"{r.rate:>7} {r.background_busy_pct:>3.0f} {r.attempted:>9} {r.successful:>8} {r.failed_pct:>6.2f} "
              f"{r.uas_failed_pct:>6.2f} {r.uac_retransmissions + r.uas_retransmissions:>7} "
              f"{r.unexpected_msgs:>5} {r.warnings:>5} "
              f"{r.effective_rate:>7.0f} {r.wall_s:>6.1f} {r.cpu_pct.get('sipp-uac', 0):>5.0f} "
              f"{r.cpu_pct.get('sipp-uas', 0):>5.0f} {target_total(r):>7.0f} "
              f"{r.machine_busy_pct:>5.0f} {r.others_cpu_pct:>4.0f} {r.harness_cpu_pct:>5.1f}  "
              f"{r.verdict}{' (noisy box)' if r.noisy else ''}")
    best = best_step(results)
    if best is None:
        print(f"{target.name}: no rate passed with < {FAIL_LIMIT_PCT:g} % failed calls "
              f"({total_s:.0f} s)")
    else:
        print(f"{target.name}: best rate with < {FAIL_LIMIT_PCT:g} % failed calls: {best.rate} "
              f"calls/s (effective {best.effective_rate:.0f}/s, failed {best.failed_pct:.2f} %, "
              f"target CPU {target_total(best):.0f} % of one core) — run took {total_s:.0f} s")
    if results and results[-1].verdict == "ok":
        print(f"{target.name}: the last step measured passed: the limit is at least that "
              "(no failing step reached: raise the plan's maximum or --budget)")


def best_step(results: Sequence[StepResult]) -> StepResult | None:
    passed = [r for r in results if r.verdict == "ok"]
    return max(passed, key=lambda r: r.rate) if passed else None


@dataclass
class TargetRun:
    """One target's steps."""

    target: Target
    results: list[StepResult]
    total_s: float


def print_comparison(runs: list[TargetRun]) -> None:
    """Best rate per target, as a ratio of the first target's (same run, same box)."""
    base = best_step(runs[0].results)
    print("\n== comparison (best rate with < 1 % failed calls) ==")
    for run in runs:
        best = best_step(run.results)
        rate = best.rate if best else 0
        ratio = f"{rate / base.rate:.2f}x {runs[0].target.name}" if base and base.rate else ""
        print(f"  {run.target.name:<40} {rate:>7} calls/s  {ratio}")


def write_json(path: Path, args: argparse.Namespace, runs: list[TargetRun]) -> None:
    doc = {"transport": args.transport, "duration_s": args.duration,
           "ignore_unexpected": args.ignore_unexpected, "cores": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sipp_version": sipp_version(),
           "argv": sys.argv,
           "runs": [{"target": asdict(run.target), "total_s": run.total_s,
                     "best_rate": (best.rate if (best := best_step(run.results)) else None),
                     "steps": [asdict(r) for r in run.results]} for run in runs]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def sipp_version() -> str:
    try:
        out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return next((ln.strip() for ln in out.splitlines() if "SIPp" in ln), "?")


# --------------------------------------------------------------------------- plan and main


def rate_list(text: str) -> list[int]:
    rates = [int(x) for x in text.split(",") if x.strip()]
    if not rates or min(rates) <= 0:
        raise argparse.ArgumentTypeError("rates must be positive integers")
    return rates


def search_rates(text: str) -> list[int]:
    """'start,step,max' -> start, start+step, ... <= max (bounded)."""
    try:
        start, step, top = (int(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected start,step,max") from exc
    if start <= 0 or step <= 0 or top < start:
        raise argparse.ArgumentTypeError("need 0 < start <= max and step > 0")
    return list(range(start, top + 1, step))


def plan(args: argparse.Namespace) -> tuple[list[int], bool]:
    """Rates to run and whether to stop at the first step that does not pass."""
    if args.search:
        return args.search, True
    return args.rates or [1000, 2000, 4000], False


def run_plan(cfg: StepConfig, rates: list[int], stop_on_fail: bool, budget_s: float,
             ps_names: dict[int, str]) -> Iterator[StepResult]:
    """Run steps in order; bounded by the list and by the time budget."""
    start = time.monotonic()
    for i, rate in enumerate(rates, 1):
        if time.monotonic() - start > budget_s:
            print(f"cps: budget of {budget_s:.0f} s used, {len(rates) - i + 1} steps skipped")
            return
        print(f"\n-- step {i}/{len(rates)}: {rate} calls/s for {cfg.duration_s:g} s "
              f"({cfg.transport}) --", flush=True)
        result = run_step(cfg, rate, ps_names)
        print_step(result)
        if result.verdict != "ok" and result.others_cpu_pct >= cfg.max_others_pct:
            print(f"  other processes used {result.others_cpu_pct:.0f} % of a core during the "
                  "step: measuring this rate once more", flush=True)
            result = run_step(cfg, rate, ps_names)
            print_step(result)
        yield result
        if stop_on_fail and result.verdict != "ok":
            return


def busy_ports(transport: str) -> list[int]:
    return [port for port in (PROXY_PORT, UAS_PORT)
            if listening(port, transport) or listening(port, "udp")]


def port_owners(port: int) -> list[str]:
    """'pid cmdline' of the processes holding a socket bound to port (any transport)."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/tcp"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[1].endswith(f":{port:04X}"):
                inodes.add(f"socket:[{cols[9]}]")
    owners = []
    for pid in (int(n) for n in os.listdir("/proc") if n.isdigit()):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if links & inodes:
            owners.append(f"{pid} {' '.join(cmdline(pid))[:80]}")
    return owners


def wait_ports_free(transport: str, wait_s: float) -> None:
    """Wait up to wait_s for 5060 and 5080 to be free (a shared box); else name the owners."""
    deadline = time.monotonic() + wait_s
    while (busy := busy_ports(transport)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if busy:
        owners = "\n  ".join(o for port in busy for o in port_owners(port))
        raise SystemExit(f"cps: port(s) {busy} in use by:\n  {owners}")


def on_signal(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=PRESETS, action="append",
                   help="built-in Kamailio preset (repeatable)")
    p.add_argument("--target-cmd", action="append",
                   help="shell command starting the proxy in its own process group (repeatable; "
                   "runs after the presets)")
    p.add_argument("--name", action="append", help="name of each --target-cmd, in order")
    p.add_argument("--cwd", type=Path, default=REPO_ROOT, help="cwd of --target-cmd (repo root)")
    p.add_argument("--peers", type=Path, default=DEFAULT_PEERS,
                   help="dir holding the presets' Kamailio configs (default bench/peers)")
    p.add_argument("--shared", type=Path, default=None,
                   help="a dir holding peers/ to use instead of --peers")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--rates", type=rate_list, help="comma-separated calls/s, all run")
    how.add_argument("--search", type=search_rates, metavar="START,STEP,MAX",
                     help="step the rate up until a step fails (>= 1 %% failed calls)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per step (10)")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--margin", type=float, default=3.0,
                   help="seconds the UAC may run late before it stops placing calls (3)")
    p.add_argument("--recv-timeout", type=int, default=5000,
                   help="ms a call waits for an expected message (sipp -recv_timeout, 5000)")
    p.add_argument("--kill-after", type=float, default=5.0,
                   help="seconds past all sipp timeouts before sipp is killed (5)")
    p.add_argument("--ready-timeout", type=float, default=30.0,
                   help="seconds to wait for the target to answer OPTIONS (30)")
    p.add_argument("--budget", type=float, default=900.0,
                   help="per target: start no step after this many seconds (900)")
    p.add_argument("--ignore-unexpected", action="store_true",
                   help="sipp -default_behaviors all,-abortunexp: an unexpected (e.g. reordered) "
                   "message is ignored and counted as a warning instead of failing the call")
    p.add_argument("--extra-args", default="",
                   help="appended to the preset's command line, e.g. '-x tlsf' for Kamailio")
    p.add_argument("--wait-ports", type=float, default=0.0,
                   help="seconds to wait for 5060/5080 to be free before giving up (0)")
    p.add_argument("--max-background", type=float, default=15.0,
                   help="warn when the box is this %% busy before a step (15)")
    p.add_argument("--quiet-wait", type=float, default=0.0,
                   help="seconds to wait before each step for the box to fall below "
                   "--max-background (shared machines; 0)")
    p.add_argument("--max-others", type=float, default=25.0,
                   help="%% of one core used by unmeasured processes during a step above which "
                   "the step is flagged noisy, and measured once more if it failed (25)")
    p.add_argument("--workdir", type=Path,
                   help="where sipp stat/log files go, one subdirectory per target (temp dir)")
    p.add_argument("--json", type=Path, help="write all results to this file")
    args = p.parse_args(argv)
    if not args.target and not args.target_cmd:
        p.error("give at least one --target or --target-cmd")
    return args


def measure(target: Target, args: argparse.Namespace, workdir: Path) -> TargetRun:
    """Start the target, run the rate plan against it, stop it. Interrupted propagates."""
    if busy_ports(args.transport) and args.wait_ports:
        print(f"cps: waiting up to {args.wait_ports:.0f} s for ports {busy_ports(args.transport)}",
              flush=True)
    wait_ports_free(args.transport, args.wait_ports)
    for run_dir in target.run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
    print(f"\ncps: target {target.name}: {target.command}\ncps: files in {workdir}", flush=True)
    t0 = time.monotonic()
    log = workdir / "target.log"
    argv = ["/bin/sh", "-c", target.command] if target.shell else shlex.split(target.command)
    proc = spawn(argv, log, cwd=target.cwd)
    cfg = StepConfig(args.transport, args.duration, args.margin, args.recv_timeout,
                     args.kill_after, workdir, proc.pid, args.ignore_unexpected,
                     args.max_background, args.quiet_wait, args.max_others)
    run = TargetRun(target, [], 0.0)
    rates, stop_on_fail = plan(args)
    try:
        ready = wait_until_ready(proc, args.transport, args.ready_timeout, log)
        check_target_owns_port(proc, args.transport)
        print(f"cps: target answered OPTIONS after {ready:.2f} s", flush=True)
        for result in run_plan(cfg, rates, stop_on_fail, args.budget, process_names(target)):
            run.results.append(result)  # a loop, not list(): keeps finished steps on Ctrl-C
    finally:
        stop(proc)
        run.total_s = time.monotonic() - t0
        print_summary(target, run.results, run.total_s, cfg.ignore_unexpected)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    targets = resolve_targets(args)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="sipline-cps-"))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGINT: even if inherited ignored
        signal.signal(sig, on_signal)
    runs: list[TargetRun] = []
    try:
        for i, target in enumerate(targets, 1):
            workdir = root / f"{i}-{target.name.replace(' ', '_').replace('/', '_')}"
            workdir.mkdir(parents=True, exist_ok=True)
            runs.append(measure(target, args, workdir))
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ncps: interrupted ({type(exc).__name__} {exc}), stopped", file=sys.stderr)
    except HarnessError as exc:
        print(f"\ncps: {exc}", file=sys.stderr)
    if len(runs) > 1:
        print_comparison(runs)
    if args.json:
        write_json(args.json, args, runs)
    return 0 if runs and all(best_step(r.results) for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
