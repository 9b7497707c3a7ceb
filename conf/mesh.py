"""A PUB/SUB mesh among the processes of one role: this node's, and optionally peer nodes'.

Rules:
1. Each member binds an XPUB at ``<role>-<ident>.ipc`` in its run directory and has one SUB
   connected to every other live member's, found by scanning its own run directory and each
   peer run directory (``[stateplane] peers``) on every ``refresh`` (each heartbeat). A
   member whose socket file went away, or whose pid is gone, is disconnected. The ipc
   transport limits peers to nodes on the same host, as for the state plane.
2. Members are keyed by endpoint (the socket file's path), so two nodes whose processes have
   the same honcho name never collide.
3. PUB/SUB drops what is published before a subscriber is connected (the slow joiner). The
   XPUB sees every subscription arrive (``XPUB_VERBOSE``), and ``on_join`` is called once per
   drain that saw one, so the owner can re-announce what a newcomer must know.
4. A message is one frame of at most ``max_frame`` bytes (``MAXMSGSIZE``: a larger one
   disconnects its sender); the owner decodes and validates it. Publishing never blocks: to
   a member that does not read, the message is dropped (``dropped``).
5. Draining is bounded (``DRAIN_LIMIT`` per callback, then the loop's turn) and, since the
   FD is edge-triggered, looks again after every change.
6. A peer run directory is scanned only while ``conf.rundir.peer_problem`` finds nothing
   wrong with it (``conf/rundir.py`` rule 5): a directory another user could write, or
   created by someone else, would let him join the mesh. A refused one is skipped, its
   members dropped, and logged (``peer_dir_refused``, at most once per 10 s).
7. Peers given as ``tcp://`` are not run directories and are skipped here: the node's state
   plane relays the mesh to them (``stateplane/meshrelay.py``) and is itself a member, so
   every member reaches them through it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import zmq

from conf import rundir, sockets
from conf.guard import GUARD
from conf.refused import RefusalLog

#: messages read per callback before the loop gets its turn back
DRAIN_LIMIT = 1024

OnFrame = Callable[[bytes], None]


class Mesh:
    """One member of a ``role`` mesh (the module rules); the owner gives it meaning."""

    def __init__(self, ctx: zmq.Context[Any], role: str, run_dir: str, ident: str, *,
                 peer_dirs: tuple[str, ...] = (), on_frame: OnFrame,
                 on_join: Callable[[], None] | None = None, max_frame: int = 512,
                 hwm: int = 10_000) -> None:  # fmt: skip
        self.role, self.run_dir, self.ident = role, run_dir, ident
        self.peer_dirs = tuple(d for d in peer_dirs if not d.startswith("tcp://")  # rule 7
                               and os.path.abspath(d) != os.path.abspath(run_dir))
        self.endpoint = sockets.endpoint(run_dir, role, ident)
        self.on_frame, self.on_join = on_frame, on_join
        self.dropped = 0
        self._refused = RefusalLog("peer_dir_refused")
        #: connected members: endpoint -> name (the ident; ``<run_dir>:<ident>`` on a peer node)
        self.members: dict[str, str] = {}
        self._pub: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        self._pub.linger = 0
        self._pub.sndhwm = hwm
        self._pub.setsockopt(zmq.XPUB_VERBOSE, 1)  # every subscription, not the first per topic
        self._pub.setsockopt(zmq.MAXMSGSIZE, sockets.MAX_SEND_ONLY_BYTES)  # subscriptions only
        sockets.bind(self._pub, self.endpoint)
        self._sub: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        self._sub.linger = 0
        self._sub.rcvhwm = hwm
        self._sub.setsockopt(zmq.MAXMSGSIZE, max_frame)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._loop = asyncio.get_running_loop()
        self._reader = GUARD.add_reader(self._loop, self._sub.FD, f"mesh_{role}", self._drain)
        self._loop.add_reader(self._pub.FD, self._reader)

    def live(self) -> dict[str, str]:
        """Every live member but this one: endpoint -> name (rule 2)."""
        found: dict[str, str] = {}
        for run_dir in (self.run_dir, *self.trusted_peer_dirs()):
            for ident, ep in sockets.live_endpoints(run_dir, self.role).items():
                found[ep] = ident if run_dir == self.run_dir else f"{run_dir}:{ident}"
        found.pop(self.endpoint, None)
        return found

    def trusted_peer_dirs(self) -> list[str]:
        """The peer run directories that may be used now (rule 6)."""
        out = []
        for d in self.peer_dirs:
            problem = rundir.peer_problem(d, self.run_dir)
            if problem is None:
                out.append(d)
            elif problem != rundir.MISSING:
                self._refused.note(self._loop.time(), role=self.role, peer=d, problem=problem)
        return out

    def refresh(self) -> None:
        """Connect to members that appeared, disconnect from those gone (each heartbeat)."""
        live = self.live()
        for ep, name in live.items():
            if ep not in self.members:
                self._sub.connect(ep)
                self.members[ep] = name
        for ep in [e for e in self.members if e not in live]:
            del self.members[ep]
            try:
                self._sub.disconnect(ep)
            except zmq.ZMQError:
                pass  # already gone
        self._loop.call_soon(self._reader)  # rule 5

    def publish(self, frame: bytes) -> bool:
        """Send ``frame`` to every member subscribed; False if it was dropped (rule 4)."""
        try:
            self._pub.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        finally:
            self._loop.call_soon(self._reader)
        return True

    def resubscribe(self) -> None:
        """Make every member we are connected to see our subscription again, so its owner
        re-announces what a newcomer must know (rule 3): the relay does this when a peer
        node's relay joins (``stateplane/meshrelay.py``)."""
        self._sub.setsockopt(zmq.UNSUBSCRIBE, b"")
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")

    def _drain(self) -> None:
        pub, sub = self._pub, self._sub
        if pub.closed:
            return
        joined = False
        budget = DRAIN_LIMIT
        while budget > 0 and int(pub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frame = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            budget -= 1
            joined = joined or frame[:1] == b"\x01"  # a subscription, not an unsubscription
        while budget > 0 and int(sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                frame = sub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            budget -= 1
            self.on_frame(frame)
        if joined and self.on_join is not None:
            self.on_join()
        if budget <= 0:
            self._loop.call_soon(self._reader)

    def close(self) -> None:
        for s in (self._pub, self._sub):
            if not s.closed:
                self._loop.remove_reader(s.FD)
                s.close(linger=0)
        sockets.unlink(self.endpoint)
