"""Pike blocks shared between the ingress processes of a node, and of a cluster.

Rules:
1. The ingresses form a ``conf.mesh`` of role ``pike``: each binds an XPUB at
   ``pike-<ident>.ipc`` in the run directory and subscribes to every sibling's, found by
   scanning the run directory each heartbeat. With ``[pike] cluster`` it also subscribes to
   the ingresses of every node in ``[stateplane] peers`` (their run directories): the
   "state plane" that carries blocks across the cluster is that peer list and this same
   PUB/SUB, not the stateplane process.
2. A message is one msgpack frame ``[src, remaining_s, count]``: the remaining time, not the
   deadline, so no process has to trust another's clock reading. Only blocks an ingress
   measured itself are published; a block learnt from a sibling or a peer node is never
   re-published, so nothing loops, within a node or across nodes.
3. PUB/SUB drops what is published before a subscriber is connected (the slow joiner). The
   XPUB sees each subscription arrive and answers it by re-announcing every live block it
   measured (``on_join``), so a sibling or a peer node started late, or restarted, learns
   them too.
4. A bad frame is counted and dropped; nothing a sibling sends can stop the process. A
   frame is bad unless ``src`` is an IP literal, ``remaining_s`` a number in
   (0, ``MAX_REMAINING_S``] and ``count`` an integer from 0: an infinite or NaN time would
   block a source for good, and NaN, compared false both ways, would also hide the block
   from ``sipline ctl pike`` and from its expiry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from conf.envelope import ip_literal
from conf.mesh import Mesh

#: a block announcement is ~30 bytes; anything much larger is not one
MAX_FRAME = 512
#: blocks queued toward a slow sibling at most (each is tiny; a burst of blocks is rare)
HWM = 10_000
#: the longest block a sibling may announce: ``[pike] remove_latency_s`` is at most a day
MAX_REMAINING_S = 86_400.0

OnBlock = Callable[[str, float, int], None]


class PikeShare:
    def __init__(self, ctx: zmq.Context[Any], run_dir: str, ident: str, on_block: OnBlock,
                 on_join: Callable[[], None], peer_dirs: tuple[str, ...] = ()) -> None:  # fmt: skip
        """Args:
            peer_dirs: run directories of the other nodes to learn blocks from (rule 1).
        """
        self.on_block = on_block
        self.bad_frames = 0
        self.mesh = Mesh(ctx, "pike", run_dir, ident, peer_dirs=peer_dirs,
                         on_frame=self._receive, on_join=on_join, max_frame=MAX_FRAME,
                         hwm=HWM)  # fmt: skip
        self.endpoint = self.mesh.endpoint

    @property
    def peers(self) -> list[str]:
        """Ingresses subscribed to: idents, ``<run_dir>:<ident>`` for another node's."""
        return sorted(self.mesh.members.values())

    def refresh(self) -> None:
        """Connect to ingresses that appeared, disconnect from those gone (each heartbeat)."""
        self.mesh.refresh()

    def publish(self, src: str, remaining_s: float, count: int) -> None:
        # dropped only toward an ingress that is not reading: it learns on its next join
        self.mesh.publish(msgpack.packb([src, remaining_s, count]))

    def _receive(self, frame: bytes) -> None:
        try:
            msg = msgpack.unpackb(frame, raw=False)
        except (ValueError, msgpack.UnpackException):  # the sender's problem (rule 4)
            msg = None
        if not _block_ok(msg):
            self.bad_frames += 1
            return
        self.on_block(msg[0], float(msg[1]), msg[2])

    def close(self) -> None:
        self.mesh.close()


def _block_ok(msg: Any) -> bool:
    """``[src, remaining_s, count]`` with the values of rule 4."""
    if not (isinstance(msg, list) and len(msg) == 3):
        return False
    src, remaining, count = msg
    return (type(remaining) in (int, float) and 0 < remaining <= MAX_REMAINING_S
            and type(count) is int and count >= 0
            and type(src) is str and len(src) <= 64 and ip_literal(src))  # fmt: skip
