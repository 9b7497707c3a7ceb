"""What may cross between nodes on the cluster meshes over TCP (``stateplane/meshrelay.py``),
sans-IO: which roles a node relays, where each peer's relay listens, and whether a frame a
peer's relay delivered may be handed to this node's processes.

Rules:
1. Roles: ``pike`` with ``[pike] cluster``, ``profiles`` with ``[dialogs] profiles_cluster``,
   ``ratelimit`` with a ``shared`` ``[[ratelimit]]`` pipe. Only ``tcp://`` peers are relayed:
   run-directory peers on this host are joined over ipc by the processes themselves
   (``conf/mesh.py``).
2. A peer's relay is at its ``[stateplane] bind`` port + 2 (``RELAY_OFFSET``; the port
   itself and the next are the state plane's PUB and snapshot ROUTER), its cluster control
   at port + 3 (``CONTROL_OFFSET``). The endpoint comes from our configuration, never from
   anything a peer sends.
3. A frame is judged against the peer whose key the connection authenticated (``peer``, the
   ``[[peer]]`` name), never against what it says of itself: a ``profiles`` frame must name
   that node (``[sender, node, full, entries]``), a ``ratelimit`` frame's sender must be
   ``<that node>/...``; a ``pike`` frame names no node (a block is about a source address,
   and the receiving ingress checks its shape, ``ingress/pikeshare.py`` rule 4). A frame of a
   role this node does not relay, larger than the role's ``MAX_FRAME``, or not decodable is
   refused. The verdict is a reason string (``""``: pass it on).
"""

from __future__ import annotations

from typing import Any

import msgpack

from conf.settings import Settings

#: the largest frame each role's owner publishes: ``ingress/pikeshare.py``,
#: ``workers/dialogs/limits.py`` and ``workers/ratelimit/share.py`` ``MAX_FRAME`` (a test
#: keeps them equal)
MAX_FRAME = {"pike": 512, "profiles": 1 << 20, "ratelimit": 64 << 10}
#: ports above ``[stateplane] bind`` (rule 2)
RELAY_OFFSET = 2
CONTROL_OFFSET = 3
#: a node name is at most this long (conf/checks/common.py NODE_NAME_RE keeps it short anyway)
MAX_NODE_NAME = 255


def roles(settings: Settings) -> tuple[str, ...]:
    """The roles this node relays (rule 1), in a fixed order."""
    on = {"pike": settings.pike.enabled and settings.pike.cluster,
          "profiles": settings.dialogs.profiles_cluster,
          "ratelimit": any(rl.shared for rl in settings.ratelimit)}  # fmt: skip
    return tuple(r for r in MAX_FRAME if on[r])


def tcp_peers(settings: Settings) -> list[str]:
    """The ``[stateplane] peers`` entries on other hosts (rule 1)."""
    return [p for p in settings.stateplane.peers if p.startswith("tcp://")]


def offset_endpoint(peer: str, offset: int) -> str:
    """``tcp://host:(port + offset)`` of a peer given as ``tcp://host:port`` (rule 2)."""
    host, _, port = peer.removeprefix("tcp://").rpartition(":")
    return f"tcp://{host}:{int(port) + offset}"


def verdict(role: bytes, frame: bytes, peer: str, relayed: tuple[str, ...]) -> str:
    """Rule 3: ``""`` when ``frame`` of ``role`` from ``peer`` may be handed on, else why not."""
    name = role.decode("ascii", "replace")
    if name not in relayed:
        return "role"
    if len(frame) > MAX_FRAME[name]:
        return "size"
    if name == "pike":
        return ""
    try:
        msg: Any = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException):
        return "undecodable"
    if not isinstance(msg, list) or len(msg) < 2:
        return "shape"
    claimed = msg[1] if name == "profiles" else msg[0]
    if not isinstance(claimed, str) or len(claimed) > MAX_NODE_NAME + 256:
        return "shape"
    if name == "ratelimit":
        node, slash, _ = claimed.partition("/")
        return "" if slash and node == peer else "wrong_node"
    return "" if claimed == peer else "wrong_node"
