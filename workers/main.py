"""``sipline worker``: one routing worker process."""

from __future__ import annotations

import asyncio
import signal

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
        # our socket file goes first: the other workers and the state plane read that we
        # leave (our dialogs then move to their new owners from the state plane's mirror once
        # we are gone, workers/dialogs/handover.py); then "down" so ingresses route new calls
        # elsewhere, and we read on until each has sent us the last of what it had queued
        # for us (workers/bus.py rule 10); then we finish what we hold
        sockets.unlink(worker.bus.endpoint)
        await worker.bus.leave()
        await process.until_quiet(lambda: worker.meter.counters["msgs_in"])
        await worker.aclose()
        if hop is not None:
            hop.close()
        ctx.destroy(linger=sockets.LINGER_MS)
    return 0


def main(conf: str | None = None) -> int:
    return process.run("worker", serve, conf)
