"""``sipline stateplane``: the node's stateplane process: it serves the embedded key-value
store that ``local://`` cacheDB clients on this node share, and, with ``[dialogs] enabled``
or ``[stateplane] peers``, the mirror of the workers' dialogs and dialog replication
(``stateplane/replication.py``), which also
announces an edge's ingresses and learns a worker host's (``conf/discovery.py``); it answers
``sipline ctl stats``, ``sync`` and ``failback`` on its control socket.

Rules:
1. ``KvServer`` is the thin adapter (aioquic ``asyncio/protocol.py``): it binds one ROUTER at
   ``ipc://<run_dir>/stateplane-kv.ipc``, feeds each request to ``stateplane.kv`` with
   ``now = loop.time()``, and sends the reply. It makes no decisions of its own.
2. The socket's FD is registered with the loop and drained with NOBLOCK in bounded batches
   (docs/design.md §1: zmq.asyncio stays off the hot path); the FD is edge-triggered, so after each
   batch of sends we look again.
3. A message is a batch of requests (``stateplane/kv.py`` rule 5) answered by one message.
   A request that cannot be decoded gets ``bad_request``; a message that is not a batch of
   three-frame requests gets one ``bad_request`` for its first frame; an empty one is dropped.
   A reply to a client that is gone is dropped by ZeroMQ (ROUTER). All are counted.
4. Expired keys are reclaimed every ``SWEEP_S`` in batches of ``SWEEP_BATCH``; reads never see
   them in between (``KvStore`` checks on access).
5. One stateplane per run directory: binding removes a stale socket file left by a killed one.
6. With ``[stateplane] persist_dir`` every write's result is journaled there
   (``stateplane/kvdisk.py``), one write per batch before its reply leaves, synced every
   sweep; the store is loaded from it at start, before the socket is bound, so no client
   ever sees it half loaded.
7. With a ``tcp://`` peer and ``[curve]``, it also relays the cluster meshes to the peers
   (``stateplane/meshrelay.py``) and, with ``cluster_ctl``, answers their ``ctl --cluster``
   (``stateplane/clusterctl.py``), both behind the ZAP handler the replication bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import asdict

import structlog
import zmq

from conf import discovery, process, sockets
from conf.control import ControlServer
from conf.guard import GUARD
from conf.refused import RefusalLog
from conf.settings import Settings
from stateplane import kv, meshcross
from stateplane.clusterctl import ClusterControl
from stateplane.kvdisk import MUTATING, KvDisk
from stateplane.meshrelay import MeshRelay
from stateplane.replication import Replication

log = structlog.get_logger()

#: requests handled per callback before yielding to the loop (a request costs ~10 µs)
DRAIN_LIMIT = 1024
SWEEP_S = 0.5
SWEEP_BATCH = 20_000
#: a value is at most 1 MB (workers/cachedb/interface.py); refuse anything far larger
MAX_MSG_BYTES = 2 << 20
#: replies queued for one slow client before ZeroMQ drops them (its calls then time out)
HWM = 10_000


class KvServer:
    """The store behind a ROUTER socket, driven by the running loop."""

    def __init__(
        self, ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, store: kv.KvStore,
        disk: KvDisk | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.store = store
        self.disk = disk
        self.counters: Counter[str] = Counter()
        self._refused = RefusalLog("kv_bad_request")  # counted each, logged with a bound
        self._loop = asyncio.get_running_loop()
        sock = ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = HWM
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MSG_BYTES)
        sockets.bind(sock, endpoint)
        self._sock = sock
        self._reader = GUARD.add_reader(self._loop, sock.FD, "kv", self._on_readable)

    def _on_readable(self) -> None:
        sock = self._sock
        if sock.closed:
            return
        budget = DRAIN_LIMIT
        while budget > 0:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            budget -= max(1, len(frames) // 3)
            reply = self._handle_batch(frames)
            if reply:
                try:
                    sock.send_multipart(reply, zmq.NOBLOCK)
                except zmq.ZMQError:  # the client's pipe is full or gone: its calls time out
                    self.counters["reply_dropped"] += 1
        self._loop.call_soon(self._reader)  # more may wait; let timers run first

    def _handle_batch(self, frames: list[bytes]) -> list[bytes]:
        ident, body = frames[0], frames[1:]
        if not body:
            self.counters["bad_request"] += 1
            return []
        if len(body) % 3:
            self.counters["bad_request"] += 1
            self._refused.note(time.monotonic(), reason=f"{len(body)} frames is not a batch of 3s")
            return [ident, *kv.pack_reply(body[0], "bad_request")]
        reply = [ident]
        now = self._loop.time()
        for i in range(0, len(body), 3):
            reply += self._handle(body[i : i + 3], now)
        if self.disk is not None:
            self.disk.flush()  # rule 6: on disk before the replies leave
        return reply

    def _handle(self, frames: list[bytes], now: float) -> list[bytes]:
        self.counters["requests"] += 1
        try:
            req = kv.unpack_request(frames)
        except kv.WireError as exc:
            self.counters["bad_request"] += 1
            self._refused.note(time.monotonic(), reason=str(exc)[:200])
            return kv.pack_reply(frames[0], "bad_request")
        status, number, value = kv.apply(self.store, req, now)
        if status == "full":
            self.counters["refused_full"] += 1
        elif self.disk is not None and req.op in MUTATING:
            self.disk.note(req.key, self.store, now, time.time())
        return kv.pack_reply(frames[0], status, number, value)

    def sweep(self) -> None:
        now = self._loop.time()
        self.store.expire(now, SWEEP_BATCH)
        disk = self.disk
        if disk is not None:
            disk.sync()
            if disk.due(len(self.store)):
                t0 = time.perf_counter()
                disk.compact(self.store, now, time.time())
                log.info("kv_compacted", keys=len(self.store),
                         ms=round((time.perf_counter() - t0) * 1000))  # fmt: skip

    def stats(self) -> dict[str, int]:
        s = self.store
        return {"keys": len(s), "bytes": s.bytes_used, "expired": s.expired,
                "evicted": s.evicted, **self.counters}  # fmt: skip

    def close(self) -> None:
        if self._sock.closed:
            return
        self._reader.remove()
        self._sock.close(linger=0)
        sockets.unlink(self.endpoint)
        if self.disk is not None:
            self.disk.close()


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    store, disk = kv.KvStore(), None
    if settings.stateplane.persist_dir:  # rule 6
        disk = KvDisk(settings.stateplane.persist_dir)
        loop = asyncio.get_running_loop()
        found = disk.load(store, loop.time(), time.time())
        log.info("kv_loaded", dir=settings.stateplane.persist_dir, **asdict(found))
    server = KvServer(ctx, kv.endpoint(settings.node.run_dir), store, disk)
    log.info("stateplane_ready", kv_endpoint=server.endpoint, **asdict(server.store.limits))
    sp = settings.stateplane
    repl = Replication(ctx, settings) if runs_replication(settings) else None
    relay, cluster_ctl = _cluster(ctx, settings, repl)
    control = ControlServer(ctx, settings.node.run_dir, f"stateplane-{os.getpid()}", {
        "stats": lambda _: {"role": "stateplane", "kv": server.stats(),
                            "stateplane": repl.stats() if repl is not None else None,
                            "mesh_relay": relay.stats() if relay is not None else None,
                            "cluster_ctl": cluster_ctl.stats() if cluster_ctl else None},
        "sync": lambda _: {"sync": repl.resync() if repl is not None else []},
        "failback": lambda _: {"failback": repl.failback() if repl is not None else []},
    })  # fmt: skip
    if repl is not None:
        log.info("replication_ready", epoch=repl.publisher.epoch, peers=sp.peers,
                 endpoints=repl.endpoints, curve=repl.keys is not None)  # fmt: skip

    def report() -> None:
        log.info("load_stats", **server.stats())
        if repl is not None:
            st = repl.stats()
            log.info("replication_stats", **{k: v for k, v in st.items() if k != "replicas"},
                     replicas={n: r.get("dialogs", 0) for n, r in st["replicas"].items()},
                     lag={p.replica.node if p.replica else p.run_dir: p.lag_summary()
                          for p in repl.peers})  # fmt: skip

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(process.every(SWEEP_S, stop, server.sweep))
            tg.create_task(process.every(settings.log.stats_interval_s, stop, report))
            if repl is not None:
                tg.create_task(process.every(sp.heartbeat_ms / 1000, stop, repl.heartbeat))
            if relay is not None:
                tg.create_task(process.every(settings.bus.heartbeat_ms / 1000, stop, relay.refresh))
    finally:
        control.close()
        if cluster_ctl is not None:
            cluster_ctl.close()
        if relay is not None:
            relay.close()
        if repl is not None:
            repl.close()
        server.close()
        ctx.destroy(linger=0)
    return 0


def runs_replication(settings: Settings) -> bool:
    """Whether the state plane runs ``Replication``: when this node mirrors its workers'
    dialogs (``[dialogs] enabled``: the hand-over between workers needs the mirror whether or
    not another node reads it, docs/dialogs.md "Dialogs follow their Call-ID"), when it
    replicates anyone (``peers``, docs/stateplane.md) and when it announces this host's
    ingresses to the worker hosts (conf/discovery.py)."""
    return settings.dialogs.enabled or bool(settings.stateplane.peers) or discovery.announces(
        settings)


def _cluster(ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings, repl: Replication | None,
             ) -> tuple[MeshRelay | None, ClusterControl | None]:  # fmt: skip
    """The relay of the cluster meshes to tcp:// peers and the cluster control, when
    configured (conf/load.py made sure of ``bind`` and ``[curve]``; the replication bound
    the ZAP handler that guards both)."""
    keys = repl.keys if repl is not None and repl.zap is not None else None
    if keys is None:
        return None, None
    relay = None
    if meshcross.roles(settings) and meshcross.tcp_peers(settings):
        relay = MeshRelay(ctx, settings, keys)
        log.info("mesh_relay_ready", roles=relay.roles, peers=[ln.name for ln in relay.links])
    cluster_ctl = ClusterControl(ctx, settings, keys) if settings.stateplane.cluster_ctl else None
    return relay, cluster_ctl


def main(conf: str | None = None) -> int:
    return process.run("stateplane", serve, conf)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m stateplane.main", description=__doc__)
    p.add_argument("--conf", help="configuration file (default $SIPLINE_CONF or conf/sipline.toml)")
    sys.exit(main(p.parse_args().conf))
