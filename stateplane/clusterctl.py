"""The cluster's read-only control views: the state plane answers ``sipline ctl ... --cluster``
asked from a peer node over ZeroMQ CURVE (``docs/monitoring.md`` "The whole cluster").

Rules:
1. A ROUTER at ``[stateplane] bind`` port + 3 (``meshcross.CONTROL_OFFSET``), a CURVE server
   behind the state plane's ZAP allow-list: only the ``[[peer]]`` keys connect. A request
   is ``[client, b"", msgpack {"cmd": str, "args": map}]`` as on the local control channel
   (``conf/control.py``), and only the read-only verbs of ``VERBS`` are served: a peer may
   look, never ``sync`` or ``failback`` (those stay with the node's own user).
2. An answer asks the node's own processes over their local control sockets
   (``conf.control.ask``, in a thread: it blocks while it gathers) and replies ``{"ok":
   true, "node": <our name>, "replies": [...], "silent": [...]}``. At most ``MAX_BUSY``
   answers are gathered at once; a request past that gets ``{"ok": false, "error":
   "busy"}`` at once. ``dialogs``' ``list`` is capped at ``MAX_LIST``.
3. Bounded: requests larger than ``MAX_REQUEST`` disconnect their sender (``MAXMSGSIZE``),
   replies are sent with NOBLOCK (a client gone or not reading loses its answer), and a bad
   request gets ``{"ok": false, "error": "bad request"}``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgpack
import structlog
import zmq

from conf import curve
from conf.control import ask
from conf.guard import GUARD
from conf.settings import Settings
from stateplane import meshcross
from stateplane.peer import split_bind

log = structlog.get_logger()

#: what a peer may ask (rule 1)
VERBS = frozenset({"stats", "destinations", "dialogs", "pike", "ratelimit"})
#: answers being gathered at once (each holds a thread for up to ``ASK_TIMEOUT_S``)
MAX_BUSY = 2
#: a request is a verb and a number
MAX_REQUEST = 1 << 10
#: dialogs listed per worker at most in one answer
MAX_LIST = 1000
#: how long the node's processes get to answer
ASK_TIMEOUT_S = 1.0


def parse_request(data: bytes) -> tuple[str, dict[str, Any]] | None:
    """``(cmd, args)`` of a request the rules allow, or None (rules 1-2)."""
    try:
        req = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(req, dict) or req.get("cmd") not in VERBS:
        return None
    args = req.get("args") or {}
    if not isinstance(args, dict):
        return None
    listed = args.get("list", 0)
    if type(listed) is not int or listed < 0:
        return None
    return str(req["cmd"]), ({"list": min(listed, MAX_LIST)} if listed else {})


class ClusterControl:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings,
                 keys: curve.KeyPair) -> None:  # fmt: skip
        """The caller has bound the ZAP handler already (``conf/curve.py`` rule 3)."""
        self.run_dir, self.node = settings.node.run_dir, settings.node.name
        self.loop = asyncio.get_running_loop()
        self.counters: Counter[str] = Counter()
        self.busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        sock: zmq.Socket[bytes] = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 100
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST)
        curve.serve_curve(sock, keys)
        host, port = split_bind(settings.stateplane.bind)
        sock.bind(f"tcp://{host}:{port + meshcross.CONTROL_OFFSET}")
        self.sock = sock
        self._reader = GUARD.add_reader(self.loop, sock.FD, "cluster_control", self._drain)

    def _drain(self) -> None:
        sock = self.sock
        for _ in range(64):
            if sock.closed:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            req = parse_request(frames[2]) if len(frames) == 3 and frames[1] == b"" else None
            if req is None:
                self.counters["bad_request"] += 1
                self._reply(frames[0], {"ok": False, "node": self.node, "error": "bad request"})
            elif self.busy >= MAX_BUSY:
                self.counters["busy"] += 1
                self._reply(frames[0], {"ok": False, "node": self.node, "error": "busy"})
            else:
                self.busy += 1
                task = self.loop.create_task(self._answer(frames[0], *req))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        self.loop.call_soon(self._reader)

    async def _answer(self, client: bytes, cmd: str, args: dict[str, Any]) -> None:
        try:
            replies, silent = await asyncio.to_thread(ask, self.run_dir, cmd, args, ASK_TIMEOUT_S)
            self.counters["answered"] += 1
            self._reply(client, {"ok": True, "node": self.node, "replies": replies, "silent": silent})
        except Exception as exc:  # a node whose run directory went away answers so  # noqa: BLE001
            log.warning("cluster_control_failed", cmd=cmd, error=str(exc)[:200])
            self._reply(client, {"ok": False, "node": self.node, "error": type(exc).__name__})
        finally:
            self.busy -= 1

    def _reply(self, client: bytes, body: dict[str, Any]) -> None:
        if self.sock.closed:
            return
        try:
            self.sock.send_multipart([client, b"", msgpack.packb(body, default=str)], zmq.NOBLOCK)
        except zmq.ZMQError:
            self.counters["reply_dropped"] += 1  # rule 3

    def stats(self) -> dict[str, int]:
        return {"busy": self.busy, **self.counters}

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if not self.sock.closed:
            self._reader.remove()
            self.sock.close(linger=0)
