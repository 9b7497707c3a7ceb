"""The worker end of the ZeroMQ hop: batches in from ingresses, outbound messages back.

Rules:
1. The worker binds one PULL socket at ``worker-<id>.ipc``; every ingress connects a PUSH to it
   once it has heard our heartbeat.
2. Every heartbeat interval the worker looks for ``ingress-*.ipc`` files of live processes
   in the run directory, connects a pipe to each new one and sends each a heartbeat; a file
   that disappeared closes its pipe. On shutdown it says ``down`` so ingresses stop sending
   at once. Timers processes hear of the worker from its ``TimerClient``, on the socket
   that carries its arms (timers/client.py rule 6), not from the bus.
3. Output for one ingress leaves in one batch per drained input batch (``conf.pipe``).
4. Pipes are opened only by rule 2, for ingresses that announced themselves in the node's
   run directory, never for an ingress id ``send`` is given: ids come out of packets (our
   Via's ``sl-c``, dialogs adopted from a peer node). UDP output for an ingress without a
   pipe (one that left: replaced, docs/operations.md) leaves through another live ingress,
   since every ingress binds the same listeners (``udp_rerouted``); other output for it is
   dropped and counted (``drop_unknown_ingress``).
5. An IN envelope whose ingress ident could name a file elsewhere (``conf.sockets.valid_ident``)
   is refused and counted as ``drop_bad_ident``.
6. A ``FWD`` is an IN another worker of the node passed on to us, the owner of its Call-ID
   after dialogs moved; ``HANDED`` says a source sent every dialog it owed us
   (``workers/handover.py``). Both come only from the node's run directory, like the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

import structlog
import zmq

from conf import envelope, sockets
from conf.guard import GUARD
from conf.loadstats import LoadMeter
from conf.pipe import PushPipe, drain_pull, hops
from conf.refused import RefusalLog
from conf.settings import Bus

log = structlog.get_logger()

OnBatch = Callable[[str, list[list[Any]], list[bytes]], None]
#: a TIMER envelope's header and frames, for ``timers.client.TimerClient.receive``
OnTimer = Callable[[list[Any], list[bytes]], None]
#: an ADOPT envelope's header: [node the dialogs come from, records] (after a failover)
OnAdopt = Callable[[list[Any]], None]



def _out_header(metas: list[Any]) -> list[Any]:
    return [metas]


class IngressBus:
    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[bytes]],
        cfg: Bus,
        run_dir: str,
        worker_id: str,
        on_batch: OnBatch,
        meter: LoadMeter,
        on_timer: OnTimer | None = None,
        on_adopt: OnAdopt | None = None,
        on_release: OnAdopt | None = None,
        on_forward: OnBatch | None = None,
        on_handed: OnAdopt | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.endpoint = sockets.endpoint(run_dir, "worker", worker_id)
        self._ctx = ctx
        self._cfg = cfg
        self._run_dir = run_dir
        self._on_batch = on_batch
        self._meter = meter
        self._pipes: dict[str, PushPipe] = {}
        self._on_timer = on_timer
        self._on_adopt = on_adopt
        self._on_release = on_release
        self._on_forward = on_forward
        self._on_handed = on_handed
        self._workers: dict[str, zmq.Socket[bytes]] = {}  # rule 6: FWD to the node's workers
        self._refused = RefusalLog("envelope_refused")
        self._loop = asyncio.get_running_loop()
        self._pull = sockets.bind_pull(ctx, self.endpoint, cfg.hwm)
        self._reader = GUARD.add_reader(self._loop, self._pull.FD, "worker_bus", self._on_readable)

    def send(self, ingress: str, meta: list[Any], data: bytes) -> bool:
        """Queue one message for ``ingress``; False (counted) when it is unknown (rule 4) or
        its pipe is full."""
        pipe = self._pipes.get(ingress)
        if pipe is None and meta[0] == "udp" and self._pipes:  # rule 4
            pipe = next(iter(self._pipes.values()))
            self._meter.counters["udp_rerouted"] += 1
        if pipe is None:
            self._meter.counters["drop_unknown_ingress"] += 1
            return False
        if not pipe.add(meta, data):
            self._meter.counters["drop_ingress_full"] += 1
            return False
        return True

    @property
    def ingresses(self) -> Collection[str]:
        """The live ingresses (rule 2), as they change."""
        return self._pipes.keys()

    def any_ingress(self) -> str | None:
        """An ingress to send through when any will do (UDP probes), or None yet."""
        return next(iter(self._pipes), None)

    def flush(self) -> None:
        for pipe in self._pipes.values():
            pipe.flush()

    @property
    def queued(self) -> int:
        """Messages waiting for an ingress pipe to accept them."""
        return sum(p.backlog_msgs for p in self._pipes.values())

    def hops(self, now: float) -> dict[str, dict[str, float]]:
        """Per ingress pipe: backlog depth, oldest message's wait, messages sent."""
        return hops(self._pipes.values(), now)

    def _on_readable(self) -> None:
        try:
            if drain_pull(self._pull, self._on_envelope, self._meter.counters):
                self._loop.call_soon(self._reader)  # let timers run before the rest
        finally:
            self.flush()

    def _on_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_IN or env.kind == envelope.KIND_FWD:
            if not sockets.valid_ident(env.header[0]):  # we answer to the ingress it names
                self._meter.counters["drop_bad_ident"] += 1
                self._refused.note(self._loop.time(), reason="malformed ingress ident",
                                   ingress=env.header[0][:80])  # fmt: skip
                return
            if env.kind == envelope.KIND_IN:
                self._on_batch(env.header[0], env.header[1], env.payloads)
            elif self._on_forward is not None:
                self._on_forward(env.header[0], env.header[1], env.payloads)
        elif env.kind == envelope.KIND_HANDED and self._on_handed is not None:
            self._on_handed(env.header)
        elif env.kind == envelope.KIND_TIMER and self._on_timer is not None:
            self._on_timer(env.header, env.payloads)
        elif env.kind == envelope.KIND_ADOPT and self._on_adopt is not None:
            self._on_adopt(env.header)
        elif env.kind == envelope.KIND_RELEASE and self._on_release is not None:
            self._on_release(env.header)

    def forward(self, worker: str, ep: str, ingress: str, meta: list[Any], raw: bytes) -> bool:
        """Rule 6: one message to the node's worker ``worker`` (at ``ep``, read from the run
        directory) as a ``FWD``; False (counted) when its pipe is full."""
        sock = self._workers.get(worker)
        if sock is None:
            sock = self._workers[worker] = sockets.connect_push(self._ctx, ep, self._cfg.hwm)
        try:
            sock.send_multipart(envelope.pack(envelope.KIND_FWD, [ingress, [meta]], [raw]),
                                zmq.NOBLOCK)  # fmt: skip
        except zmq.Again:
            self._meter.counters["drop_forward_full"] += 1
            return False
        self._meter.counters["forwarded"] += 1
        return True

    def forget_worker(self, worker: str) -> None:
        sock = self._workers.pop(worker, None)
        if sock is not None:
            sock.close(linger=0)

    def _connect(self, ingress: str, ep: str) -> PushPipe:
        sock = sockets.connect_push(self._ctx, ep, self._cfg.hwm)
        pipe = PushPipe(ingress, sock, envelope.KIND_OUT, _out_header, self._cfg.max_batch,
                        self._cfg.max_pending)  # fmt: skip
        self._pipes[ingress] = pipe
        log.info("ingress_found", ingress=ingress)
        return pipe

    def heartbeat(self, state: str = "up") -> None:
        """Find ingresses, forget vanished ones, and tell each we are ``state``."""
        found = sockets.live_endpoints(self._run_dir, "ingress")
        for ident in [i for i in self._pipes if i not in found]:
            lost = self._pipes.pop(ident).close()
            self._meter.counters["drop_ingress_gone"] += lost
            log.info("ingress_gone", ingress=ident)
        frames = envelope.pack(envelope.KIND_HB, [self.worker_id, self.endpoint, state])
        for ident, ep in found.items():
            pipe = self._pipes.get(ident) or self._connect(ident, ep)
            pipe.drain()
            pipe.send_now(frames)

    def close(self) -> None:
        """Say goodbye, stop reading, and send what is left."""
        self._reader.remove()
        self.flush()
        self.heartbeat("down")
        self._pull.close(linger=0)
        sockets.unlink(self.endpoint)
        for pipe in self._pipes.values():
            pipe.close(linger_ms=sockets.LINGER_MS)
        for sock in self._workers.values():
            sock.close(linger=sockets.LINGER_MS)
