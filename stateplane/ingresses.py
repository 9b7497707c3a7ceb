"""The ingresses a state plane announces to its peers, and those it learns from them for its
workers: the sockets' side of ``conf/discovery.py`` rules 1, 2, 5 and 7 (the checks are there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import zmq

from conf import discovery, sockets
from conf import envelope as env
from conf.refused import RefusalLog
from stateplane import updates as up

if TYPE_CHECKING:
    from conf.settings import Settings

log = structlog.get_logger()

#: INGRESSES envelopes queued for one worker: each replaces the one before, so a worker that
#: is not reading needs none of the older ones
PUSH_HWM = 4


class IngressFinder:
    """What this node announces (an edge) and what it learnt from its peers (a worker host)."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings,
                 publish: Callable[[up.Ingresses], None], counters: Counter[str]) -> None:  # fmt: skip
        self.ctx, self.settings, self.counters = ctx, settings, counters
        self._publish = publish
        self.announces = discovery.announces(settings)
        self.learns = discovery.learns(settings)
        self._addresses = discovery.peer_addresses(settings)
        #: rule 5: what each peer (by name) announced last, as accepted
        self.heard: dict[str, list[str]] = {}
        self._announced: list[str] | None = None
        self._pushes: dict[str, zmq.Socket[bytes]] = {}
        self._refused = RefusalLog("announced_ingress_refused")

    def receive(self, peer: str | None, authenticated: bool, msg: up.Ingresses, now: float) -> None:
        """An announcement heard from the peer ``peer`` (its configured name, None without
        one); ``authenticated``: over tcp:// with its CURVE key (rule 2)."""
        if not self.learns:
            return  # an edge's announcement heard by a node that does not discover: not ours
        if peer is None or not authenticated:
            self.counters["ingresses_unauthenticated"] += 1
            self._refused.note(now, peer=str(peer or msg.node)[:64], endpoint="*",
                               reason="announcer not a [[peer]] reached over tcp:// with CURVE")  # fmt: skip
            return
        verdict = discovery.accept(peer, msg.endpoints, self._addresses)
        for ep, reason in verdict.refused:
            self.counters["announced_ingress_refused"] += 1
            self._refused.note(now, peer=peer, endpoint=ep, reason=reason)
        if verdict.accepted is not None and verdict.accepted != self.heard.get(peer, []):
            self.heard[peer] = verdict.accepted
            log.info("ingresses_learnt", peer=peer, endpoints=verdict.accepted)

    def tick(self, workers: dict[str, str]) -> None:
        """Every heartbeat: announce ours (rule 1), hand what we learnt to ``workers``
        (``{ident: endpoint}``, the node's live ones; rule 7)."""
        if self.announces:
            idents = sockets.live_endpoints(self.settings.node.run_dir, "ingress")
            eps = discovery.announced(self.settings, idents)
            if eps != self._announced:
                self._announced = eps
                log.info("ingresses_announced", endpoints=eps)
            self._publish(up.Ingresses(self.settings.node.name, eps))
        if self.learns:
            self._hand_to(workers)

    def _hand_to(self, workers: dict[str, str]) -> None:
        entries: list[list[Any]] = []
        total = 0
        for peer, eps in sorted(self.heard.items()):
            total += len(eps)
            if total > discovery.MAX_DISCOVERED:  # rule 4: the workers would refuse it all
                self.counters["ingresses_over_bound"] += 1
                break
            entries.append([peer, eps])
        frames = env.pack(env.KIND_INGRESSES, entries)
        live = set(workers.values())
        for ep in [e for e in self._pushes if e not in live]:
            self._pushes.pop(ep).close(linger=0)
        for ep in live:
            sock = self._pushes.get(ep)
            if sock is None:
                sock = self._pushes[ep] = sockets.connect_push(self.ctx, ep, PUSH_HWM)
            try:
                sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # not connected yet, or not reading: the next heartbeat tries
                self.counters["ingresses_not_handed"] += 1

    def stats(self) -> dict[str, Any]:
        return {"announced": self._announced or [], "learnt": dict(self.heard)}

    def close(self) -> None:
        for sock in self._pushes.values():
            sock.close(linger=0)
        self._pushes.clear()
