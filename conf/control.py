"""The control channel: ``sipline ctl`` asks running processes, each answers for itself.

Rules:
1. A process that answers binds a ROUTER at ``ctl-<ident>.ipc`` in the run directory and
   serves it from the event loop (``add_reader`` on ``zmq.FD``, drained with NOBLOCK, as the
   hop does). A request is ``[client, b"", msgpack {"cmd": str, "args": map}]``; the reply is
   ``[client, b"", msgpack {"ok": bool, "proc": ident, ...}]`` (circus's ``ok()/error()``).
2. An unknown command or a handler that raises gets ``{"ok": false, "error": ...}`` (a
   failing handler is logged at most once per 10 s, ``conf.refused``); a bad
   frame is dropped. Nothing a client sends can stop the process.
3. The client (``ask``) sends one request to every live ``ctl-*.ipc`` and gathers replies
   until all have answered or the deadline passes; a process that does not answer is listed
   as such, not waited for.
4. Who may ask is decided by the file system, as for a Unix daemon's admin socket: the
   socket is 0600 (0660 with ``[node] run_group``) in the private run directory
   (``conf.rundir``), so only the node's user (and that group) can open it. There is no other
   credential; every verb, ``failback`` and ``sync`` included, trusts whoever connects.
5. A handler may answer with a future (``Handler``): the reply is sent when it is done, and
   other requests are served meanwhile; an exception in it is answered as in rule 2.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import zmq

from conf import sockets
from conf.refused import RefusalLog

if TYPE_CHECKING:
    import asyncio

#: a handler answers at once (a dict), or later (a future of it: work done off the loop, as a
#: reload's reading of big tables, rule 5)
Handler = Callable[[dict[str, Any]], "dict[str, Any] | asyncio.Future[dict[str, Any]]"]
#: a request or reply larger than this is refused (msgpack README, "Security")
MAX_FRAME = 1 << 20
#: a reply lists at most a bounded number of dialogs or destinations (``ctl dialogs --list``)
MAX_REPLY = 64 << 20
#: a failing handler is logged with a bound: a client in a loop must not flood the log
FAILED = RefusalLog("control_failed")


class ControlServer:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], run_dir: str, ident: str,
                 handlers: dict[str, Handler]) -> None:  # fmt: skip
        self.ident = ident
        self.endpoint = sockets.endpoint(run_dir, "ctl", ident)
        self.handlers = handlers
        # the processes' side only: the client (``ask``, every ``sipline`` command) runs no
        # loop, and asyncio is a third of a command's start-up it would not use
        import asyncio

        from conf.guard import GUARD

        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        sockets.bind(self._sock, self.endpoint)  # its mode is the credential (rule 4)
        self._loop = asyncio.get_running_loop()
        self._reader = GUARD.add_reader(self._loop, self._sock.FD, "control", self._on_readable)

    def _on_readable(self) -> None:
        sock = self._sock
        while int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 3 or len(frames[2]) > MAX_FRAME:
                continue
            reply = self._answer(frames[2])
            if isinstance(reply, dict):
                self._send(frames[0], reply)
            else:
                reply.add_done_callback(functools.partial(self._answer_later, frames[0]))

    def _send(self, client: bytes, reply: dict[str, Any]) -> None:
        if self._sock.closed:
            return  # a later answer after close(): the client times out, as for a dead process
        try:
            self._sock.send_multipart([client, b"", msgpack.packb(reply, default=str)],
                                      zmq.NOBLOCK)  # fmt: skip
        except zmq.ZMQError:
            pass  # the client went away

    def _answer_later(self, client: bytes, fut: asyncio.Future[dict[str, Any]]) -> None:
        """Rule 5: the reply of a handler that answered with a future."""
        if fut.cancelled():
            self._send(client, {"ok": False, "proc": self.ident, "error": "cancelled"})
        elif (exc := fut.exception()) is not None:
            FAILED.note(time.monotonic(), error=repr(exc))
            self._send(client, {"ok": False, "proc": self.ident,
                                "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
        else:
            self._send(client, {"ok": True, "proc": self.ident, **fut.result()})

    def _answer(self, data: bytes) -> dict[str, Any] | asyncio.Future[dict[str, Any]]:
        try:
            req = msgpack.unpackb(data, raw=False, strict_map_key=True)  # size checked above
            cmd, args = str(req["cmd"]), dict(req.get("args") or {})
        except Exception:  # noqa: BLE001 - any bad request is the client's problem (rule 2)
            return {"ok": False, "proc": self.ident, "error": "bad request"}
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "proc": self.ident, "error": f"unknown command {cmd!r}"}
        try:
            out = handler(args)
            return {"ok": True, "proc": self.ident, **out} if isinstance(out, dict) else out
        except Exception as exc:  # noqa: BLE001 - a handler bug costs one answer (rule 2)
            FAILED.note(time.monotonic(), cmd=cmd, error=repr(exc), exc_info=True)
            return {"ok": False, "proc": self.ident, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        self._reader.remove()
        self._sock.close(linger=0)
        sockets.unlink(self.endpoint)


def ask(run_dir: str, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 1.0,
        ) -> tuple[list[dict[str, Any]], list[str]]:  # fmt: skip
    """Send ``cmd`` to every live process of the node: (replies, idents that did not answer)."""
    targets = sockets.live_endpoints(run_dir, "ctl")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    socks: dict[zmq.Socket[bytes], str] = {}
    replies: list[dict[str, Any]] = []
    try:
        poller = zmq.Poller()
        payload = msgpack.packb({"cmd": cmd, "args": args or {}})
        for ident, ep in targets.items():
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY)
            s.connect(ep)
            s.send_multipart([b"", payload])
            socks[s] = ident
            poller.register(s, zmq.POLLIN)
        end = time.monotonic() + timeout_s
        while socks and (left := end - time.monotonic()) > 0:
            for s, _ in poller.poll(int(left * 1000) + 1):
                frames = s.recv_multipart()
                replies.append(msgpack.unpackb(frames[-1], raw=False))
                poller.unregister(s)
                socks.pop(s)
                s.close()
        return replies, sorted(socks.values())
    finally:
        for s in socks:
            s.close()
        ctx.term()
