"""The worker's end of shared call limits: ``workers/profileshare.py`` over ZeroMQ.

Rules:
1. The other workers are found as every process finds them, by their socket files: this
   node's run directory, and with ``[dialogs] profiles_cluster`` each ``[stateplane] peers``
   run directory, re-read every heartbeat. A ``PROFILES`` envelope goes to each worker's own
   PULL (the one ingresses and timers push to), so nothing new is bound.
2. Sends never block: a worker's pipe that cannot take a message now loses it (counted),
   and the next full state, a heartbeat later, repairs what it missed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import zmq

from conf import envelope as env
from conf import sockets
from conf.settings import Settings
from workers.profiles import Profiles
from workers.profileshare import CHUNK, ProfileShare

#: heartbeats of silence after which a sender's counts are forgotten
LIVENESS = 3


class SharedLimits:
    def __init__(self, ctx: zmq.Context[Any], settings: Settings, ident: str,
                 profiles: Profiles) -> None:  # fmt: skip
        self.ctx, self.ident, self.node = ctx, ident, settings.node.name
        self.hwm = settings.bus.hwm
        self.run_dirs = [settings.node.run_dir]
        if settings.dialogs.profiles_cluster:
            self.run_dirs += settings.stateplane.peers
        self.share = ProfileShare(profiles, timeout_s=LIVENESS * settings.bus.heartbeat_ms / 1000)
        self.targets: dict[str, zmq.Socket[bytes]] = {}
        self.counters: Counter[str] = Counter()

    def after_iteration(self) -> None:
        """Rule 2 of profileshare: the keys this iteration changed, to every other worker."""
        if self.share.profiles.changed:
            self._send(False, self.share.update())

    def heartbeat(self, now: float) -> None:
        """Find the workers (rule 1), send them our full state, forget the silent."""
        found: dict[str, str] = {}
        for run_dir in self.run_dirs:
            found.update(sockets.live_endpoints(run_dir, "worker"))
        found.pop(self.ident, None)
        for ident in [i for i in self.targets if i not in found]:
            self.targets.pop(ident).close(linger=0)
        for ident, ep in found.items():
            if ident not in self.targets:
                self.targets[ident] = sockets.connect_push(self.ctx, ep, self.hwm)
        entries = self.share.full()
        self.share.profiles.changed.clear()  # the full state says it all
        self._send(True, entries[:CHUNK])
        for i in range(CHUNK, len(entries), CHUNK):
            self._send(False, entries[i : i + CHUNK])
        self.share.expire(now)

    def receive(self, header: list[Any], now: float) -> None:
        sender, node, full, entries = header
        if sender != self.ident:
            self.share.receive(sender, node, full, entries, now)

    def forget_node(self, node: str) -> int:
        return self.share.forget_node(node)

    def _send(self, full: bool, entries: list[list[object]]) -> None:
        if not self.targets:
            return
        frames = env.pack(env.KIND_PROFILES, [self.ident, self.node, full, entries])
        for sock in self.targets.values():
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # rule 2
                self.counters["profiles_dropped"] += 1

    def close(self) -> None:
        for sock in self.targets.values():
            sock.close(linger=0)
        self.targets.clear()
