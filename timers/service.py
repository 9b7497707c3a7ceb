"""The timer service's ZeroMQ wiring: arms and cancels in, fires out to each timer's armer
(or, once it is gone, to the key's owner).

Rules (docs/timers.md tells the whole protocol):
1. One PULL socket at ``timers-<id>.ipc`` takes worker heartbeats (who is alive, where it
   listens) and TOPS messages (arms and cancels). On a worker's first heartbeat the service
   connects a pipe to it (``conf.pipe.WorkerPipes``, shared with the ingress).
2. A key holds one timer, the one with the highest ``gen`` (the host-wide CLOCK_MONOTONIC ns
   of its arm), so replays and re-syncs in any order converge. A cancel removes the timer if
   it is not newer than the cancel. When another worker's timer is replaced, cancelled, or
   fired to a worker that is not its armer, the armer gets a ``done`` notice and forgets it.
3. A timer fires to the worker that armed it while that worker is alive (it holds the
   dialog: one handed to another worker is armed again there, a newer gen), else to the
   live worker that owns its key now (``WorkerSet.owner``, the ingresses' hash, over the key
   up to its first NUL: ``wire.owner_key``). Firing to the owner while the armer lived lost
   BYEs: a call the ingress sent to a worker before it heard of the owner stays with its
   armer, and the owner had no dialog to end. With no live worker, timers wait;
   a fire a full pipe refuses is parked and retried, never dropped.
4. Wake-ups come from the schedule (next deadline, plus the policy's coalescing window), in
   batches of at most the policy's ``max_batch``; a full batch that leaves due timers behind is
   an overrun, and the rest fire on the next loop iteration, so arms are never starved.
5. After start the service waits ``STARTUP_HEARTBEATS`` heartbeat intervals before firing:
   it must have heard every live worker, or it would fire to the wrong owner.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from conf import envelope, refused, sockets
from conf.guard import GUARD
from conf.loadstats import LoadMeter
from conf.pipe import WorkerPipes, hops, oldest_ms
from conf.settings import Settings
from timers import wire
from timers.lateness import LatenessWindow
from timers.policy import BatchPolicy
from timers.schedule import Schedule, Timer

log = structlog.get_logger()

#: heartbeat intervals to listen before the first fire (rule 5): two, so every worker's
#: 250 ms heartbeat has arrived at least once
STARTUP_HEARTBEATS = 2
#: ops applied per readable callback before fires and heartbeats get their turn (~3 µs each)
OPS_PER_CALLBACK = 8192


def _whole_ms(delay_s: float) -> float:
    """The loop's timers count whole milliseconds and uvloop rounds to the nearest: 0.4 ms
    would wake at once, find nothing due, and spin (measured: 30 000 empty wake-ups a second
    at 5 000 fires a second). Round up instead; a timer is then at most 1 ms late by it."""
    return 0.0 if delay_s <= 0 else math.ceil(delay_s * 1000) / 1000


class TimerService:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings, ident: str,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        bus, cfg = settings.bus, settings.timers
        self.ident = ident
        self.endpoint = sockets.endpoint(settings.node.run_dir, "timers", ident)
        self.schedule = Schedule()
        self.policy = BatchPolicy(cfg.max_batch, cfg.max_batch_cap, cfg.late_threshold_ms / 1000,
                                  cfg.max_coalesce_ms / 1000)  # fmt: skip
        self._ctx, self._bus, self._clock = ctx, bus, clock
        self._loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self._loop.time())
        # fires still queued for a worker that is gone die with its calls: counted
        self._peers = WorkerPipes(ctx, bus, settings.node.run_dir, envelope.KIND_TIMER, self._header,
                                  self.meter.counters)  # fmt: skip
        self.workers = self._peers.workers
        self._pipes = self._peers.pipes
        self._parked: deque[tuple[str, Timer]] = deque()
        self._stats, self._window = LatenessWindow(1), LatenessWindow(2)
        self.overruns = 0
        self._window_overruns = 0
        self._ready_at = clock() + STARTUP_HEARTBEATS * bus.heartbeat_ms / 1000
        self._wake: asyncio.Handle | None = None
        self._wake_at = math.inf
        self._pull = sockets.bind_pull(ctx, self.endpoint, bus.hwm)
        self._reader = GUARD.add_reader(self._loop, self._pull.FD, "timers_bus", self._on_readable)
        self._loop.call_at(self._loop.time() + self._ready_at - clock(), self._reschedule)

    # -- input ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        t0 = time.perf_counter()
        if self._drain():
            self._loop.call_soon(self._reader)  # let fires run before the rest
        self._reschedule()
        self._flush()
        self.meter.add_busy(time.perf_counter() - t0)

    def _drain(self) -> bool:
        """Like ``conf.pipe.drain_pull``, but the budget counts ops, not messages: a TOPS
        message carries up to 4096 of them, and a re-sync after a restart sends hundreds."""
        budget = OPS_PER_CALLBACK
        while budget > 0 and not self._pull.closed:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return False
            try:
                env = envelope.unpack(frames)
            except envelope.EnvelopeError as exc:
                self.meter.counters["drop_bad_envelope"] += 1
                refused.ENVELOPES.note(time.monotonic(), reason=str(exc)[:200])
                continue
            self._on_envelope(env)
            h = env.header
            budget -= 1 + (len(h[3]) + len(h[4]) if env.kind == envelope.KIND_TOPS else 0)
        return budget <= 0

    def _on_envelope(self, env: envelope.Envelope) -> None:
        if env.kind == envelope.KIND_TOPS:
            self.meter.counters["op_msgs"] += 1  # messages, against arms + cancels: the batching
            self._apply_ops(env.header)
        elif env.kind == envelope.KIND_HB:
            self._on_heartbeat(*env.header[:3])  # a 4th (a ring) is an ingress's

    def _apply_ops(self, header: list[Any]) -> None:
        worker, epoch, end_sync, arms, cancels = header
        if type(epoch) is not int:
            self.meter.counters["drop_bad_op"] += 1
            return
        worker = sys.intern(worker)  # one string per worker, not one per timer
        now = self._clock()  # one float shared by the message's timers
        for a in arms:
            if wire.valid_arm(a):
                self._arm(worker, epoch, now, a[0], float(a[1]), a[2], a[3], a[4])
            else:
                self.meter.counters["drop_bad_op"] += 1
        for c in cancels:
            if wire.valid_cancel(c):
                self._cancel(worker, c[0], c[1])
            else:
                self.meter.counters["drop_bad_op"] += 1
        if end_sync:
            self._end_sync(worker, epoch)

    def _arm(self, worker: str, epoch: int, now: float, key: str, deadline: float, kind: str,
             payload: bytes, gen: int) -> None:  # fmt: skip
        counters = self.meter.counters
        counters["arms"] += 1
        old = self.schedule.get(key)
        if old is not None:
            if (old.gen, old.armer) > (gen, worker):  # a newer arm holds the key (rule 2)
                counters["arms_stale"] += 1
                if old.armer != worker:
                    self._notify_done(worker, key, gen)
                return
            if old.gen == gen:  # the same arm again: a re-sync after a restart or a move
                self.schedule.set_epoch(key, epoch)
                return
            if old.armer != worker:
                counters["arms_superseded"] += 1
                self._notify_done(old.armer, key, old.gen)
        if deadline < now:
            counters["arms_overdue"] += 1  # re-armed after a restart, or armed in the past
        self.schedule.arm(key, deadline, sys.intern(kind), payload, armer=worker, gen=gen,
                          epoch=epoch, since=now)  # fmt: skip

    def _cancel(self, worker: str, key: str, gen: int) -> None:
        self.meter.counters["cancels"] += 1
        old = self.schedule.get(key)
        if old is None or old.gen > gen:  # nothing armed, or armed after the cancel was issued
            return
        self.schedule.cancel(key)
        if old.armer != worker:
            self._notify_done(old.armer, key, old.gen)

    def _end_sync(self, worker: str, epoch: int) -> None:
        """The worker re-sent all it holds here: what it did not re-send is gone."""
        gone = [t.key for t in self.schedule.timers() if t.armer == worker and t.epoch < epoch]
        for key in gone:
            self.schedule.cancel(key)
        log.info("timers_resynced", worker=worker, epoch=epoch, removed=len(gone))

    def _on_heartbeat(self, ident: str, endpoint: str, state: str) -> None:
        if self._peers.heartbeat(ident, endpoint, state, self._loop.time()) == "joined":
            self._reschedule()

    def _header(self, metas: list[Any]) -> list[Any]:
        return [self.ident, metas]

    def expire_workers(self) -> None:
        """Drop workers whose heartbeats stopped; call every heartbeat interval."""
        self._peers.expire(self._loop.time())
        if self._parked:
            self._reschedule(soon=True)

    # -- firing --------------------------------------------------------------------------

    def _reschedule(self, soon: bool = False) -> None:
        """Wake at the next deadline (plus the coalescing window), or sooner if asked."""
        now = self._clock()
        nd = self.schedule.next_deadline()
        if not len(self.workers):
            return  # no one to fire to: a worker's arrival reschedules
        if soon:
            at = now
        elif nd is not None:
            at = nd + self.policy.coalesce_s
        else:
            return  # nothing armed: an arm reschedules
        at = max(at, self._ready_at)
        if self._wake is not None:
            if at >= self._wake_at:
                return
            self._wake.cancel()
        self._wake_at = at
        self._wake = self._loop.call_later(_whole_ms(at - now), self._on_wake)

    def _on_wake(self) -> None:
        t0 = time.perf_counter()
        self._wake, self._wake_at = None, math.inf
        now = self._clock()
        if now < self._ready_at or not len(self.workers):
            self._reschedule()
            return
        self._retry_parked()
        batch = self.schedule.expire(now, self.policy.max_batch)
        for t in batch:
            self._fire(t)
        self._flush()
        self._measure(batch)
        nd = self.schedule.next_deadline()
        if nd is not None and nd <= now:
            self.overruns += 1
            self._window_overruns += 1
        self._reschedule(soon=nd is not None and nd <= now)
        self.meter.add_busy(time.perf_counter() - t0)

    def _measure(self, batch: list[Timer]) -> None:
        # lateness as of the moment the batch was handed to ZeroMQ (an upper bound), from when
        # the timer could first fire here: a timer that arrived overdue (re-armed after a
        # restart) is not late by this process's doing, and must not make the policy adapt
        sent_at = self._clock()
        for t in batch:
            late = sent_at - max(t.deadline, t.since)
            self._stats.add(late)
            self._window.add(late)
        self.meter.counters["fired"] += len(batch)

    def _fire(self, t: Timer) -> None:
        # rule 3: the armer holds the dialog unless it was handed on, and a hand-over re-arms
        # (a newer gen, a new armer); a worker may hold a call it does not own (the ingress
        # sent it there before it heard the owner), so the owner is only for a dead armer
        owner = t.armer if t.armer in self.workers else self.workers.owner(wire.owner_key(t.key))
        pipe = self._pipes.get(owner) if owner is not None else None
        if pipe is None or not pipe.add([wire.OP_FIRE, t.key, t.kind, t.deadline, t.armer, t.gen],
                                        t.payload):  # fmt: skip
            self._parked.append((wire.OP_FIRE, t))
            return
        if t.armer != owner:
            self._notify_done(t.armer, t.key, t.gen)

    def _notify_done(self, armer: str, key: str, gen: int) -> None:
        pipe = self._pipes.get(armer)
        if pipe is None:
            return  # the armer is gone, and what it held with it
        if not pipe.add([wire.OP_DONE, key, "", 0.0, armer, gen], b""):
            self._parked.append((wire.OP_DONE, Timer(key, 0.0, "", b"", armer, gen)))

    def _retry_parked(self) -> None:
        for _ in range(min(len(self._parked), self.policy.max_batch)):
            op, t = self._parked.popleft()
            if op == wire.OP_FIRE:
                self._fire(t)
            else:
                self._notify_done(t.armer, t.key, t.gen)

    def _flush(self) -> None:
        for pipe in self._pipes.values():
            pipe.flush()

    # -- reporting -----------------------------------------------------------------------

    def adapt(self) -> None:
        """Feed the last window to the policy; call once a second."""
        p99 = self._window.percentile(0.99)
        overruns, self._window_overruns = self._window_overruns, 0
        self._window.reset()
        change = self.policy.observe(p99, overruns)
        if change is not None:
            log.info("timers_adapted", reason=change.reason, max_batch=change.max_batch,
                     coalesce_ms=round(change.coalesce_s * 1000, 2),
                     late_p99_ms=round(p99 * 1000, 2), overruns=overruns)  # fmt: skip

    def hops(self) -> dict[str, dict[str, float]]:
        """Per worker pipe: backlog depth, oldest fire's wait, fires sent (``conf.pipe``)."""
        return hops(self._pipes.values(), self._loop.time())

    def stats(self, interval_s: float) -> dict[str, Any]:
        hops = self.hops()
        return {
            **self.meter.snapshot(interval_s),
            **self._stats.summary_ms(),
            "overruns": self.overruns,
            "armed": len(self.schedule),
            "parked": len(self._parked),
            "workers": len(self.workers),
            "max_batch": self.policy.max_batch,
            "coalesce_ms": round(self.policy.coalesce_s * 1000, 2),
            "queued_out": sum(p.backlog_msgs for p in self._pipes.values()),
            "queued_oldest_ms": oldest_ms(hops),
            "hops": self.meter.hop_rates(hops, interval_s),
        }

    def close(self) -> None:
        self._reader.remove()
        if self._wake is not None:
            self._wake.cancel()
        self._flush()
        self._pull.close(linger=0)
        sockets.unlink(self.endpoint)
        for ident in list(self._pipes):
            self._pipes.pop(ident).close(linger_ms=sockets.LINGER_MS)
        self._peers.settle()  # pipes of workers that left, still draining
