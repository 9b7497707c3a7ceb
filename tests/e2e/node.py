"""Run a real sipline node (honcho on the Procfile) and sipp against it, for end-to-end tests.

Rules:
1. Every port is picked free at run time on 127.0.0.1 (UDP and TCP alike), from below the
   kernel's ephemeral range, a share per pytest-xdist worker; never 5060/5080.
2. Nothing waits on a fixed sleep: readiness is an OPTIONS answered, exit is a process reaped,
   both polled to a deadline.
3. Every child is bounded in time and killed (by its own pid/process group) if it overstays.
4. Every child is registered when it starts; after each test whatever is still running is
   killed and its pipe closed (``reap_all``), so a failed test leaves no process and no open
   pipe behind to be collected, with a ResourceWarning, inside some later test.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = str(Path(sys.executable).parent)
#: children started by the current test and not yet reaped (rule 4)
_CHILDREN: list[subprocess.Popen[str]] = []
#: the thread reading a child's pipe, by pid: joined before the pipe is closed under it
_READERS: dict[int, threading.Thread] = {}


def _spawn(argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    # errors="replace": a child may print bytes that are not UTF-8 (Kamailio at debug=3 prints
    # TLS records); a decoding error would end the thread reading its pipe, and the child
    # would then block once the pipe is full
    popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             errors="replace", start_new_session=True,
                             **kwargs)  # type: ignore[call-overload]  # fmt: skip
    _CHILDREN.append(popen)
    return popen


def reap_all() -> list[str]:
    """Kill what the test left running (its whole process group) and close every pipe; the
    argv of each child that was still running."""
    left = []
    while _CHILDREN:
        popen = _CHILDREN.pop()
        if popen.poll() is None:
            left.append(" ".join(map(str, popen.args[:3])))  # type: ignore[index]
            for pid in [*_descendants(popen.pid), popen.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # already gone
            popen.wait(5)
        reader = _READERS.pop(popen.pid, None)
        if reader is not None:
            reader.join(5)  # it sees EOF now that every writer is dead
        if popen.stdout is not None:
            popen.stdout.close()
    return left
LOCALHOST = "127.0.0.1"


#: where test ports come from: below the kernel's ephemeral range (the first port it may give
#: an outgoing connection or a bind to port 0), so nothing on the box takes one of ours between
#: the check here and the child's bind, as a port picked by binding port 0 could be taken
#: ("listen_failed ... Address already in use" under CI load)
POOL_FIRST, POOL_END = 20000, 32000
#: sipp's own ports, and the ports sipline's examples use
NEVER = frozenset({5060, 5062, 5063, 5080, 5082})


def _ephemeral_first() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _slice() -> range | None:
    """This pytest-xdist worker's share of the pool (``gwN`` of ``PYTEST_XDIST_WORKER_COUNT``:
    parallel workers never hand out the same port), the whole pool outside xdist; None when
    the ephemeral range leaves too little below it (then the kernel picks, as before)."""
    end = min(POOL_END, _ephemeral_first())
    if end - POOL_FIRST < 1000:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (end - POOL_FIRST) // max(count, 1)
    first = POOL_FIRST + (index % max(count, 1)) * size
    return range(first, first + size)


class _Ports:
    """Hands out runs of ports from this process's slice in turn, from a random start (runs
    on a shared box spread out), so a port handed out and not yet bound by its child is not
    handed out again until the slice wraps."""

    def __init__(self) -> None:
        self.slice = _slice()
        self.next = 0 if self.slice is None else random.randrange(len(self.slice))

    def take(self, host: str, count: int) -> int:
        """P with P .. P + count - 1 bindable on ``host`` for UDP and TCP."""
        if self.slice is None:
            return _kernel_run(host, count)
        for _ in range(len(self.slice)):
            if self.next + count > len(self.slice):
                self.next = 0
            port = self.slice[self.next]
            self.next += count
            run = range(port, port + count)
            if NEVER.isdisjoint(run) and all(_bindable(host, p) for p in run):
                return port
        raise RuntimeError(f"no {count} free ports on {host} in {self.slice}")


def _bindable(host: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def _kernel_run(host: str, count: int) -> int:
    """The fallback: a port the kernel picks (from its ephemeral range), and the ones after it."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((host, 0))
            port = int(u.getsockname()[1])
        run = range(port, port + count)
        if NEVER.isdisjoint(run) and all(_bindable(host, p) for p in run):
            return port
    raise RuntimeError(f"no {count} free ports on {host}")


_PORTS: list[_Ports] = []  # made at the first call: xdist sets its variables before tests run


