"""``sipline ingress``: one ingress process."""

from __future__ import annotations

import asyncio

import structlog
import zmq

from conf import bustcp, process, sockets
from conf.settings import Settings
from ingress.service import Ingress

log = structlog.get_logger()


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    ident = bustcp.ident(settings, "ingress")
    sockets.remove_stale(settings.node.run_dir)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    ingress = Ingress(settings, ident, ctx)
    try:
        try:
            await ingress.start(stop)
        except OSError as exc:
            log.error("listen_failed", error=str(exc))
            return 1
        loop = asyncio.get_running_loop()
        interval = settings.log.stats_interval_s

        def report() -> None:
            log.info("load_stats", **ingress.stats(interval))

        async with asyncio.TaskGroup() as tg:
            tg.create_task(process.every(settings.bus.heartbeat_ms / 1000, stop, ingress.heartbeat))
            tg.create_task(process.every(1.0, stop, lambda: ingress.meter.tick(loop.time())))
            tg.create_task(process.every(interval, stop, report))
    finally:
        # the connections' drain comes on top of the usual shutdown (service.py rule 7)
        async with asyncio.timeout(settings.tcp.drain_s + process.SHUTDOWN_S):
            await ingress.drain()
            await ingress.close()
        ctx.destroy(linger=0)
    return 0


def main(conf: str | None = None) -> int:
    return process.run("ingress", serve, conf)
