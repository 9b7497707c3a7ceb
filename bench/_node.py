"""Helpers shared by bench/register.py and bench/retrans.py: a sipline node started with
honcho on a port of our own, readiness by OPTIONS, sipp stat files, process-group clean-up.

Standard library only; Linux only (/proc).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def udp_port_bound(port: int) -> bool:
    with open("/proc/net/udp") as f:
        next(f)
        return any(line.split()[1] == f"0100007F:{port:04X}" for line in f)


def options_probe(port: int, local_port: int, seq: int) -> bytes:
    return (f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK-bench-{seq};rport\r\n"
            "Max-Forwards: 0\r\n"
            f"From: <sip:bench@{HOST}>;tag=b{seq}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: bench-probe-{os.getpid()}-{seq}@{HOST}\r\n"
            f"CSeq: {seq} OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def wait_ready(port: int, deadline_s: float = 30.0) -> bool:
    """True once the node on ``port`` answers an OPTIONS with Max-Forwards: 0."""
    end, seq = time.monotonic() + deadline_s, 0
    while time.monotonic() < end:
        seq += 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.bind((HOST, 0))
            try:
                s.sendto(options_probe(port, s.getsockname()[1], seq), (HOST, port))
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:
                pass
        time.sleep(0.3)
    return False


class Group:
    """Processes started in their own session; all stopped at the end (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, cmd: list[str], **kw: Any) -> subprocess.Popen[Any]:
        p = subprocess.Popen(cmd, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def tree_pids(root: int) -> list[int]:
        """root and its descendants (by ppid: honcho's children may have sessions of their own)."""
        parent: dict[int, int] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parent[int(d)] = int(fields[1])
        out, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid in parent:
                out.append(pid)
            todo += [c for c, pp in parent.items() if pp == pid]
        return out

    @staticmethod
    def cpu_ticks(root: int) -> int:
        total = 0
        for pid in Group.tree_pids(root):
            try:
                f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(f[11]) + int(f[12])
            except OSError:
                pass
        return total

    def stop(self, p: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
        tree = [pid for pid in self.tree_pids(p.pid) if pid != p.pid]
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        end = time.monotonic() + grace_s
        while time.monotonic() < end and p.poll() is None:
            time.sleep(0.1)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in tree:  # children that left the process group (only those we saw start)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait(timeout=5)

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def node_config(path: Path, *, name: str, run_dir: str, port: int, mode: str,
                registrar_url: str | None = None, uas_port: int | None = None,
                stats_interval_s: float = 1.0) -> None:
    lines = [
        "[node]", f'name = "{name}"', f'run_dir = "{run_dir}"', "",
        "[[listen]]", 'transport = "udp"', f'address = "{HOST}"', f"port = {port}", "",
        "[proxy]", "record_route = true", f'mode = "{mode}"', "",
    ]
    if uas_port is not None:
        lines += ["[[destination_set]]", 'name = "uas"',
                  f'destinations = ["sip:{HOST}:{uas_port}"]', 'algorithm = "hash_call_id"', "",
                  "[[route]]", 'name = "default"', 'to = "uas"', ""]
    if registrar_url is not None:
        lines += ["[registrar]", "enabled = true", f'cachedb_url = "{registrar_url}"', ""]
    lines += ["[log]", 'level = "info"', f"stats_interval_s = {stats_interval_s}", ""]
    path.write_text("\n".join(lines))


def route_to(dest: str, stats_interval_s: float = 1.0) -> str:
    """The tail of a bench node's config: every request routed to the UAS at ``dest``
    ("host:port"), load statistics every ``stats_interval_s``."""
    return f"""
[[destination_set]]
name = "uas"
destinations = ["sip:{dest}"]

[[route]]
name = "default"
to = "uas"

[log]
level = "info"
stats_interval_s = {stats_interval_s}
"""


def start_node(group: Group, conf: Path, workers: int, log: Path) -> subprocess.Popen[Any]:
    env = dict(os.environ, SIPLINE_CONF=str(conf))
    venv_bin = REPO / ".venv" / "bin"
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    honcho = str(venv_bin / "honcho")
    return group.start([honcho, "-f", "Procfile", "start", "-c", f"worker={workers}"],
                       cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def last_stats_row(stf: Path) -> dict[str, str]:
    with stf.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    if not rows:
        raise RuntimeError(f"{stf}: no stat rows")
    return rows[-1]


def stop_uas_drained(group: Group, uas: subprocess.Popen[Any], stf: Path, deadline_s: float,
                     step_s: float) -> None:  # fmt: skip
    """Wait (bounded) until the sipp UAS's stat file shows no open call (its built-in scenario
    ends each call with a pause), then stop it: sipp writes its final stat row on SIGTERM."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        time.sleep(step_s)  # polling step, bounded by the deadline
        try:
            if int(last_stats_row(stf)["CurrentCall"]) == 0:
                break
        except (RuntimeError, OSError, KeyError, ValueError):
            pass  # no row yet, or a row being written: read again next step
    try:
        os.killpg(uas.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended by itself
    uas.wait(timeout=15)
    group.procs.remove(uas)


def stat_rows(stf: Path) -> list[dict[str, str]]:
    with stf.open(newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def elapsed_s(value: str) -> float:
    """sipp's ElapsedTime: HH:MM:SS:uuuuuu (or HH:MM:SS)."""
    parts = value.split(":")
    h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
    us = int(parts[3]) if len(parts) > 3 else 0
    return h * 3600 + m * 60 + s + us / 1e6


def worker_load_stats(log: Path) -> list[dict[str, Any]]:
    """The workers' load_stats JSON lines from honcho's output (prefix 'HH:MM:SS worker.N | ')."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if " worker." not in line or "load_stats" not in line:
            continue
        _, _, js = line.partition("| ")
        try:
            rec = json.loads(js)
        except ValueError:
            continue
        rec["_proc"] = line.split("|", 1)[0].split()[-1]
        out.append(rec)
    return out


def wait_for(what: Any, deadline_s: float, step_s: float = 0.05) -> Any:
    """``what()`` once it is truthy, or None at the deadline."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(step_s)  # polling step, bounded by the deadline
    return None


def ctl_stateplane(conf: Path) -> dict[str, Any]:
    """The state plane's part of ``sipline ctl --json stats`` for the node of ``conf``."""
    env = dict(os.environ, SIPLINE_CONF=str(conf))
    out = subprocess.run([str(REPO / ".venv" / "bin" / "sipline"), "ctl", "--json", "stats"],
                         env=env, capture_output=True, text=True, timeout=20,
                         check=False).stdout  # fmt: skip
    for reply in json.loads(out or "{}").get("stats", []):
        if reply.get("role") == "stateplane":
            return reply.get("stateplane") or {}
    return {}