def _ports() -> _Ports:
    if not _PORTS:
        _PORTS.append(_Ports())
    return _PORTS[0]


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, outside the ephemeral range (a race
    remains with another run on the same box, as with any port picked before its bind)."""
    return _ports().take(LOCALHOST, 1)


def free_run(host: str, count: int = 4) -> int:
    """A port P on ``host`` with P .. P + count - 1 free for UDP and TCP (a state plane binds
    P and the ports after it: PUB, snapshot, relay, control)."""
    return _ports().take(host, count)


def free_media_port() -> int:
    """sipp's ``-mp`` port: sipp binds it and the port 2 above (audio and video RTP)."""
    return _ports().take(LOCALHOST, 3)


def write_config(path: Path, run_dir: Path, port: int, dest_port: int | list[int | str], *,
                 extra: str = "", set_extra: str = "", log_extra: str = "",
                 name: str = "e2e", listen_first: str = "") -> None:  # fmt: skip
    """A node ``name`` on ``port``; destinations are ports on 127.0.0.1 or URIs given whole;
    ``listen_first`` are [[listen]] tables put before the node's own (they send first)."""
    ports = dest_port if isinstance(dest_port, list) else [dest_port]
    dests = ", ".join(f'"{p}"' if isinstance(p, str) else f'"sip:127.0.0.1:{p}"' for p in ports)
    path.write_text(
        f"""
[node]
name = "{name}"
run_dir = "{run_dir}"
{listen_first}
[[listen]]
transport = "udp"
address = "127.0.0.1"
port = {port}

[[listen]]
transport = "tcp"
address = "127.0.0.1"
port = {port}

[[destination_set]]
name = "uas"
destinations = [{dests}]
{set_extra}

[[route]]
name = "default"
to = "uas"

[log]
level = "info"
stats_interval_s = 0.5
{log_extra}
{extra}
"""
    )


