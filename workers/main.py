"""``sipline worker``: one routing worker process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable

import structlog
import zmq

from conf import bustcp, discovery, nodekey, process, sockets
from conf.settings import Settings
from workers.cachedb import CacheError
from workers.ratelimit.pipes import SHARE_INTERVAL_S
from workers.routing.prefix_csv import PrefixFileError
from workers.routing.prefix_route import load_all
from workers.service import Worker

log = structlog.get_logger()


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    ident = bustcp.ident(settings, "worker")
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        prefixes = await load_all(settings)  # before any request: a route may need them
        worker = Worker(settings, ident, ctx, prefixes)
    except CacheError as exc:  # the cacheDB of a [[prefix_table]] did not answer in 10 s
        log.error("prefix_table_unavailable", error=str(exc))
        ctx.destroy(linger=0)
        return 2
    except nodekey.NodeKeyError as exc:
        log.error("node_key_refused", error=str(exc))
        ctx.destroy(linger=0)
        return 2
    except PrefixFileError as exc:  # a bad line: file, line, field, expected (prefix_csv.py)
        log.error("prefix_table_refused", error=str(exc))
        ctx.destroy(linger=0)
        return 2
    loop = asyncio.get_running_loop()
    interval = settings.log.stats_interval_s
    hop = None
    if settings.bus.address:  # ingresses on other hosts (conf/bustcp.py)
        hop = bustcp.TcpHop(ctx, loop, settings, worker.meter.counters)
        learns = discovery.learns(settings)  # else [bus] ingresses, which take precedence
        worker.bus.open_tcp(hop, discovery.peer_addresses(settings) if learns else None)
        log.info("worker_bus_tcp", endpoint=worker.bus.tcp_endpoint, ingresses=list(hop.ingresses),
                 discover=learns)  # fmt: skip

    def report() -> None:
        log.info("load_stats", **worker.stats(interval))

    # logrotate's postrotate, and a reload of the routing (workers/reloading.py rule 3)
    loop.add_signal_handler(signal.SIGHUP, worker.on_sighup)
    log.info("worker_ready", endpoint=worker.bus.endpoint)
    try:
        worker.bus.heartbeat()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(process.every(settings.bus.heartbeat_ms / 1000, stop, worker.heartbeat))
            tg.create_task(process.every(1.0, stop, lambda: worker.meter.tick(loop.time())))
            tg.create_task(process.every(interval, stop, report))
            if worker.rate_share is not None:
                tg.create_task(process.every(SHARE_INTERVAL_S, stop, worker.share_tick))
    finally:
        phases = StopPhases(time.perf_counter)  # uvloop's loop.time() counts whole ms
        await worker.stop(phases.mark)
        if hop is not None:
            hop.close()
        ctx.destroy(linger=sockets.LINGER_MS)
        phases.mark("sockets")
        log.info("worker_stopped", **phases.fields())
    return 0


class StopPhases:
    """Where a stopping worker's time went, phase by phase (docs/operations.md "Rolling
    restart"): wall and CPU milliseconds, logged once as ``worker_stopped``."""

    __slots__ = ("_clock", "_cpu", "_last", "marks")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last = (clock(), time.process_time())
        self._cpu = self._last
        self.marks: dict[str, tuple[float, float]] = {}

    def mark(self, phase: str) -> None:
        """``phase`` ended now."""
        now = (self._clock(), time.process_time())
        self.marks[phase] = (now[0] - self._last[0], now[1] - self._last[1])
        self._last = now

    def fields(self) -> dict[str, float]:
        out = {f"{p}_ms": round(w * 1000, 1) for p, (w, _) in self.marks.items()}
        out["total_ms"] = round(sum(w for w, _ in self.marks.values()) * 1000, 1)
        out["cpu_ms"] = round(sum(c for _, c in self.marks.values()) * 1000, 1)
        return out


def main(conf: str | None = None) -> int:
    code = process.run("worker", serve, conf)
    if code == 0:  # stopped: every answer, delta and CDR it held is out (Worker.stop)
        # what the interpreter's teardown would still do is free every object one by one:
        # 10-30 ms of a worker's stop on a loaded 2-core box (docs/benchmarks.md "Worker
        # stop"). The CDR file is written with write(2) and closed, the sockets lingered in
        # ctx.destroy, the loop's executor joined by asyncio.Runner; the log is stdout
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return code
