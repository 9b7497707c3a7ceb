"""The worker process core: routes every message of the calls it owns."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import structlog
import zmq

from conf import envelope as env
from conf.loadstats import LoadMeter
from conf.settings import Settings
from workers.bus import IngressBus
from workers.proxy import Drop, Inbound, Malformed, Out, StatelessProxy
from workers.routing import RoutingTable
from workers.stateful import StatefulProxy

log = structlog.get_logger()


class Worker:
    def __init__(self, settings: Settings, worker_id: str, ctx: zmq.Context[Any]) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self.loop.time())
        self.proxy = StatelessProxy(settings, RoutingTable(settings))
        stateful = StatefulProxy(settings, self.proxy)
        #: the transaction user when any route is stateful; None keeps the stateless fast path
        self.stateful = stateful if stateful.any_stateful else None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
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
        handle: Any = self.proxy.handle
        if self.stateful is not None:
            handle = functools.partial(self.stateful.handle, now=self.loop.time())
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
        if self.stateful is not None:
            self._arm_timer()
        self.meter.add_busy(time.perf_counter() - t0)

    def _arm_timer(self) -> None:
        """One loop timer for the earliest transaction timer (aioquic's single ``call_at``)."""
        assert self.stateful is not None
        at = self.stateful.next_deadline()
        if at is None or (self._timer is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        assert self.stateful is not None
        t0 = time.perf_counter()
        self._timer = None
        outs: list[Out] = self.stateful.handle_timer(max(self._timer_at, self.loop.time()))
        sent = sum(self.bus.send(*out) for out in outs)
        self.bus.flush()
        self.meter.counters["msgs_out"] += sent
        self._arm_timer()
        self.meter.add_busy(time.perf_counter() - t0)

    def _rejected(self, m: Malformed, inb: Inbound) -> None:
        log.info("message_rejected", status=m.error.status, reason=m.error.detail,
                 src=f"{inb.src_ip}:{inb.src_port}", transport=inb.transport,
                 answered=m.reply is not None)  # fmt: skip

    def stats(self, interval_s: float) -> dict[str, Any]:
        delay, self.max_delay_s = self.max_delay_s, 0.0
        out = {
            **self.meter.snapshot(interval_s),
            "queue_delay_max_ms": round(delay * 1000, 2),
            "queued_out": self.bus.queued,
        }
        if self.stateful is not None:
            out["transactions"] = len(self.stateful.table)
            out["txn"] = dict(self.stateful.counters)
        return out

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.bus.close()
