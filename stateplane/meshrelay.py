"""The cluster meshes across hosts: the state plane relays the node's ``pike``, ``profiles``
and ``ratelimit`` meshes (``conf/mesh.py``) to the ``tcp://`` peers, over ZeroMQ CURVE
(``docs/security.md`` "Network peers of the state plane").

Rules:
1. Locally the relay is one more member of each relayed mesh (``stateplane/meshcross.py``
   rule 1): an XPUB at ``<role>-stateplane-<pid>.ipc`` that the node's ingresses or workers
   find and subscribe to, and a SUB to each of theirs. A frame one of them publishes goes
   out on the relay's TCP XPUB as ``[role, frame]``; a frame from a peer's relay is
   published on the local mesh. The relay never hears its own local frames (a member does
   not subscribe to itself) and the processes never re-publish what they learn, so nothing
   loops; every node lists every other, so nothing needs a second hop.
2. Over TCP: one XPUB bound at ``[stateplane] bind`` port + 2, a CURVE server behind the
   state plane's ZAP allow-list (only the ``[[peer]]`` keys get a subscription in; a
   stranger's handshake is refused and counted as ``curve_refused``), and per ``tcp://``
   peer one SUB connected to that peer's port + 2 that talks only to that peer's
   ``[[peer]]`` key. A frame is therefore known to come from the peer of the SUB it arrived
   on, and ``meshcross.verdict`` checks what it claims against that peer's name before it
   is handed on; a refused frame is counted by reason and dropped.
3. Newcomers (the slow joiner): a subscription reaching our TCP XPUB (a peer's relay
   joined) makes the relay resubscribe to the local members (``Mesh.resubscribe``), whose
   owners then re-announce; a local member joining the relay makes it resubscribe to every
   peer's relay, which do the same on their side. A pike block measured anywhere therefore
   reaches a node started late; the other roles send their whole state every heartbeat.
   Subscriptions from the peers trigger that at most once per ``REJOIN_MIN_S`` per role (the
   last one is never lost: it is deferred), so a peer subscribing in a loop cannot make the
   node's processes re-announce in a loop.
4. Bounded: every socket has an HWM and a ``MAXMSGSIZE`` (a larger frame disconnects its
   sender), reads are drained ``DRAIN_LIMIT`` at a time from the loop, sends never block
   (a frame a slow peer cannot take is dropped and counted; the next full state repairs it).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from conf import curve, sockets
from conf.guard import GUARD
from conf.mesh import Mesh
from conf.settings import Settings
from stateplane import meshcross
from stateplane.peer import split_bind

log = structlog.get_logger()

#: frames read per callback before the loop gets its turn back
DRAIN_LIMIT = 1024
#: frames queued toward one peer's relay (full states come every heartbeat anyway)
HWM = 10_000
#: a subscription is a byte and a role name, but the CURVE handshake (a few hundred bytes)
#: is read under the same cap
MAX_SUBSCRIPTION_BYTES = sockets.MAX_SEND_ONLY_BYTES
#: a peer's subscriptions make the members re-announce at most this often per role (rule 3)
REJOIN_MIN_S = 0.5
#: a refused frame is logged once per this many of its reason
LOG_EVERY = 1000


class _PeerLink:
    """The SUB to one peer's relay (rule 2)."""

    __slots__ = ("endpoint", "heard", "name", "reader", "sock")

    def __init__(self, name: str, endpoint: str, sock: zmq.Socket[bytes]) -> None:
        self.name, self.endpoint, self.sock = name, endpoint, sock
        self.heard = 0
        self.reader: Any = None


