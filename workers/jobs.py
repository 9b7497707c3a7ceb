"""The stateful core's slow work, run as asyncio tasks beside the message loop: REGISTERs,
location lookups and HA1 lookups (docs/auth.md) against the cacheDB, RFC 3263 lookups of a
target's host name (docs/dns.md).

Each ``Job`` the core queues becomes one task, at most ``MAX_JOBS`` at once (past it the
request gets 503); its outcome goes back into the core (``workers/jobanswers.py``:
``registered``, ``located``, ``resolved``, ``authenticated``) and what that yields is handed
to ``done``. No exception ends the worker: a cacheDB error answers 500/503, a bug answers 500.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from conf.loadstats import LoadMeter
from conf.settings import Settings
from workers import jobanswers as answers
from workers.cachedb import CacheError
from workers.coreevents import Job
from workers.dns import DnsError, Resolver, ResolverConfig
from workers.proxy import STREAMS, Out
from workers.registrar.location import Location
from workers.registrar.register import Source
from workers.stateful import StatefulProxy

#: cacheDB jobs (REGISTERs, lookups) one worker runs at once; past it requests get 503
MAX_JOBS = 4096

log = structlog.get_logger()


class Jobs:
    """The tasks of one worker's stateful core, with the location store and resolver they use."""

    def __init__(self, settings: Settings, core: StatefulProxy, loop: asyncio.AbstractEventLoop,
                 meter: LoadMeter, done: Callable[[list[Out]], None]) -> None:  # fmt: skip
        self.core = core
        self.loop = loop
        self.meter = meter
        self.done = done
        self._tasks: set[asyncio.Task[None]] = set()
        self.location: Location | None = None
        if core.registrar is not None:
            hosts = [lst.address for lst in settings.listen]
            self.location = Location.open(settings.registrar, hosts, settings.node.run_dir,
                                          slow_ms=settings.registrar.cachedb_slow_ms)  # fmt: skip
        d = settings.dns
        self.resolver = Resolver(ResolverConfig(
            nameservers=tuple(d.nameservers), timeout_s=d.timeout_s,
            attempt_timeout_s=d.attempt_timeout_s, slow_ms=d.slow_ms, cache_size=d.cache_size,
            max_ttl_s=d.max_ttl_s, negative_ttl_s=d.negative_ttl_s, naptr=d.naptr,
            transports=tuple(sorted({lst.transport for lst in settings.listen}, reverse=True)),
        ))  # fmt: skip

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, job: Job) -> None:
        if len(self._tasks) >= MAX_JOBS:
            self.meter.counters["drop_jobs_full"] += 1
            self.done(self._failed(job, 503, "Service Unavailable"))
            return
        task = self.loop.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop_binding(self, aor: str, contact: str) -> None:
        """Remove a binding whose contact stopped answering keep-alives (docs/nat.md)."""
        if self.location is None or len(self._tasks) >= MAX_JOBS:
            self.meter.counters["drop_jobs_full"] += 1
            return
        task = self.loop.create_task(self._drop(aor, contact))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self, aor: str, contact: str) -> None:
        assert self.location is not None
        try:
            removed = await self.location.remove(aor, contact, time.time())
        except CacheError as exc:
            log.warning("nat_drop_failed", aor=aor, contact=contact, error=type(exc).__name__)
            return
        except Exception:  # a bug costs this removal, not the worker
            log.exception("nat_drop_failed", aor=aor, contact=contact)
            return
        log.info("nat_contact_dropped", aor=aor, contact=contact, removed=removed)

    async def aclose(self) -> None:
        """Let jobs in flight finish (bounded by their own timeouts), then close the store."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)
        if self.location is not None:
            await self.location.close()
        if self.core.sl.auth is not None:
            await self.core.sl.auth.store.aclose()

    async def _run(self, job: Job) -> None:
        # the job is a task of its own: what it logs (cachedb_slow, dns_slow) names its call
        structlog.contextvars.bind_contextvars(call_id=job.request.call_id)
        t0 = time.perf_counter()
        try:
            self.core.wall = time.time()
            if job.kind == "resolve":
                outs = await self._resolve(job)
            elif job.kind == "auth":
                auth = self.core.sl.auth
                assert auth is not None and job.credentials is not None
                ha1 = await auth.store.lookup(*job.credentials, self.loop.time())
                outs = answers.authenticated(self.core, job, ha1, self.loop.time())
            elif job.kind == "register":
                assert self.location is not None
                inb = job.inb
                tag = self.core.sl.tags.mint(inb.ingress, inb.conn) if inb.transport in STREAMS else ""
                src = Source(inb.transport, inb.src_ip, inb.src_port, tag)
                r = await self.location.register(job.request, src, time.time())
                if r.bad_record:
                    log.warning("location_bad_record", call_id=job.request.call_id, error=r.bad_record)
                outs = answers.registered(self.core, job, r.status, r.reason, r.headers,
                                          self.loop.time())  # fmt: skip
            else:
                assert job.ctx is not None and job.ctx.aor is not None and self.location
                found = await self.location.lookup(job.ctx.aor, time.time())
                miss = (found.miss.status, found.miss.reason) if found.miss else (404, "Not Found")
                contacts = [(c.uri, c.source, c.path) for c in found.contacts]
                outs = answers.located(self.core, job, contacts, miss, self.loop.time())
        except CacheError as exc:
            log.warning("location_failed", call_id=job.request.call_id, kind=job.kind,
                        error=type(exc).__name__, status=exc.status)  # fmt: skip
            outs = self._failed(job, exc.status, "Server Internal Error"
                                if exc.status == 500 else "Service Unavailable")  # fmt: skip
        except Exception:  # a bug costs this request (answered 500), not the worker
            log.exception("job_failed", call_id=job.request.call_id, kind=job.kind)
            outs = self._failed(job, 500, "Server Internal Error")
        self.meter.add_busy(time.perf_counter() - t0)
        self.done(outs)

    async def _resolve(self, job: Job) -> list[Out]:
        """RFC 3263 for a target's host name: its addresses, or 478/503 (docs/dns.md)."""
        assert job.target
        try:
            found = await self.resolver.resolve(job.target[0])
        except DnsError as exc:
            log.warning("dns_failed", call_id=job.request.call_id, host=job.target[0].host,
                        reason=exc.reason)  # fmt: skip
            status = (478, "Unresolvable destination") if exc.reason == "no_address" else (
                503, "Service Unavailable")  # fmt: skip
            return answers.resolved(self.core, job, [], status, self.loop.time())
        addresses = [(t.transport, t.ip, t.port) for t in found]
        return answers.resolved(self.core, job, addresses, None, self.loop.time())

    def _failed(self, job: Job, status: int, reason: str) -> list[Out]:
        if job.kind == "resolve":
            return answers.resolved(self.core, job, [], (status, reason), self.loop.time())
        if job.kind == "auth":
            return answers.auth_failed(self.core, job, status, reason, self.loop.time())
        if job.kind == "register":
            return answers.registered(self.core, job, status, reason, (), self.loop.time())
        return answers.located(self.core, job, [], (status, reason), self.loop.time())
