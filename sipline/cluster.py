"""``--cluster``: ask every node of the cluster, not only this one (``docs/monitoring.md``).

Rules:
1. The nodes are this one and every ``[stateplane] peers`` entry, nothing else: a run
   directory (a node on this host) is asked over its control sockets, as this node is; a
   ``tcp://host:port`` peer is asked at its state plane's cluster control (port + 3,
   ``stateplane/clusterctl.py``) over CURVE with this node's key pair, and its answer is
   believed only because the connection proved that peer's ``[[peer]]`` key.
2. Each answer is labelled with the name this configuration gives the node (``[node] name``,
   the ``[[peer]]`` name), never with the name the answer carries.
3. Every node is asked at once and waited for until ``timeout_s``; a node that does not
   answer, or refuses, is reported with its error, not waited for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from conf import curve
from conf.control import MAX_REPLY, ask
from conf.settings import Settings
from stateplane import meshcross


@dataclass(slots=True)
class NodeAnswer:
    """What one node's processes answered (``replies``), those that did not (``silent``),
    or why the node could not be asked (``error``)."""

    node: str
    replies: list[dict[str, Any]] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    error: str = ""


def ask_cluster(settings: Settings, cmd: str, args: dict[str, Any] | None = None,
                timeout_s: float = 1.0) -> list[NodeAnswer]:  # fmt: skip
    """Rules 1-3: this node's answer first, then the peers' in configuration order."""
    try:
        keys, no_keys = curve.node_keys(settings), "no CURVE key for it ([curve] and its [[peer]] public key)"
    except curve.CurveKeyError as exc:  # run as a user who may not read the node's key
        keys, no_keys = None, f"cannot use [curve] secret_key_file: {exc}"
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pending: dict[zmq.Socket[bytes], NodeAnswer] = {}
    out = [NodeAnswer(settings.node.name)]
    try:
        payload = msgpack.packb({"cmd": cmd, "args": args or {}})
        for peer in settings.stateplane.peers:
            conf = curve.peer_of(settings, peer)
            answer = NodeAnswer(conf.name if conf is not None else peer)
            out.append(answer)
            if not peer.startswith("tcp://"):
                continue
            key = None if conf is None else curve.peer_key(conf.public_key, conf.public_key_file)
            if keys is None or key is None:
                answer.error = no_keys
                continue
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY)
            curve.connect_curve(s, keys, key)
            s.connect(meshcross.offset_endpoint(peer, meshcross.CONTROL_OFFSET))
            s.send_multipart([b"", payload], zmq.NOBLOCK)
            pending[s] = answer
        end = time.monotonic() + timeout_s
        # the local ones (this node, run-directory peers) while the remote ones work
        for peer, answer in zip(("", *settings.stateplane.peers), out):
            if peer.startswith("tcp://"):
                continue
            run_dir = peer or settings.node.run_dir
            try:
                answer.replies, answer.silent = ask(run_dir, cmd, args, timeout_s)
            except OSError as exc:
                answer.error = f"cannot open {run_dir}: {exc.strerror}"
        _gather(pending, end)
        for answer in pending.values():
            answer.error = f"no answer within {timeout_s:g} s"
        return out
    finally:
        for s in pending:
            s.close(linger=0)
        ctx.destroy(linger=0)


def _gather(pending: dict[zmq.Socket[bytes], NodeAnswer], end: float) -> None:
    poller = zmq.Poller()
    for s in pending:
        poller.register(s, zmq.POLLIN)
    while pending and (left := end - time.monotonic()) > 0:
        for s, _ in poller.poll(int(left * 1000) + 1):
            frames = s.recv_multipart()
            answer = pending.pop(s)
            poller.unregister(s)
            s.close(linger=0)
            _fill(answer, frames[-1])


def _fill(answer: NodeAnswer, data: bytes) -> None:
    try:
        body = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException):
        answer.error = "undecodable answer"
        return
    if not isinstance(body, dict) or not body.get("ok"):
        err = body.get("error") if isinstance(body, dict) else None
        answer.error = f"refused: {str(err)[:200]}"
        return
    replies, silent = body.get("replies"), body.get("silent")
    answer.replies = [r for r in replies if isinstance(r, dict)] if isinstance(replies, list) else []
    answer.silent = [str(x) for x in silent] if isinstance(silent, list) else []