def env_for(conf: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SIPLINE_CONF"] = str(conf)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("HONCHO_PROCESS_NAME", None)
    return env


def options(
    port: int, transport: str = "udp", timeout_s: float = 0.3, max_forwards: int = 0
) -> bytes | None:
    """One OPTIONS to the proxy itself; the first answer's bytes, or None."""
    branch = "z9hG4bK" + uuid.uuid4().hex
    if transport == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        if transport == "tcp":
            sock.connect((LOCALHOST, port))
        lport = sock.getsockname()[1] if transport == "tcp" else _bind_any(sock)
        msg = (
            f"OPTIONS sip:{LOCALHOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/{transport.upper()} {LOCALHOST}:{lport};branch={branch};rport\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            f"From: <sip:probe@{LOCALHOST}>;tag=1\r\n"
            f"To: <sip:{LOCALHOST}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\n"
            f"CSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n"
        ).encode()
        if transport == "udp":
            sock.sendto(msg, (LOCALHOST, port))
            return sock.recvfrom(65535)[0]
        sock.sendall(msg)
        return sock.recv(65535)
    except OSError:
        return None
    finally:
        sock.close()


def _bind_any(sock: socket.socket) -> int:
    sock.bind((LOCALHOST, 0))
    return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A child process whose stdout lines are collected by a thread."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], cwd: Path) -> Proc:
        p = cls(_spawn(argv, env=env, cwd=cwd))
        p._thread = _READERS[p.popen.pid] = threading.Thread(target=p._read, daemon=True)
        p._thread.start()
        return p

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict[str, object]]:
        """JSON log events called ``name`` (honcho prefixes are skipped)."""
        out = []
        for line in list(self.lines):
            brace = line.find("{")
            if brace < 0 or f'"{name}"' not in line:
                continue
            try:
                ev = json.loads(line[brace:])
            except ValueError:
                continue
            if ev.get("event") == name:
                out.append(ev)
        return out

    def wait_lines(self, count: int, timeout_s: float = 5.0) -> list[str]:
        """The first ``count`` output lines once they arrived, or what there is at the deadline."""
        end = time.monotonic() + timeout_s
        while len(self.lines) < count and time.monotonic() < end:
            time.sleep(0.02)  # polling step, bounded by the deadline
        return self.lines[:count]

    def wait_events(self, name: str, count: int, timeout_s: float = 5.0) -> list[dict[str, object]]:
        """The ``name`` events once at least ``count`` arrived (the log reaches us through
        honcho and a reader thread), or what there is at the deadline."""
        end = time.monotonic() + timeout_s
        while len(found := self.events(name)) < count and time.monotonic() < end:
            time.sleep(0.05)  # polling step, bounded by the deadline
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 8.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            rc = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
            raise
        if self._thread is not None:
            self._thread.join(5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return rc

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Node:
    """A sipline node run by honcho from the repository's Procfile."""

    port: int
    conf: Path
    run_dir: Path
    proc: Proc
    #: killed on purpose (``kill``): nothing left to stop cleanly
    killed: bool = False

    @classmethod
    def start(cls, conf: Path, run_dir: Path, port: int, scale: str = "worker=2",
              wait: bool = True) -> Node:  # fmt: skip
        """The node once ready (``wait_ready``); ``wait=False``: at once, just spawned."""
        argv = [os.path.join(VENV_BIN, "honcho"), "-f", str(REPO / "Procfile"), "start",
                "-c", scale]  # fmt: skip
        proc = Proc.start(argv, env_for(conf), REPO)
        node = cls(port, conf, run_dir, proc)
        if not wait:
            return node
        try:
            node.wait_ready(_count(scale, "ingress"), _count(scale, "worker"))
        except BaseException:
            proc.stop(signal.SIGTERM)  # honcho stops its children; killpg if it hangs
            raise
        return node

    def wait_ready(self, ingresses: int, workers: int, deadline_s: float = 20.0) -> None:
        """Until an OPTIONS gets 200 over UDP and TCP and every ingress sees every worker."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.popen.poll() is not None:
                raise RuntimeError(f"node exited early:\n{self.proc.text()}")
            answer = options(self.port)
            if answer and answer.startswith(b"SIP/2.0 200") and options(self.port, "tcp"):
                seen: dict[str, int] = {}
                for e in self.proc.events("worker_joined"):
                    proc = str(e["proc"])
                    # the timers log worker_joined too (conf/pipe.py), and may see every
                    # worker before an ingress does: a call sent then lands on the workers
                    # the ingress knows, and a worker joining afterwards takes its BYE
                    if proc.startswith("ingress"):
                        seen[proc] = max(seen.get(proc, 0), int(str(e["workers"])))
                if sum(1 for n in seen.values() if n >= workers) >= ingresses:
                    return
            time.sleep(0.05)  # polling step, bounded by the deadline
        raise RuntimeError(f"node not ready within {deadline_s} s:\n{self.proc.text()[-4000:]}")

    def pid(self, proc: str) -> int:
        """The pid of one of the node's processes (``"worker.1"``), as honcho announced it."""
        m = re.search(rf"{re.escape(proc)} started \(pid=(\d+)\)", self.proc.text())
        assert m is not None, self.proc.text()[-2000:]
        return int(m.group(1))

    def kill(self) -> None:
        """SIGKILL every process of the node at once, honcho last (a node that dies)."""
        pids = _descendants(self.proc.popen.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone
        self.proc.stop(signal.SIGKILL)
        self.killed = True

    def stop(self) -> tuple[int, str]:
        """SIGTERM honcho (which stops every process) and return (rc, output)."""
        rc = self.proc.stop(signal.SIGTERM)
        return rc, self.proc.text()


def _descendants(root: int) -> list[int]:
    """Every live process under ``root`` (honcho puts each child in a session of its own, so
    a process group signal would miss them)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _count(scale: str, name: str) -> int:
    m = re.search(rf"{name}=(\d+)", scale)
    return int(m.group(1)) if m else 1


STOPPED = re.compile(r"(\S+) stopped \(rc=(-?\d+)\)")


def assert_clean_stop(rc: int, output: str) -> None:
    """Every process honcho ran exited 0 (not killed at honcho's 5 s mark)."""
    stopped = STOPPED.findall(output)
    assert stopped, output[-3000:]
    bad = [(name, code) for name, code in stopped if code != "0"]
    assert not bad, f"processes did not exit cleanly: {bad}\n{output[-3000:]}"
    assert "SIGKILL" not in output, output[-3000:]
    # honcho's own exit status after a SIGTERM is not 0 (it reports the signal); the children's is


# -- sipp ---------------------------------------------------------------------------------------


@dataclass
class SippResult:
    rc: int
    successful: int
    failed: int
    output: str


SCENARIOS = REPO / "tests" / "e2e" / "scenarios"


#: sipp's own scenarios by the name a test gives them: its built-in uas is kept only to show
#: what tests/e2e/scenarios/uas.xml (the e2e "uas") fixes
BUILTIN = {"uac": "uac", "builtin_uas": "uas"}


def _scenario(name: str) -> list[str]:
    """sipp's built-in ``uac`` (or ``builtin_uas``), or tests/e2e/scenarios/NAME.xml: "uas"
    is scenarios/uas.xml, the built-in's messages plus an answer to an INVITE copied after
    its 200, which the built-in takes for an unexpected message (see that file)."""
    if name in BUILTIN:
        return ["-sn", BUILTIN[name]]
    return ["-sf", str(SCENARIOS / f"{name}.xml")]


def sipp_uas(port: int, transport: str, workdir: Path, scenario: str = "uas",
             extra: tuple[str, ...] = ()) -> Proc:  # fmt: skip
    argv = ["sipp", *_scenario(scenario), "-i", LOCALHOST, "-p", str(port), "-t", transport,
            "-mp", str(free_media_port()), "-nostdin", "-buff_size", "4194304", *extra]  # fmt: skip
    return Proc.start(argv, dict(os.environ), workdir)


def sipp_uac(
    target_port: int, transport: str, calls: int, rate: int, workdir: Path,
    timeout_s: float = 120.0, scenario: str = "uac", local_port: int | None = None,
    service: str | None = None, extra: tuple[str, ...] = (), host: str = LOCALHOST,
) -> SippResult:  # fmt: skip
    """Run a sipp UAC to completion (bounded) and read its final statistics."""
    return UacRun.start(target_port, transport, calls, rate, workdir, timeout_s,
                        scenario, local_port, service, extra, host).wait()  # fmt: skip


@dataclass
class UacRun:
    """A sipp UAC running in the background."""

    popen: subprocess.Popen[str]
    stf: Path
    timeout_s: float
    #: with ``trace``: sipp's log of unexpected messages (-trace_err) and of every message
    #: sent and received (-trace_msg), so a failed call can be shown, not guessed at
    errors: Path | None = None
    messages: Path | None = None

    @classmethod
    def start(
        cls, target_port: int, transport: str, calls: int, rate: int, workdir: Path,
        timeout_s: float = 120.0, scenario: str = "uac", local_port: int | None = None,
        service: str | None = None, extra: tuple[str, ...] = (), host: str = LOCALHOST,
        trace: bool = False,
    ) -> UacRun:  # fmt: skip
        tag = uuid.uuid4().hex[:8]
        stf = workdir / f"uac-{tag}.csv"
        errors, messages = workdir / f"uac-{tag}-errors.log", workdir / f"uac-{tag}-messages.log"
        traced = ["-trace_err", "-error_file", str(errors),
                  "-trace_msg", "-message_file", str(messages)] if trace else []  # fmt: skip
        argv = [
            "sipp", *_scenario(scenario), f"{host}:{target_port}", "-i", LOCALHOST,
            *(["-s", service] if service else []),
            "-p", str(local_port or free_port()), "-mp", str(free_media_port()), "-t", transport,
            "-m", str(calls), "-r", str(rate), "-buff_size", "4194304", "-nostdin",
            "-trace_stat", "-fd", "1", "-stf", str(stf),
            "-timeout", f"{int(timeout_s)}s", "-timeout_error", *traced, *extra,
        ]  # fmt: skip
        if not trace:
            errors = messages = None
        return cls(_spawn(argv, cwd=workdir), stf, timeout_s, errors, messages)

    def unexpected(self, limit: int = 20000) -> str:
        """With ``trace``: sipp's error log, then every message sent or received on each call
        that log names (the unexpected message in its place in its call), at most ``limit``
        characters; "" without ``trace``."""
        if self.errors is None or self.messages is None:
            return ""
        errs = self.errors.read_text(errors="replace") if self.errors.exists() else ""
        ids = set(re.findall(r"Call-I[dD] '([^']+)'", errs))
        msgs = self.messages.read_text(errors="replace") if self.messages.exists() else ""
        blocks = re.split(r"\n(?=-{20,})", msgs)
        # sipp logs a sent message with its Call-ID header and a received one likewise
        calls = [b for b in blocks
                 if any(re.search(rf"(?im)^(call-id|i)\s*:\s*{re.escape(i)}\s*$", b)
                        for i in ids)]  # fmt: skip
        out = (f"sipp errors ({self.errors}):\n{errs[-limit // 2:]}\n"
               f"messages of {sorted(ids)} ({self.messages}):\n" + "\n".join(calls))
        return out[:limit]

    def wait(self) -> SippResult:
        try:
            out, _ = self.popen.communicate(timeout=self.timeout_s + 15)
        except subprocess.TimeoutExpired as exc:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.communicate(timeout=5)
            raise AssertionError(f"sipp did not finish within {self.timeout_s + 15} s") from exc
        ok, failed = read_stat(self.stf)
        return SippResult(self.popen.returncode, ok, failed, out[-3000:])

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.communicate(timeout=5)


def read_stat(stf: Path) -> tuple[int, int]:
    """(SuccessfulCall(C), FailedCall(C)) from the last line of a sipp -trace_stat file."""
    row = stat_row(stf)
    return int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"])


def stat_row(stf: Path) -> dict[str, str]:
    """The last line of a sipp -trace_stat file, by column (``TotalCallCreated``, ...)."""
    lines = [ln for ln in stf.read_text().splitlines() if ln.strip()]
    return dict(zip(lines[0].split(";"), lines[-1].split(";")))
