"""The worker process core: routes every message of the calls it owns."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
import zmq

from conf import envelope as env
from conf.loadstats import LoadMeter
from conf.settings import Settings
from workers.bus import IngressBus
from workers.proxy import Drop, Inbound, Malformed, StatelessProxy
from workers.routing import RoutingTable

log = structlog.get_logger()


class Worker:
    def __init__(self, settings: Settings, worker_id: str, ctx: zmq.Context[Any]) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self.loop.time())
        self.proxy = StatelessProxy(settings, RoutingTable(settings))
        self.bus = IngressBus(ctx, settings.bus, settings.node.run_dir, worker_id, self._on_batch,
                              self.meter)  # fmt: skip
        #: worst time a message waited between its arrival at an ingress and its handling here
        self.max_delay_s = 0.0

    def _on_batch(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        t0 = time.perf_counter()
        if metas:  # the first message of a batch waited longest (CLOCK_MONOTONIC is host-wide)
            self.max_delay_s = max(self.max_delay_s, time.monotonic() - metas[0][env.IN_RECEIVED_AT])
        counters = self.meter.counters
        send = self.bus.send
        handle = self.proxy.handle
        counters["msgs_in"] += len(metas)
        sent = 0
        for meta, raw in zip(metas, payloads):
            inb = Inbound(ingress, meta[0], meta[1], meta[2], meta[3], meta[4], meta[5])
            try:
                outs = handle(raw, inb)
            except Malformed as m:
                counters["drop_malformed"] += 1
                self._rejected(m, inb)
                if m.reply is not None:
                    sent += send(*m.reply)
                continue
            except Drop as d:
                counters["drop_" + d.reason] += 1
                continue
            except Exception:  # a bug must cost one message, not the process
                counters["drop_bug"] += 1
                log.exception("message_failed", ingress=ingress)
                continue
            for ingress_id, out_meta, data in outs:
                sent += send(ingress_id, out_meta, data)
        counters["msgs_out"] += sent
        self.meter.add_busy(time.perf_counter() - t0)

    def _rejected(self, m: Malformed, inb: Inbound) -> None:
        log.info("message_rejected", status=m.error.status, reason=m.error.detail,
                 src=f"{inb.src_ip}:{inb.src_port}", transport=inb.transport,
                 answered=m.reply is not None)  # fmt: skip

    def stats(self, interval_s: float) -> dict[str, Any]:
        delay, self.max_delay_s = self.max_delay_s, 0.0
        return {
            **self.meter.snapshot(interval_s),
            "queue_delay_max_ms": round(delay * 1000, 2),
            "queued_out": self.bus.queued,
        }

    def close(self) -> None:
        self.bus.close()
