"""The worker's end of shared call limits: ``workers/dialogs/profileshare.py`` over a ``conf.mesh``.

Rules:
1. The workers form a mesh of role ``profiles``: this node's always, and with ``[dialogs]
   profiles_cluster`` those of every ``[stateplane] peers`` node too (their run directories,
   scanned each heartbeat; a ``tcp://`` peer's through the state planes' relay,
   ``stateplane/meshrelay.py``). A sender is known by its node and ident together.
2. A frame is msgpack ``[sender, node, full, [[profile, value, count], ...]]``: after a loop
   iteration that changed a shared count, the changed keys (``full`` false); every heartbeat
   the whole state in frames of at most ``CHUNK`` entries, the first with ``full`` true.
3. Publishing never blocks: a frame a member cannot take now is lost (counted by the mesh),
   and the next full state, a heartbeat later, repairs what it missed. A frame that is not
   that shape is counted (``bad_frames``) and dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from conf.mesh import Mesh
from conf.settings import Settings
from dialogstate.profiles import Profiles
from workers.dialogs.profileshare import CHUNK, ProfileShare

#: heartbeats of silence after which a sender's counts are forgotten
LIVENESS = 3
#: a full state of CHUNK entries of ~30 bytes, with room
MAX_FRAME = 1 << 20


class SharedLimits:
    def __init__(self, ctx: zmq.Context[Any], settings: Settings, ident: str,
                 profiles: Profiles, clock: Callable[[], float]) -> None:  # fmt: skip
        self.ident, self.node = ident, settings.node.name
        self.share = ProfileShare(profiles, timeout_s=LIVENESS * settings.bus.heartbeat_ms / 1000)
        self.bad_frames = 0
        self.clock = clock
        peers = tuple(settings.stateplane.peers) if settings.dialogs.profiles_cluster else ()
        self.mesh = Mesh(ctx, "profiles", settings.node.run_dir, ident, peer_dirs=peers,
                         on_frame=self._receive, max_frame=MAX_FRAME)  # fmt: skip

    def after_iteration(self) -> None:
        """Rule 2: the keys this iteration changed."""
        if self.share.profiles.changed:
            self._publish(False, self.share.update())

    def heartbeat(self, now: float) -> None:
        """Find the members (rule 1), send them our full state, forget the silent."""
        self.mesh.refresh()
        entries = self.share.full()
        self.share.profiles.changed.clear()  # the full state says it all
        self._publish(True, entries[:CHUNK])
        for i in range(CHUNK, len(entries), CHUNK):
            self._publish(False, entries[i : i + CHUNK])
        self.share.expire(now)

    def forget_node(self, node: str) -> int:
        return self.share.forget_node(node)

    def _publish(self, full: bool, entries: list[list[object]]) -> None:
        self.mesh.publish(msgpack.packb([self.ident, self.node, full, entries]))

    def _receive(self, frame: bytes) -> None:
        try:
            sender, node, full, entries = msgpack.unpackb(frame)
            ok = isinstance(sender, str) and isinstance(node, str) and isinstance(full, bool) \
                and isinstance(entries, list) and all(
                    isinstance(e, list) and len(e) == 3 for e in entries)  # fmt: skip
        except (ValueError, TypeError, msgpack.UnpackException):
            ok = False
        if not ok:
            self.bad_frames += 1
            return
        if sender != self.ident or node != self.node:
            # keyed by node too: a peer node's worker may carry a name one of ours has
            self.share.receive(f"{node}/{sender}", node, full, entries, self.clock())

    def stats(self) -> dict[str, int]:
        return {"members": len(self.mesh.members), "senders": len(self.share.senders),
                "bad_frames": self.bad_frames, "dropped": self.mesh.dropped}  # fmt: skip

    def close(self) -> None:
        self.mesh.close()