class MeshRelay:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings,
                 keys: curve.KeyPair) -> None:  # fmt: skip
        """The caller has bound the ZAP handler already (``conf/curve.py`` rule 3)."""
        self.roles = meshcross.roles(settings)
        self.loop = asyncio.get_running_loop()
        self.counters: Counter[str] = Counter()
        ident = f"stateplane-{os.getpid()}"
        self.meshes = {role: Mesh(ctx, role, settings.node.run_dir, ident,
                                  on_frame=self._outbound(role), on_join=self._local_join(role),
                                  max_frame=meshcross.MAX_FRAME[role], hwm=HWM)
                       for role in self.roles}  # fmt: skip
        pub: zmq.Socket[bytes] = ctx.socket(zmq.XPUB)
        pub.linger = 0
        pub.sndhwm = HWM
        pub.setsockopt(zmq.XPUB_VERBOSE, 1)
        pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
        curve.serve_curve(pub, keys)
        host, port = split_bind(settings.stateplane.bind)
        pub.bind(f"tcp://{host}:{port + meshcross.RELAY_OFFSET}")
        self.pub = pub
        self._pub_reader = GUARD.add_reader(self.loop, pub.FD, "mesh_relay_pub", self._drain_pub)
        self.links: list[_PeerLink] = []
        #: when each role last asked its members to re-announce, and one pending (rule 3)
        self._rejoined: dict[str, float] = {}
        self._rejoin_later: dict[str, asyncio.TimerHandle] = {}
        max_in = max(meshcross.MAX_FRAME[r] for r in self.roles) if self.roles else 0
        for endpoint in meshcross.tcp_peers(settings):
            conf = curve.peer_of(settings, endpoint)
            key = None if conf is None else curve.peer_key(conf.public_key, conf.public_key_file)
            if conf is None or key is None:
                continue  # conf/checks/node.py refuses this; never talk to a peer we cannot verify
            self.links.append(self._link(ctx, conf.name, endpoint, keys, key, max_in))

    def _link(self, ctx: zmq.Context[zmq.Socket[bytes]], name: str, peer: str,
              keys: curve.KeyPair, server_key: bytes, max_in: int) -> _PeerLink:  # fmt: skip
        sock: zmq.Socket[bytes] = ctx.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = HWM
        sock.setsockopt(zmq.MAXMSGSIZE, max_in)
        curve.connect_curve(sock, keys, server_key)
        for role in self.roles:
            sock.setsockopt(zmq.SUBSCRIBE, role.encode())
        link = _PeerLink(name, meshcross.offset_endpoint(peer, meshcross.RELAY_OFFSET), sock)
        sock.connect(link.endpoint)
        link.reader = GUARD.add_reader(self.loop, sock.FD, "mesh_relay_in", lambda: self._drain_link(link))
        return link

    # -- local -> peers -------------------------------------------------------------------------

    def _outbound(self, role: str) -> Callable[[bytes], None]:
        topic = role.encode()

        def send(frame: bytes) -> None:
            try:
                self.pub.send_multipart([topic, frame], zmq.NOBLOCK)
                self.counters["sent"] += 1
            except zmq.Again:
                self.counters["dropped"] += 1  # rule 4
            self.loop.call_soon(self._pub_reader)

        return send

    def _local_join(self, role: str) -> Callable[[], None]:
        topic = role.encode()

        def joined() -> None:  # rule 3: ask every peer's members to re-announce
            for link in self.links:
                link.sock.setsockopt(zmq.UNSUBSCRIBE, topic)
                link.sock.setsockopt(zmq.SUBSCRIBE, topic)

        return joined

    def _drain_pub(self) -> None:
        """Subscriptions from the peers' relays (rule 3)."""
        pub = self.pub
        if pub.closed:
            return
        joined: set[str] = set()
        for _ in range(DRAIN_LIMIT):
            try:
                frame = pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if frame[:1] == b"\x01":
                joined.add(frame[1:].decode("ascii", "replace"))
        for role in joined:
            if role in self.meshes:
                self._rejoin(role)
        if joined:
            self.loop.call_soon(self._pub_reader)

    def _rejoin(self, role: str) -> None:
        """Rule 3, at most once per ``REJOIN_MIN_S`` per role: a peer that subscribes over and
        over gets one re-announcement per interval, not one per subscription."""
        if role in self._rejoin_later:
            return
        wait = self._rejoined.get(role, -REJOIN_MIN_S) + REJOIN_MIN_S - self.loop.time()
        if wait > 0:
            self._rejoin_later[role] = self.loop.call_later(wait, self._resubscribe, role)
        else:
            self._resubscribe(role)

    def _resubscribe(self, role: str) -> None:
        self._rejoin_later.pop(role, None)
        self._rejoined[role] = self.loop.time()
        self.meshes[role].resubscribe()
        self.counters["peer_joins"] += 1

    # -- peers -> local -------------------------------------------------------------------------

    def _drain_link(self, link: _PeerLink) -> None:
        sock = link.sock
        for _ in range(DRAIN_LIMIT):
            if sock.closed:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            why = "parts" if len(frames) != 2 else meshcross.verdict(frames[0], frames[1], link.name,
                                                                    self.roles)  # fmt: skip
            if why:
                self._refuse(link, why)
                continue
            link.heard += 1
            self.counters["received"] += 1
            self.meshes[frames[0].decode()].publish(frames[1])
        self.loop.call_soon(link.reader)

    def _refuse(self, link: _PeerLink, why: str) -> None:
        key = f"refused_{why}"
        self.counters[key] += 1
        if self.counters[key] % LOG_EVERY == 1:
            log.warning("mesh_frame_refused", peer=link.name, reason=why, count=self.counters[key])

    # -- upkeep ---------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Find the node's members (each heartbeat)."""
        for mesh in self.meshes.values():
            mesh.refresh()

    def stats(self) -> dict[str, Any]:
        return {"roles": list(self.roles), **self.counters, "rejoin_pending": len(self._rejoin_later),
                "peers": {ln.name: {"endpoint": ln.endpoint, "heard": ln.heard} for ln in self.links},
                "members": {r: sorted(m.members.values()) for r, m in self.meshes.items()}}  # fmt: skip

    def close(self) -> None:
        for handle in self._rejoin_later.values():
            handle.cancel()
        for link in self.links:
            link.reader.remove()
            link.sock.close(linger=0)
        if not self.pub.closed:
            self._pub_reader.remove()
            self.pub.close(linger=0)
        for mesh in self.meshes.values():
            mesh.close()
