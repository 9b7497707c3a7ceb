"""The worker process core: routes every message of the calls it owns.

Drops a peer causes (a response that is not ours, a forged ``sl-c`` tag) are counted per
reason (``drop_<reason>`` in ``load_stats`` and ``ctl stats``) and logged aggregated, one
``responses_dropped`` line per reason per ``conf.guard.LOG_INTERVAL_S``: a flood of them
must not turn into a flood of log lines.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from conf import envelope as env
from conf import nodekey, rundir, sockets
from conf.control import ControlServer
from conf.guard import Throttle
from conf.loadstats import LoadMeter
from conf.pipe import PushPipe, oldest_ms
from conf.process import until_quiet
from conf.rejects import RejectTally, log_rejects
from conf.settings import Settings
from conf.workerset import WorkerSet
from ingress.sip.errors import SipError
from ingress.sip.scan import scan_message
from timers.client import Fired, TimerClient
from workers.auth.admit import Authenticator
from workers.bus import IngressBus
from workers.coreevents import Cdr, Job, Refused, TimerOp
from workers.dialogs.cdr import CdrWriter
from workers.dialogs.cdrfile import CdrFile
from workers.dialogs.deltas import DeltaLink
from workers.dialogs.handover import Forward, Withheld
from workers.dialogs.limits import SharedLimits
from workers.dialogs.owners import Owners
from workers.jobs import Jobs
from workers.proxy import Inbound, Out, StatelessProxy
from workers.ratelimit.share import RateShare
from workers.refusals import Drop, Malformed
from workers.reloading import Reloader, in_thread
from workers.routing.dispatcher import Dispatcher
from workers.routing.health import HealthChanged
from workers.routing.prefix_route import PrefixTables
from workers.routing.probes import probe_share
from workers.routing.reload import Routing, initial
from workers.routing.table import RoutingTable
from workers.stateful import StatefulProxy

#: dialogs one worker lists for ``sipline ctl dialogs --list`` at most (one control reply)
MAX_LISTED = 10_000
#: drops logged aggregated (module docstring): what a peer sends us that we never asked for
LOGGED_DROPS = frozenset({"stray_response", "forged_tag"})
#: the core's loop timer is rounded up to a multiple of T1 / TIMER_GRAIN (10 ms with the
#: default T1 of 500 ms; at most 2 % of the shortest retransmission interval late): at a
#: thousand calls a second each call's Timer K (and, after 32 s, J, L, M) would otherwise
#: wake the loop on its own, and one wake-up with its sends costs more than the timers it
#: fires (docs/benchmarks.md "Stateful worker path")
TIMER_GRAIN = 50

log = structlog.get_logger()


class Worker:
    def __init__(self, settings: Settings, worker_id: str, ctx: zmq.Context[Any],
                 prefixes: PrefixTables | None = None) -> None:  # fmt: skip
        """``prefixes``: the prefix tables read at start (``workers/main.py``); None reads
        the file tables here (tests, benchmarks)."""
        self.settings = settings
        self.worker_id = worker_id
        self.loop = asyncio.get_running_loop()
        self.meter = LoadMeter(self.loop.time())
        #: messages the full parse refused, by source: logged as ``rejected`` lines per interval
        self.rejects = RejectTally(settings.log.rejected_interval_s, self.loop.time())
        #: with workers on several hosts, the ingresses' ring (conf/bustcp.py rule 6): the
        #: owner of a probe's Call-ID among every host's workers; None on one host
        self.ring: WorkerSet | None = None
        self.dispatcher = Dispatcher(settings.destination_set, settings.listen,
                                     instance=f"{os.getpid()}-{secrets.token_hex(3)}",
                                     owns=self._owns)  # fmt: skip
        table = RoutingTable(settings, self.dispatcher, prefixes)
        self.proxy = StatelessProxy(settings, table, key=nodekey.load(settings.node.run_dir))
        self.proxy.counters = self.meter.counters  # relay_refused (proxy rule 10)
        self.proxy.auth = Authenticator.from_settings(settings, f"{settings.node.name}/{worker_id}",
                                                      self.loop.time())  # fmt: skip
        self._drop_log = Throttle()
        #: dialog lifetimes live in the timer service (timers/) when dialogs are on
        self.timers: TimerClient | None = None
        stateful = StatefulProxy(settings, self.proxy, external_timers=settings.dialogs.enabled)
        #: the stateful core when anything needs it; None keeps the stateless fast path
        self.stateful = stateful if stateful.needed else None
        #: its cacheDB and DNS work, as tasks
        self.jobs = Jobs(settings, stateful, self.loop, self.meter, self._job_done_outs) if (
            self.stateful is not None) else None  # fmt: skip
        self.cdrs: CdrFile | None = None
        dlg = settings.dialogs
        if dlg.cdr_file and self.stateful is not None:
            gid = rundir.group_id(dlg.cdr_group or settings.node.run_group)
            self.cdrs = CdrFile(CdrWriter(dlg.cdr_file, fsync_s=dlg.cdr_fsync_ms / 1000, gid=gid,
                                          clock=self.loop.time), self.loop,
                                dlg.cdr_peer_files, log_all=dlg.cdr_log == "all")  # fmt: skip
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._timer_grain_s = settings.transactions.t1_ms / 1000 / TIMER_GRAIN
        if settings.dialogs.enabled:
            self.timers = TimerClient(ctx, settings, worker_id, self._on_timers)
        #: every dialog delta goes to the node's state plane, one batch per bus flush,
        #: whenever dialogs are on: its mirror is where dialogs moving between workers come
        #: from (docs/dialogs.md "Dialogs follow their Call-ID"); None without dialogs
        self.deltas: DeltaLink | None = None
        if stateful.dialogs is not None:
            stateful.dialogs.emit_deltas = True
            ep = f"ipc://{settings.node.run_dir}/{env.STATEPLANE_DELTAS}"
            pipe = PushPipe("stateplane", sockets.connect_push(ctx, ep, settings.bus.hwm),
                            env.KIND_DELTAS, lambda batches: [worker_id, [
                                d for batch in batches for d in batch]],
                            settings.bus.max_batch if settings.bus.flush_ms else 1,
                            settings.bus.max_pending)  # fmt: skip
            self.deltas = DeltaLink(pipe, stateful.dialogs, worker_id, self.meter.counters,
                                    sockets.endpoint_path(ep))  # fmt: skip
        #: call limits counted across the node's workers (and peer nodes'), when any is set
        self.limits: SharedLimits | None = None
        if stateful.dialogs is not None and any(p.limit for p in settings.dialog_profile):
            self.limits = SharedLimits(ctx, settings, worker_id, stateful.dialogs.profiles,
                                       self.loop.time)  # fmt: skip
        #: shared [[ratelimit]] pipes exchange counts with the other workers (ratelimit_share)
        self.rate_share: RateShare | None = None
        rl = self.proxy.ratelimit
        if rl is not None and rl.shared:
            self.rate_share = RateShare(ctx, settings, worker_id, rl, self.loop.time)
        #: the node's workers as this one sees them, and the dialogs that move between them
        #: (workers/dialogs/owners.py); probe answers come back to the owner of their
        #: Call-ID, so probes use Call-IDs this worker owns
        self.owners = Owners(settings, worker_id, self.loop, self.meter.counters, self.stateful,
                             self.deltas, self._on_batch, self._after_core, self._share_probes,
                             self.cdrs, self.limits)  # fmt: skip
        own = self.owners
        self.bus = IngressBus(ctx, settings.bus, settings.node.run_dir, worker_id, self._on_batch,
                              self.meter, on_timer=self.timers.receive if self.timers is not None else None,
                              on_adopt=own.on_adopt, on_release=own.on_release,
                              on_forward=own.on_forward, on_handed=own.on_handed,
                              on_host=own.on_host)  # fmt: skip
        own.bus = self.bus
        if self.stateful is not None:  # CDRs and deltas before a batch that fills (bus.py rule 3)
            self.bus.on_full = self._after_core
        if settings.bus.flush_ms:  # deltas and timer ops ride the bus's flush (bus.py rule 3)
            self.bus.before_flush = self._flush_side
            if self.deltas is not None:
                self.deltas.defer = self.bus.flush_soon
            if self.timers is not None and not settings.timers.ops_flush_ms:
                self.timers.defer = self.bus.flush_soon  # else they wait longer (client rule 5)
        if own.hostview is not None:
            self.bus.on_ring = own.refresh_peers  # a ring changed moves dialogs at once
            self.bus.on_back = own.back  # out of the edge's ring and back (owners.py rule 7)
        self.proxy.ingresses = self.bus.ingresses  # tags name live ingresses only
        #: ``ctl reload`` and SIGHUP (workers/reloading.py); ``destination_state`` marks
        self.reloader = Reloader(initial(settings, table), self.stateful is not None,
                                 self._new_dispatcher, self._use_routing, self.loop.time,
                                 in_thread(self.loop))  # fmt: skip
        self.control = ControlServer(ctx, settings.node.run_dir, worker_id, {
            **self.reloader.handlers(),
            "stats": self._ctl_stats,
            "destinations": lambda _: {"destinations": self.dispatcher.status(self.loop.time())},
            "dialogs": self._ctl_dialogs,
            "ratelimit": self._ctl_ratelimit,
        })  # fmt: skip
        # after the bind, before any control message: no mark is missed (reloading.py rule 6)
        self.reloader.apply_marks()
        #: worst time a message waited between its arrival at an ingress and its handling here
        self.max_delay_s = 0.0
        self.slow_s = settings.log.slow_message_ms / 1000
        if self.stateful is not None:
            self.loop.call_soon(own.refresh_peers)
            self.loop.call_soon(self._after_core)  # arm the first probe timer

    def heartbeat(self) -> None:
        self.bus.heartbeat()
        ring = self.bus.ring()
        if ring is None:
            self.ring = None
        elif self.ring is None or set(self.ring.idents) != ring:
            self.ring = WorkerSet.fixed(dict.fromkeys(ring, ""))
        if self.rejects.due(self.loop.time()):
            log_rejects(self.rejects, self.loop.time())
        if self.rate_share is not None:
            self.rate_share.refresh()
        if self.stateful is not None:
            self._arm_timer()  # a timer callback that raised (conf/guard.py) left none armed
            self.owners.heartbeat()
        if self.limits is not None:
            self.limits.heartbeat(self.loop.time())
        if self.deltas is not None:
            self.deltas.heartbeat()

    def _flush_side(self) -> None:
        """What leaves with each bus flush before the ingresses' batches (bus.py rule 3)."""
        if self.deltas is not None:
            self.deltas.pipe.flush()
        if self.timers is not None and self.timers.defer is not None:
            self.timers.flush()

    def hops(self) -> dict[str, dict[str, float]]:
        """Every pipe this worker pushes into: one per ingress, and the state plane's."""
        now = self.loop.time()
        out = self.bus.hops(now)
        if self.deltas is not None:
            out[self.deltas.pipe.peer] = self.deltas.pipe.hop(now)
        return out

    def _ctl_stats(self, _: dict[str, Any]) -> dict[str, Any]:
        hops = self.hops()
        out: dict[str, Any] = {**self.meter.control("worker"), "queued_out": self.bus.queued,
                               "queued_oldest_ms": oldest_ms(hops), "hops": hops,
                               "rejected": dict(self.rejects.totals),
                               "routing": self.reloader.stats()}  # fmt: skip
        if self.proxy.auth is not None:
            out["auth"] = self.proxy.auth.stats()
        if self.stateful is not None:
            out["transactions"] = len(self.stateful.table)
            out["txn_held"] = self.stateful.table.held.stats()  # docs/transactions.md "Held"
            out["txn"] = dict(self.stateful.counters)
            out["jobs"] = len(self.jobs) if self.jobs is not None else 0
            if self.timers is not None:
                out["timers"] = {"armed": len(self.timers), **self.timers.counters}
            if self.stateful.dialogs is not None:
                out["dialogs"] = self.stateful.dialogs.stats()
                out["handover"] = self.owners.stats()
            if self.limits is not None:
                out["limits"] = self.limits.stats()
        return out

    def _ctl_ratelimit(self, _: dict[str, Any]) -> dict[str, Any]:
        rl = self.proxy.ratelimit
        out: dict[str, Any] = {"ratelimit": rl.status(self.loop.time()) if rl else []}
        if self.rate_share is not None:
            out["share"] = self.rate_share.stats()
        return out

    def share_tick(self) -> None:
        """Every ``SHARE_INTERVAL_S``: publish the shared pipes' counts (ratelimit rule 5)."""
        if self.rate_share is not None:
            self.rate_share.tick(self.loop.time())

    def _ctl_dialogs(self, args: dict[str, Any]) -> dict[str, Any]:
        core = self.stateful
        if core is None or core.dialogs is None:
            return {"dialogs": None}
        out: dict[str, Any] = {"dialogs": core.dialogs.stats()}
        limit = args.get("list")
        if isinstance(limit, int) and limit > 0:
            out["list"] = core.dialogs.listing(min(limit, MAX_LISTED))
        return out

    def _owns(self, call_id: str) -> bool:
        owner = (self.ring or self.owners.peers).owner(call_id.encode("utf-8", "surrogateescape"))
        return owner is None or owner == self.worker_id

    def _on_batch(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        t0 = time.perf_counter()
        if metas:  # the first message of a batch waited longest (CLOCK_MONOTONIC is host-wide)
            self.max_delay_s = max(self.max_delay_s, time.monotonic() - metas[0][env.IN_RECEIVED_AT])
        counters = self.meter.counters
        send = self.bus.send
        handle = self.proxy.handle
        if self.proxy.ratelimit is not None or self.proxy.auth is not None:
            self.proxy.now, self.proxy.load = self.loop.time(), self.meter.busy_1s
        # the core's handle called with positional arguments: a functools.partial with
        # keywords built a dict per message (#16)
        core = self.stateful
        now, wall = (self.loop.time(), time.time()) if core is not None else (0.0, 0.0)
        counters["msgs_in"] += len(metas)
        sent = 0
        slow_s, clock = self.slow_s, time.perf_counter
        for meta, raw in zip(metas, payloads):
            inb = Inbound(ingress, meta[0], meta[1], meta[2], meta[3], meta[4], meta[5])
            try:
                t1 = clock() if slow_s else 0.0
                outs = handle(raw, inb) if core is None else core.handle(raw, inb, now, wall)
                if slow_s and clock() - t1 > slow_s:
                    self._slow(raw, meta, clock() - t1)
            except Malformed as m:
                counters["drop_malformed"] += 1
                self._rejected(m, inb)
                if m.reply is not None:
                    sent += send(*m.reply)
                continue
            except Drop as d:
                counters["drop_" + d.reason] += 1
                if d.reason in LOGGED_DROPS:
                    self._dropped(d.reason, inb)
                continue
            except Withheld:  # its dialog is on its way here (workers/dialogs/handover.py)
                self.owners.hold(ingress, meta, raw)
                continue
            except Forward as f:
                self.owners.forward(f.owner, ingress, meta, raw)
                continue
            except Exception:  # a bug must cost one message, not the process
                counters["drop_bug"] += 1
                log.exception("message_failed", ingress=ingress)
                continue
            for ingress_id, out_meta, data in outs:
                sent += send(ingress_id, out_meta, data)
        counters["msgs_out"] += sent
        if self.stateful is not None:
            self._after_core()
        self.meter.add_busy(time.perf_counter() - t0)

    def _after_core(self) -> None:
        """Take every event the core queued: start its cacheDB jobs, hand its dialog timers to
        the timer service, write its CDRs, log refusals and health changes; then re-arm."""
        assert self.stateful is not None
        core, cdrs = self.stateful, False
        while (ev := core.next_event()) is not None:
            if isinstance(ev, Job):
                assert self.jobs is not None
                self.jobs.start(ev)
            elif isinstance(ev, TimerOp):
                self._timer_op(ev)
            elif isinstance(ev, Cdr):
                if self.cdrs is None:  # no CDR file: the log is where CDRs go
                    log.info("cdr", **ev.fields)
                else:  # the file, and the log as [dialogs] cdr_log says
                    self.cdrs.write(ev.fields)
                cdrs = True
            elif isinstance(ev, Refused):
                log.info("call_refused", **ev.fields)
            elif isinstance(ev, HealthChanged) and not ev.remote:
                log.warning("destination_health", set=ev.set_name, uri=ev.uri, old=ev.old,
                            new=ev.new, cause=ev.cause, fails=ev.fails, status=ev.status)  # fmt: skip
        if cdrs and self.cdrs is not None:  # written before this iteration's "t" deltas leave
            self.cdrs.flush()  # (workers/dialogs/cdr.py rule 2)
        if self.deltas is not None:  # one message per iteration; a loss is repaired
            self.deltas.after_iteration()
        if self.limits is not None:
            self.limits.after_iteration()
        self._arm_timer()

    def _timer_op(self, op: TimerOp) -> None:
        if self.timers is None:
            return
        if op.deadline is None:
            self.timers.cancel(op.key)
            return
        try:
            self.timers.arm(op.key, op.deadline, "dialog")
        except ValueError:  # a Call-ID past the wire's key limit: no lifetime timer
            self.meter.counters["drop_timer_key"] += 1

    def reopen_cdrs(self) -> None:
        """SIGHUP: the CDR file was rotated (logrotate's postrotate)."""
        if self.cdrs is not None:
            self.cdrs.reopen()

    def on_sighup(self) -> None:
        """SIGHUP: reopen the CDR file, then re-read the configuration (workers/reloading.py
        rule 3)."""
        self.reopen_cdrs()
        self.reloader.reload_now()

    def _new_dispatcher(self, settings: Settings) -> Dispatcher:
        return Dispatcher(settings.destination_set, settings.listen,
                          instance=self.dispatcher.instance, owns=self._owns)  # fmt: skip

    def _use_routing(self, routing: Routing) -> None:
        """The swap (workers/routing/reload.py rule 2): every reference to the routing
        objects, between two messages."""
        table = routing.table
        self.dispatcher = table.dispatcher
        self.proxy.routing, self.proxy.trusted = table, table.trusted
        if self.proxy.auth is not None:
            self.proxy.auth.store.replace_files(routing.credentials)
        if self.stateful is not None:
            self.stateful.use_routing(table.dispatcher, routing.route_modes)
            self._share_probes()
            self._arm_timer()

    def _share_probes(self) -> None:
        """Probes are shared out among this host's workers (conf/bustcp.py rule 6)."""
        self.dispatcher.assign(probe_share(self.dispatcher.probe_keys(), self.owners.host_workers,
                                           self.worker_id))  # fmt: skip

    def _on_timers(self, fired: list[Fired]) -> None:
        """Lifetimes the timer service fired to us (we own their Call-IDs now)."""
        assert self.stateful is not None
        t0 = time.perf_counter()
        now, wall = self.loop.time(), time.time()
        outs: list[Out] = []
        for f in fired:
            if f.kind == "dialog":
                call_id, nul, tag = f.key.partition("\0")
                if not nul:  # armed by an older worker: keyed by the Call-ID, tag as payload
                    tag = f.payload.decode("utf-8", "surrogateescape")
                outs += self.stateful.dialog_expired(call_id, tag, now, wall)
        self._job_done_outs(outs)
        self.meter.add_busy(time.perf_counter() - t0)

    def _job_done_outs(self, outs: list[Out]) -> None:
        sent = sum(self.bus.send(*out) for out in outs)
        self.meter.counters["msgs_out"] += sent
        self._after_core()  # the CDRs of calls these outputs end go first (workers/dialogs/cdr.py)
        self.bus.flush()

    def _arm_timer(self) -> None:
        """One loop timer for the earliest transaction timer (aioquic's single ``call_at``)."""
        assert self.stateful is not None
        at = self.stateful.next_deadline()
        if at is None:
            return
        grain = self._timer_grain_s  # TIMER_GRAIN: deadlines close together share a wake-up
        at = max(at, math.ceil(at / grain) * grain)  # never before the deadline (float error)
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self.loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        assert self.stateful is not None
        t0 = time.perf_counter()
        self._timer = None
        now = max(self._timer_at, self.loop.time())
        outs: list[Out] = self.stateful.handle_timer(now, time.time())
        ingress = self.bus.any_ingress()
        if ingress is not None:  # probes leave through any ingress: UDP is not per connection
            # NAT keep-alives name the ingress their contact registered through
            outs += [(i or ingress, meta, data) for i, meta, data in self.stateful.probes(now)]
        pinger = self.stateful.natping
        if pinger is not None and pinger.drops and self.jobs is not None:
            for aor, contact in pinger.drops:
                self.jobs.drop_binding(aor, contact)
            pinger.drops.clear()
        sent = sum(self.bus.send(*out) for out in outs)
        self.meter.counters["msgs_out"] += sent
        self._after_core()  # the CDRs of calls these outputs end go first (workers/dialogs/cdr.py)
        self.bus.flush_soon()  # with the deltas and the messages of this flush (bus.py rule 3)
        self.meter.add_busy(time.perf_counter() - t0)

    def _slow(self, raw: bytes, meta: list[Any], took_s: float) -> None:
        """Threshold log: where the time of one slow message went (queued, then handled)."""
        try:
            summary = scan_message(raw)
            call_id, method = summary.call_id.decode("latin-1"), summary.method
        except SipError:
            call_id, method = "", None
        queued = time.monotonic() - meta[env.IN_RECEIVED_AT] - took_s
        log.warning("slow_message", call_id=call_id, method=method.decode() if method else
                    "response", handle_ms=round(took_s * 1000, 2),
                    queued_ms=round(max(0.0, queued) * 1000, 2))  # fmt: skip

    def _dropped(self, reason: str, inb: Inbound) -> None:
        """One ``responses_dropped`` line per reason per interval (module docstring)."""
        since = self._drop_log.hit(reason)
        if since is not None:
            log.warning("responses_dropped", reason=reason, total=self.meter.counters[
                "drop_" + reason], since_last_log=since + 1, last_src=f"{inb.src_ip}:{inb.src_port}",
                transport=inb.transport)  # fmt: skip

    def _rejected(self, m: Malformed, inb: Inbound) -> None:
        """Counted, not logged on its own: a peer must not decide how much we log."""
        answered = m.reply is not None
        self.rejects.add(inb.src_ip, m.error.key, m.error.detail, answered)
        log.debug("message_rejected", status=m.error.status, reason=m.error.detail,
                  src=f"{inb.src_ip}:{inb.src_port}", transport=inb.transport,
                  answered=answered)  # fmt: skip

    def stats(self, interval_s: float) -> dict[str, Any]:
        delay, self.max_delay_s = self.max_delay_s, 0.0
        hops = self.hops()
        out = {
            **self.meter.snapshot(interval_s),
            "queue_delay_max_ms": round(delay * 1000, 2),
            "queued_out": self.bus.queued,
            "queued_oldest_ms": oldest_ms(hops),
            "hops": self.meter.hop_rates(hops, interval_s),
            "rejected": dict(self.rejects.totals),
        }
        if self.proxy.auth is not None:
            out["auth"] = self.proxy.auth.stats()
        if self.stateful is not None:
            out["transactions"] = len(self.stateful.table)
            out["txn_held"] = self.stateful.table.held.stats()  # docs/transactions.md "Held"
            out["txn"] = dict(self.stateful.counters)
            if self.stateful.dialogs is not None:
                out["dialogs"] = self.stateful.dialogs.stats()
            if self.stateful.natping is not None:  # docs/nat.md
                out["nat"] = {"pinged": len(self.stateful.natping), **self.stateful.natping.counters}
        return out

    async def stop(self, mark: Callable[[str], None] = lambda _: None) -> None:
        """Leave the node, finish what we hold, and close (docs/operations.md "Rolling
        restart"); ``mark(phase)`` as each phase ends (``workers.main.StopPhases``).

        Our socket file goes first: the other workers and the state plane read that we
        leave (our dialogs then move to their new owners from the state plane's mirror once
        we are gone, workers/dialogs/handover.py); then "down" so ingresses route new calls
        elsewhere, and we read on until each has sent us the last of what it had queued for
        us (workers/bus.py rule 10). Without dialogs nothing but an ingress sends us work,
        so once every ingress said ``LEFT`` nothing more can come; with them, a worker that
        has not re-read the run directory yet may still pass us a call (``FWD``,
        workers/dialogs/owners.py rule 3) and the state plane or the timers send theirs, none
        of which says when it is done: we read on until 0.1 s passed without a message, as
        we do when an ingress did not answer. Then we finish what we hold."""
        sockets.unlink(self.bus.endpoint)
        answered = await self.bus.leave()
        mark("leave")
        if not answered or self.deltas is not None:
            await until_quiet(lambda: self.meter.counters["msgs_in"])
            mark("quiet")
        await self.aclose(mark)

    async def aclose(self, mark: Callable[[str], None] = lambda _: None) -> None:
        """Let cacheDB jobs in flight finish (bounded by their own timeouts), then close;
        ``mark(phase)`` as each phase ends (``workers.main.StopPhases``)."""
        if self.jobs is not None:
            await self.jobs.aclose()
        mark("jobs")
        if self.cdrs is not None:
            self.cdrs.close()
        mark("cdrs")
        self.close()
        mark("close")

    def close(self) -> None:
        log_rejects(self.rejects, self.loop.time())  # what the last interval counted
        self.control.close()
        if self.limits is not None:
            self.limits.close()
        if self.rate_share is not None:
            self.rate_share.close()
        if self.timers is not None:
            self.timers.close()
        if self._timer is not None:
            self._timer.cancel()
        if self.cdrs is not None:
            self.cdrs.cancel()
        self.bus.close()
