"""Pike blocks shared between the ingress processes of one node.

Rules:
1. Each ingress binds an XPUB at ``pike-<ident>.ipc`` in the run directory and one SUB that
   connects to every sibling's, found by scanning the run directory each heartbeat (as the
   workers find ingresses); a sibling whose file went away (or whose pid is gone) is
   disconnected.
2. A message is one msgpack frame ``[src, remaining_s, count]``: the remaining time, not the
   deadline, so no process has to trust another's clock reading. Only blocks an ingress
   measured itself are published; a block learnt from a sibling is never re-published, so
   nothing loops.
3. PUB/SUB drops what is published before a subscriber is connected (the slow joiner). The
   XPUB sees each subscription arrive and answers it by re-announcing every live block it
   measured (``on_join``), so a sibling started late, or restarted, learns them too.
4. A bad frame is counted and dropped; nothing a sibling sends can stop the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from conf import sockets

#: a block announcement is ~30 bytes; anything much larger is not one
MAX_FRAME = 512
#: blocks queued toward a slow sibling at most (each is tiny; a burst of blocks is rare)
HWM = 10_000

OnBlock = Callable[[str, float, int], None]


class PikeShare:
    def __init__(self, ctx: zmq.Context[Any], run_dir: str, ident: str, on_block: OnBlock,
                 on_join: Callable[[], None]) -> None:  # fmt: skip
        self.run_dir = run_dir
        self.ident = ident
        self.endpoint = sockets.endpoint(run_dir, "pike", ident)
        self.on_block = on_block
        self.on_join = on_join
        self.bad_frames = 0
        self._pub: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        self._pub.linger = 0
        self._pub.sndhwm = HWM
        # every subscription (not only the first for a topic) reaches us: one per sibling
        self._pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        self._pub.bind(self.endpoint)
        self._sub: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = HWM
        self._sub.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.peers: dict[str, str] = {}
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._pub.FD, self._drain)
        self._loop.add_reader(self._sub.FD, self._drain)
        self._loop.call_soon(self._drain)

    def refresh(self) -> None:
        """Connect to siblings that appeared, disconnect from those gone (each heartbeat)."""
        live = sockets.live_endpoints(self.run_dir, "pike")
        live.pop(self.ident, None)
        for ident, ep in live.items():
            if ident not in self.peers:
                self._sub.connect(ep)
                self.peers[ident] = ep
        for ident in [i for i in self.peers if i not in live]:
            try:
                self._sub.disconnect(self.peers.pop(ident))
            except zmq.ZMQError:
                pass  # already gone
        self._loop.call_soon(self._drain)  # zmq.FD is edge-triggered: look after changes

    def publish(self, src: str, remaining_s: float, count: int) -> None:
        try:
            self._pub.send(msgpack.packb([src, remaining_s, count]), zmq.NOBLOCK)
        except zmq.Again:
            pass  # a sibling that is not reading: it learns on its next join (rule 3)
        self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        pub, sub = self._pub, self._sub
        joined = False
        while int(pub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frame = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            joined = joined or frame[:1] == b"\x01"  # a subscription, not an unsubscription
        while int(sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._receive(frame)
        if joined:
            self.on_join()

    def _receive(self, frame: bytes) -> None:
        try:
            msg = msgpack.unpackb(frame, raw=False)
        except (ValueError, msgpack.UnpackException):  # the sender's problem (rule 4)
            msg = None
        if not (isinstance(msg, list) and len(msg) == 3 and isinstance(msg[0], str)
                and isinstance(msg[1], (int, float)) and isinstance(msg[2], int)):  # fmt: skip
            self.bad_frames += 1
            return
        self.on_block(msg[0], float(msg[1]), msg[2])

    def close(self) -> None:
        for s in (self._pub, self._sub):
            self._loop.remove_reader(s.FD)
            s.close(linger=0)
        sockets.unlink(self.endpoint)
