"""ZeroMQ sockets as every sipline process opens them: one helper per role.

Every socket gets a small linger (a process must exit well inside honcho's 5 s) and an
explicit high-water mark, so no pipe buffers without limit. Endpoints are ipc:// files in the
node's run directory, named ``<role>-<id>.ipc``; a process removes its own file on exit and
whoever finds a stale one (its pid is gone) removes it at start.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq

LINGER_MS = 200
#: a batch is at most max_batch SIP messages of a few KB; cap what a peer can make us allocate
MAX_MSG_BYTES = 64 << 20
#: what a socket that only sends (PUSH, PUB, XPUB) may read: a subscription, or nothing. Every
#: socket sets ZMQ_MAXMSGSIZE; a frame over it makes libzmq drop the connection that sent it
MAX_SEND_ONLY_BYTES = 1 << 10


def endpoint(run_dir: str, role: str, ident: str) -> str:
    return f"ipc://{run_dir}/{role}-{ident}.ipc"


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


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _base(sock: zmq.Socket[bytes], hwm: int, max_bytes: int) -> zmq.Socket[bytes]:
    sock.linger = LINGER_MS
    sock.sndhwm = hwm
    sock.rcvhwm = hwm
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    return sock


def bind_pull(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, hwm: int) -> zmq.Socket[bytes]:
    Path(endpoint_path(ep)).parent.mkdir(parents=True, exist_ok=True)
    sock = _base(ctx.socket(zmq.PULL), hwm, MAX_MSG_BYTES)
    sock.bind(ep)
    return sock


def connect_push(ctx: zmq.Context[zmq.Socket[bytes]], ep: str, hwm: int) -> zmq.Socket[bytes]:
    sock = _base(ctx.socket(zmq.PUSH), hwm, MAX_SEND_ONLY_BYTES)
    # Messages to a peer that is gone must not queue forever waiting for it to come back.
    sock.setsockopt(zmq.IMMEDIATE, 1)
    sock.connect(ep)
    return sock


def unlink(ep: str) -> None:
    """Remove the socket file of an ipc:// endpoint we bound."""
    Path(endpoint_path(ep)).unlink(missing_ok=True)
