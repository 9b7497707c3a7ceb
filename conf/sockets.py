"""ZeroMQ sockets as every sipline process opens them: one helper per role.

Every socket gets a small linger (a process must exit well inside honcho's 5 s) and an
explicit high-water mark, so no pipe buffers without limit. Endpoints are ipc:// files in the
node's run directory, named ``<role>-<id>.ipc``; a process removes its own file on exit and
whoever finds a stale one (its pid is gone) removes it at start.

Local users (docs/security.md "Local users"):
1. Every ipc:// socket is bound through ``bind``: its file is 0600 (0660 and the run
   directory's group when the directory is open to its group), never wider, even for an
   instant. The run directory (``conf.rundir``) is the real gate; this is the second fence.
2. An endpoint another process announces is used only when it is the canonical one,
   ``endpoint(run_dir, role, ident)`` for a well-formed ``ident`` (``canonical``): a frame
   cannot make us connect outside the run directory.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import zmq

LINGER_MS = 200
#: a batch is at most max_batch SIP messages of a few KB; cap what a peer can make us allocate
MAX_MSG_BYTES = 64 << 20
#: what a socket that only sends (PUSH, PUB, XPUB) may read: a subscription, or nothing. Every
#: socket sets ZMQ_MAXMSGSIZE; a frame over it makes libzmq drop the connection that sent it
MAX_SEND_ONLY_BYTES = 1 << 10


#: a process ident: honcho's process name and a pid (``worker.1-4242``), or a node name; no
#: ``/``, so an endpoint built from one is a file directly in the run directory (rule 2)
IDENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def endpoint(run_dir: str, role: str, ident: str) -> str:
    return f"ipc://{run_dir}/{role}-{ident}.ipc"


def valid_ident(ident: object) -> bool:
    """``ident`` may name a process (rule 2)."""
    return isinstance(ident, str) and IDENT_RE.fullmatch(ident) is not None


def canonical(run_dir: str, role: str, ident: object, ep: object) -> bool:
    """``ep`` is where the ``role`` process ``ident`` of this run directory listens (rule 2)."""
    return valid_ident(ident) and ep == endpoint(run_dir, role, str(ident))


def endpoint_path(ep: str) -> str:
    return ep.removeprefix("ipc://")


def list_endpoints(run_dir: str, role: str) -> dict[str, str]:
    """``{ident: endpoint}`` of every ``role`` socket file in ``run_dir``."""
    out: dict[str, str] = {}
    try:
        entries = os.scandir(run_dir)
    except FileNotFoundError:
        return out
    prefix = role + "-"
    with entries:
        for e in entries:
            if e.name.startswith(prefix) and e.name.endswith(".ipc"):
                out[e.name[len(prefix) : -4]] = f"ipc://{e.path}"
    return out


def live_endpoints(run_dir: str, role: str) -> dict[str, str]:
    """``list_endpoints`` without the files a killed process left behind (its pid is gone)."""
    found = list_endpoints(run_dir, role)
    return {i: ep for i, ep in found.items() if (pid := ident_pid(i)) is None or _alive(pid)}


def ident_pid(ident: str) -> int | None:
    """Process ids are the last ``-`` part of every ident (``ingress.1-4242``)."""
    tail = ident.rpartition("-")[2]
    return int(tail) if tail.isdigit() else None


def remove_stale(run_dir: str) -> list[str]:
    """Delete socket files whose owner process no longer exists; returns their names."""
    removed = []
    for role in ("ingress", "worker", "timers", "ctl", "pike", "ratelimit", "profiles"):
        for ident, ep in list_endpoints(run_dir, role).items():
            pid = ident_pid(ident)
            if pid is not None and not _alive(pid):
                Path(endpoint_path(ep)).unlink(missing_ok=True)
                removed.append(f"{role}-{ident}")
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def base(sock: zmq.Socket[bytes], hwm: int, max_bytes: int) -> zmq.Socket[bytes]:
    sock.linger = LINGER_MS
    sock.sndhwm = hwm
    sock.rcvhwm = hwm
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    return sock


def bind(sock: zmq.Socket[Any], ep: str) -> None:
    """Bind ``sock`` at ``ep``; an ipc:// file gets the mode of rule 1.

    The umask is narrowed around the bind, since libzmq creates the file inside
    ``zmq_bind`` in this thread; the chmod after it makes the mode exact whatever the umask
    was. Raises what ``sock.bind`` raises, and OSError when the file cannot be given its mode.
    """
    if not ep.startswith("ipc://"):
        sock.bind(ep)
        return
    path = endpoint_path(ep)
    st = os.stat(os.path.dirname(path) or ".")
    group = bool(stat.S_IMODE(st.st_mode) & 0o070)  # conf.rundir made it so for run_group
    mode = 0o660 if group else 0o600
    old = os.umask(0o777 & ~mode)
    try:
        sock.bind(ep)
    finally:
        os.umask(old)
    if group:
        os.chown(path, -1, st.st_gid)
    os.chmod(path, mode)


def bind_pull(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, hwm: int) -> zmq.Socket[bytes]:
    sock = base(ctx.socket(zmq.PULL), hwm, MAX_MSG_BYTES)
    bind(sock, ep)
    return sock


def connect_push(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, hwm: int,
                 immediate: bool = True) -> zmq.Socket[bytes]:  # fmt: skip
    """``immediate=False`` queues (up to ``hwm``) while the connection is made: only for a
    peer whose socket file was just seen and whose socket is closed when it goes."""
    sock = base(ctx.socket(zmq.PUSH), hwm, MAX_SEND_ONLY_BYTES)
    # Messages to a peer that is gone must not queue forever waiting for it to come back.
    sock.setsockopt(zmq.IMMEDIATE, int(immediate))
    sock.connect(ep)
    return sock


def unlink(ep: str) -> None:
    """Remove the socket file of an ipc:// endpoint we bound."""
    Path(endpoint_path(ep)).unlink(missing_ok=True)
