"""Shared ratelimit pipes on the wire: the workers' count exchange (``workers/ratelimit/pipes.py``
rule 5).

Rules:
1. The workers form a ``conf.mesh`` of role ``ratelimit``: each binds an XPUB at
   ``ratelimit-<ident>.ipc`` in its run directory and subscribes to every other worker's, of
   this node and of every node in ``[stateplane] peers`` (their run directories, scanned each
   heartbeat).
2. Every ``SHARE_INTERVAL_S`` (``tick``) a worker forgets silent participants and publishes
   one msgpack frame ``[sender, [[pipe, window, count, demand], ...]]`` with its own counts
   of every shared pipe; ``sender`` is ``<node>/<worker ident>``. It publishes whether or not a count
   changed, so silence means gone (and ages out), never idle. What it receives it applies
   and never passes on.
3. A frame that is not that shape is counted (``bad_frames``) and dropped; one larger than
   ``MAX_FRAME`` disconnects its sender (``MAXMSGSIZE``). Nothing a peer sends stops the
   worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import zmq

from conf.mesh import Mesh
from conf.settings import Settings
from workers.ratelimit.pipes import RateLimiter

#: a count is ~50 bytes: room for a thousand shared pipes
MAX_FRAME = 64 << 10
MAX_ENTRIES = 1024
#: counts queued toward a slow participant (ten a second; old ones are worthless anyway)
HWM = 100


class RateShare:
    """One worker's side of the exchange (rules 1-3)."""

    def __init__(self, ctx: zmq.Context[Any], settings: Settings, worker_id: str,
                 limiter: RateLimiter, clock: Callable[[], float]) -> None:  # fmt: skip
        """Args:
            clock: the limiter's ``now`` (the worker's loop time), read as counts arrive.
        """
        self.limiter = limiter
        self.clock = clock
        self.sender = f"{settings.node.name}/{worker_id}"
        self.bad_frames = 0
        self.sent = 0
        self.mesh = Mesh(ctx, "ratelimit", settings.node.run_dir, worker_id,
                         peer_dirs=tuple(settings.stateplane.peers), on_frame=self._receive,
                         max_frame=MAX_FRAME, hwm=HWM)  # fmt: skip

    def tick(self, now: float) -> None:
        """Forget silent participants and publish our counts (rule 2)."""
        frame = msgpack.packb([self.sender, self.limiter.tick(now)])
        self.sent += self.mesh.publish(frame)

    def refresh(self) -> None:
        """Connect to workers that appeared, here and on peer nodes (each heartbeat)."""
        self.mesh.refresh()

    def _receive(self, frame: bytes) -> None:
        counts = decode(frame)
        if counts is None:
            self.bad_frames += 1
            return
        sender, entries = counts
        if sender != self.sender:
            self.limiter.receive(sender, entries, self.clock())

    def stats(self) -> dict[str, int]:
        return {"participants": len(self.mesh.members), "sent": self.sent,
                "bad_frames": self.bad_frames, "ignored": self.limiter.share_ignored}  # fmt: skip

    def close(self) -> None:
        self.mesh.close()


def decode(frame: bytes) -> tuple[str, list[list[Any]]] | None:
    """``(sender, [[pipe, window, count, demand], ...])`` from a frame, or None if it is not
    one (counts and demands are integers from 0)."""
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if not (isinstance(msg, list) and len(msg) == 2 and isinstance(msg[0], str)
            and isinstance(msg[1], list) and len(msg[1]) <= MAX_ENTRIES):  # fmt: skip
        return None
    for e in msg[1]:
        if not (isinstance(e, list) and len(e) == 4 and isinstance(e[0], str)
                and all(type(x) is int for x in e[1:]) and min(e[2], e[3]) >= 0):  # fmt: skip
            return None
    return msg[0], msg[1]
