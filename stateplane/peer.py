"""One peer node as the state plane replicates it: its replica and the two sockets it is fed
from (``stateplane/replication.py`` rules 3, 6, 7, 8 and 9), and the bounded socket reader both
files use.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import zmq

from conf import curve, rundir
from conf import envelope as env
from conf.guard import GUARD
from conf.pipe import recv_frames
from conf.refused import RefusalLog
from dialogstate.record import RECORD
from stateplane import updates as up
from stateplane.replica import (
    Event,
    PeerBack,
    PeerSilent,
    Replica,
    Resnapshot,
    Resynced,
    StaleRefused,
)
from stateplane.snapshot import collector_paused
from timers.lateness import LatenessWindow

if TYPE_CHECKING:
    from stateplane.replication import Replication

log = structlog.get_logger()

_get = zmq.backend.Socket.get
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: messages handled per reader callback before the loop gets its turn back
DRAIN_LIMIT = 256
#: updates a slow subscriber may have queued before ZeroMQ drops them (it then sees a gap)
PUB_HWM = 100_000
#: snapshot messages in flight to one asker (each up to ~0.5 MB): small, so an asker that
#: stops reading holds little (``stateplane/asks.py`` rule 3)
SNAP_HWM = 8
#: reader errors logged in full: the first, then one in this many (a bug a peer can trigger
#: repeatedly must not flood the log)
ERROR_LOG_EVERY = 1000
#: where a delta carries the wall time of the event it reports (rule 6): the call's start
#: in "c" (op + RECORD), the answer in "a" (op, call-id, from-tag, to-tag, To, target, route)
_EVENT_WALL = {"c": 1 + RECORD.index("start"), "a": 7}


def split_bind(text: str) -> tuple[str, int]:
    """``"192.0.2.1:7400"`` or ``"[2001:db8::1]:7400"`` as (host for a tcp:// URL, port)."""
    host, _, port = text.rpartition(":")
    return host, int(port)


def peer_endpoints(peer: str) -> tuple[str, str]:
    """Rule 7: the PUB and ROUTER endpoints of a peer given as a run directory (ipc) or as
    ``tcp://host:port`` (its ``bind``: PUB on the port, ROUTER on the next)."""
    if peer.startswith("tcp://"):
        host, port = split_bind(peer.removeprefix("tcp://"))
        return peer, f"tcp://{host}:{port + 1}"
    return f"ipc://{peer}/{env.STATEPLANE_PUB}", f"ipc://{peer}/{env.STATEPLANE_SNAP}"


class Reader:
    """Drain ``sock`` into ``on_frames`` from the loop (edge-triggered FD, rule 5); nothing
    ``on_frames`` raises leaves the reader (counted in ``errors``). ``copy=False`` hands
    ``zmq.Frame``s, whose ``get("User-Id")`` names a CURVE peer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: zmq.Socket[bytes],
                 on_frames: Callable[[list[Any]], None], copy: bool = True) -> None:  # fmt: skip
        self.loop, self.sock, self.on_frames, self.copy = loop, sock, on_frames, copy
        self.errors = 0
        self._reader = GUARD.add_reader(loop, sock.FD, "stateplane_reader", self.drain)

    def drain(self) -> None:
        if self.sock.closed:
            return
        sock, copy = self.sock, self.copy
        for _ in range(DRAIN_LIMIT):
            # EVENTS both ends the drain without the cost of a zmq.Again raised and caught
            # (a quarter of the mirror's reader, measured) and re-arms the edge-triggered FD;
            # read, like the frames, through the Cython methods (conf/pipe.py rule 4)
            if not int(_get(sock, _EVENTS)) & _POLLIN:
                return
            try:
                frames = recv_frames(sock) if copy else sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:  # kept for safety: EVENTS said there was one
                return
            try:
                self.on_frames(frames)
            except Exception:  # a bug, maybe one a peer can trigger: it costs this message only
                self.errors += 1
                if self.errors % ERROR_LOG_EVERY == 1:
                    log.exception("reader_failed", errors=self.errors)
        self.loop.call_soon(self._reader)

    def close(self) -> None:
        if not self.sock.closed:
            self._reader.remove()
            self.sock.close(linger=0)


class Peer:
    """One peer node's replica and the two sockets it is fed from (rule 3). ``node`` is the
    name its ``[[peer]]`` gives it (None: learnt from the first message, then held); a
    ``server_key`` makes a tcp:// peer a CURVE server we accept only with that key (rule 8)."""

    def __init__(self, owner: Replication, run_dir: str, node: str | None = None,
                 server_key: bytes | None = None) -> None:  # fmt: skip
        self.owner, self.run_dir, self.node = owner, run_dir, node
        ctx, loop = owner.ctx, owner.loop
        pub_ep = peer_endpoints(run_dir)[0]
        sub = ctx.socket(zmq.SUB)
        sub.linger, sub.rcvhwm = 0, PUB_HWM
        sub.setsockopt(zmq.MAXMSGSIZE, up.MAX_UPDATE_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger, dealer.sndhwm, dealer.rcvhwm = 0, 16, SNAP_HWM
        dealer.setsockopt(zmq.MAXMSGSIZE, up.MAX_FRAME_BYTES)
        keys = owner.keys
        #: a configured peer that must prove its key: what it announces may be used
        #: (``conf/discovery.py`` rule 2)
        self.authenticated = False
        if keys is not None and server_key is not None and pub_ep.startswith("tcp://"):
            for sock in (sub, dealer):
                curve.connect_curve(sock, keys, server_key)
            self.authenticated = node is not None
        self.sub, self.dealer = sub, dealer
        #: connected to the peer's sockets: at once for tcp://, for a run directory once it
        #: exists and passes conf.rundir.peer_problem (rule 9)
        self.connected = False
        self._refused = RefusalLog("peer_dir_refused")
        self.replica: Replica | None = None
        self.asked_at = 0.0
        self.synced_s = 0.0
        self.counters: Counter[str] = Counter()
        #: replication lag (rule 6): from the worker's event to its delta heard here
        self.lag = LatenessWindow()
        self.readers = [Reader(loop, sub, self._on_pub), Reader(loop, dealer, self._on_snap)]
        self.connect()

    def connect(self) -> None:
        """Connect to the peer's PUB and ROUTER if not yet done and its run directory may be
        used (rule 9); called at start and every heartbeat."""
        if self.connected:
            return
        if not self.run_dir.startswith("tcp://"):
            problem = rundir.peer_problem(self.run_dir, self.owner.settings.node.run_dir)
            if problem is not None:
                if problem != rundir.MISSING:
                    self.counters["peer_dir_refused"] += 1
                    self._refused.note(self.owner.loop.time(), role="stateplane",
                                       peer=self.run_dir, problem=problem)  # fmt: skip
                return
        pub_ep, snap_ep = peer_endpoints(self.run_dir)
        self.sub.connect(pub_ep)
        self.dealer.connect(snap_ep)
        self.connected = True

    def _decode(self, frames: list[bytes]) -> up.Message | None:
        try:
            return up.unpack(frames)
        except up.UpdateError as exc:
            self.counters["bad_message"] += 1
            if self.counters["bad_message"] % ERROR_LOG_EVERY == 1:
                log.warning("replica_bad_message", peer=self.run_dir, reason=str(exc)[:200],
                            count=self.counters["bad_message"])  # fmt: skip
            return None

    def _from_peer(self, node: str) -> bool:
        """Rule 8: ``node`` is the name this peer must say; anything else is counted and
        dropped. Without a ``[[peer]]`` the first name heard is held (never our own)."""
        if self.node is None and node != self.owner.publisher.node:
            self.node = node
        if node == self.node:
            return True
        self.counters["wrong_node"] += 1
        if self.counters["wrong_node"] % ERROR_LOG_EVERY == 1:
            log.warning("replica_wrong_node", peer=self.run_dir, expected=self.node,
                        claimed=node[:64], count=self.counters["wrong_node"])  # fmt: skip
        return False

    def _on_pub(self, frames: list[bytes]) -> None:
        msg = self._decode(frames)
        if isinstance(msg, up.Ingresses):  # conf/discovery.py rule 2
            if self._from_peer(msg.node):
                self.owner.finder.receive(self.node, self.authenticated, msg, self.owner.loop.time())
            return
        if isinstance(msg, up.Keep):  # handover.py rule 8: the name its key proved, or None
            if self._from_peer(msg.node):
                self.owner.handover.note_host_keep(self.node if self.authenticated else None,
                                                   msg, self.owner.loop.time())  # fmt: skip
            return
        if not isinstance(msg, (up.Update, up.Hugz)) or not self._from_peer(msg.node):
            return
        now, wall = self.owner.loop.time(), time.time()
        if isinstance(msg, up.Hugz) and self.owner.failover is not None:
            self.owner.failover.peer_hugz(msg, now)
        if self.replica is None:  # rule 3: hearing the peer proves the subscription live
            self.replica = Replica(msg.node, self.owner.make_table,
                                   heartbeat_s=self.owner.heartbeat_s, now=now)  # fmt: skip
            self.act(self.replica.start(now))
        if isinstance(msg, up.Update):
            at = _EVENT_WALL.get(msg.payload[0]) if msg.payload else None
            if at is not None and isinstance(t := msg.payload[at], float) and t:
                self.lag.add(max(0.0, wall - t))
        self.act(self.replica.receive(msg, now, wall))

    def _on_snap(self, frames: list[bytes]) -> None:
        with collector_paused():  # rule 4
            msg = self._decode(frames)
            if (self.replica is None or not isinstance(msg, (up.Update, up.Chunk, up.Kthxbai))
                    or not self._from_peer(msg.node)):  # fmt: skip
                return
            events = self.replica.receive_snapshot(msg, self.owner.loop.time(), time.time())
        self.act(events)

    def resync(self) -> None:
        """Ask the peer for a whole new snapshot (``sipline ctl sync``)."""
        if self.replica is not None:
            self.act(self.replica.start(self.owner.loop.time()))

    def tick(self) -> None:
        self.connect()
        if self.replica is not None:
            self.act(self.replica.handle_timer(self.owner.loop.time()))

    def act(self, events: list[Event]) -> None:
        now = self.owner.loop.time()
        peer = self.replica.node if self.replica is not None else self.run_dir
        for ev in events:
            if isinstance(ev, Resnapshot):
                if ev.reason in ("gap", "new_epoch", "behind", "bad_delta"):
                    log.warning("replica_gap", peer=peer, reason=ev.reason)
                self.asked_at = now
                try:
                    self.dealer.send_multipart(up.pack(ev.ask), zmq.NOBLOCK)
                except zmq.Again:  # the peer is gone: the sync timeout asks again
                    self.counters["ask_dropped"] += 1
            elif isinstance(ev, Resynced):
                self.synced_s = now - self.asked_at
                dialogs = len(self.replica.table) if self.replica is not None else 0
                log.info("replica_synced", peer=peer, dialogs=dialogs, full=ev.full,
                         records=ev.records, seq=ev.seq, seconds=round(self.synced_s, 3))  # fmt: skip
                if ev.full:
                    gc.freeze()  # rule 4: the replica's dialogs leave every later GC scan
                self.owner.peer_synced(self)
            elif isinstance(ev, StaleRefused):
                self.counters["stale_refused"] += 1
                log.warning("replica_stale_refused", peer=peer, epoch=ev.epoch, seq=ev.seq,
                            held_epoch=ev.held_epoch)  # fmt: skip
            elif isinstance(ev, PeerSilent):
                log.warning("replica_peer_silent", peer=peer)
            elif isinstance(ev, PeerBack):
                log.info("replica_peer_back", peer=peer)

    def stats(self) -> dict[str, Any]:
        r = self.replica
        if r is None:
            return {"run_dir": self.run_dir, "node": None, "dialogs": 0, "heard": False}
        return {"run_dir": self.run_dir, "node": r.node, "dialogs": len(r.table),
                "early": r.table.stats()["early"], "epoch": r.epoch, "seq": r.seq,
                "syncing": r.syncing, "alive": r.alive, "last_sync_s": round(self.synced_s, 3),
                "heard": True, **r.counters, **self.counters}  # fmt: skip

    def lag_summary(self) -> dict[str, float | int]:
        """Rule 6, for the stats interval that ends now: ``{updates, p50_ms, p99_ms, max_ms}``."""
        s = self.lag.summary_ms()
        return {"updates": s["fired"], "p50_ms": s["late_p50_ms"], "p99_ms": s["late_p99_ms"],
                "max_ms": s["late_max_ms"]}  # fmt: skip

    def close(self) -> None:
        for r in self.readers:
            r.close()
