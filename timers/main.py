"""``sipline timers``: one timer service process (``honcho start -c timers=N`` shards keys)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import structlog
import zmq

from conf import process, sockets
from conf.control import ControlServer
from conf.pipe import oldest_ms
from conf.settings import Settings
from timers.service import TimerService

log = structlog.get_logger()


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    ident = f"{process.proc_name('timers')}-{os.getpid()}"
    sockets.remove_stale(settings.node.run_dir)  # a killed predecessor's socket file
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    service = TimerService(ctx, settings, ident)
    loop = asyncio.get_running_loop()

    def ctl_stats(_: dict[str, Any]) -> dict[str, Any]:
        hops = service.hops()
        return {**service.meter.control("timers"), "armed": len(service.schedule),
                **service._stats.summary_ms(), "queued_out": sum(
                    h["queued"] for h in hops.values()), "queued_oldest_ms": oldest_ms(hops),
                "hops": hops}  # fmt: skip

    control = ControlServer(ctx, settings.node.run_dir, ident, {"stats": ctl_stats})
    interval = settings.log.stats_interval_s

    def each_second() -> None:
        service.meter.tick(loop.time())
        service.adapt()

    def report() -> None:
        log.info("load_stats", **service.stats(interval))

    log.info("timers_ready", endpoint=service.endpoint)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(process.every(settings.bus.heartbeat_ms / 1000, stop,
                                         service.expire_workers))  # fmt: skip
            tg.create_task(process.every(1.0, stop, each_second))
            tg.create_task(process.every(interval, stop, report))
    finally:
        # the socket file goes first, so clients move their timers to the other shards
        service.close()
        control.close()
        ctx.destroy(linger=sockets.LINGER_MS)
    return 0


def main(conf: str | None = None) -> int:
    return process.run("timers", serve, conf)
