"""Location service: the registrar's bindings kept in a cacheDB, one record per AOR.

Rules:
1. One record per AOR under ``registrar.record_key(aor)`` (``loc:<aor>``), the msgpack of
   ``registrar.encode``. Its TTL is the longest binding's remaining life plus
   ``record_linger_s``: the key outlives every binding, and a lookup in the linger says
   "known, no live binding" (``no_binding_status``, 480) rather than "unknown" (404).
2. REGISTER reads and writes the shared store, never the near cache. Lookups may read through
   the near cache (``near_cache_ttl_s``): a binding added, changed or removed through another
   process is seen up to that late. Misses are not cached, so a new registration is found at
   once by every process that has not just read the same AOR.
3. Concurrency. All REGISTERs of one Call-ID reach one worker, and a UA keeps its Call-ID
   across refreshes (RFC 3261 §10.2.4), so one UA's requests never race. Different UAs of one
   AOR may reach different workers or nodes, and a plain read-modify-write would let the last
   writer drop the other's binding. Each REGISTER that changes bindings therefore holds a lock
   key (``add`` of ``lk:<record key>``, TTL ``LOCK_TTL_S``) across its read and write, and
   waits for it at most ``LOCK_WAIT_S`` (then 503). The lock is advisory and has no owner
   check (the interface has no compare-and-delete): a holder stalled past ``LOCK_TTL_S``
   can overlap the next one, which then falls back to last writer wins.
4. CacheDB failures propagate as the ``CacheError`` tree (``exc.status``: 500 or 503) and
   leave the record as it was or as the last complete write left it; this module does not log.
5. A record that cannot be decoded is taken as empty (the next REGISTER overwrites it) and
   reported in ``Reply.bad_record`` / ``Lookup.bad_record`` for the caller to log.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from conf.settings import Registrar as RegistrarConfig
from ingress.sip.message import Request
from workers.cachedb import CacheDB, CacheError, CacheTimeout, NearCache, open_cachedb
from workers.registrar import register as reg
from workers.registrar.register import Binding, Registrar, Reply, Source

#: a lock outlives the few round trips it guards (3 calls of at most the 0.25 s timeout) and
#: is short enough that a worker dying while holding it blocks its AOR only briefly
LOCK_TTL_S = 2.0
#: REGISTERs of one AOR from different UAs are rare: waiting longer than this means trouble
LOCK_WAIT_S = 0.5
LOCK_RETRY_S = 0.005
LOCK_PREFIX = "lk:"

REASONS = {404: "Not Found", 410: "Gone", 480: "Temporarily Unavailable",
           604: "Does Not Exist Anywhere"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Contact:
    """A target for a request to an AOR: its contact URI, where its REGISTER came from, its
    q and the Path its REGISTER carried (route through it first, RFC 3327 §5.3)."""

    uri: str
    source: Source
    q: float | None
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """What a lookup found. ``contacts`` is ordered by q, highest first. When it is empty,
    ``miss`` is the reply to give (404 when the AOR has no record, 480 when it has no live
    binding, as configured)."""

    contacts: list[Contact]
    known: bool
    miss: Reply | None = None
    bad_record: str | None = field(default=None)


class Location:
    """Registrar and location service over any ``CacheDB``; see the module rules.

    One instance per process and event loop; ``close()`` releases the cacheDB client.
    """

    def __init__(
        self,
        db: CacheDB,
        registrar: Registrar,
        *,
        near_cache_ttl_s: float = 0.0,
        near_cache_max_aors: int = 10_000,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.db = db
        self.lock_wait_s = lock_wait_s
        self.registrar = registrar
        cfg = registrar.cfg
        self._near: NearCache | None = None
        if near_cache_ttl_s > 0:
            # misses are not cached (rule 2): a REGISTER then an INVITE must find the phone
            self._near = NearCache(db, near_cache_ttl_s, near_cache_max_aors, cache_misses=False)
        self._writer: CacheDB = self._near or db
        self._misses = {
            False: Reply(cfg.unknown_aor_status, REASONS[cfg.unknown_aor_status],
                         detail="no record for this AOR"),
            True: Reply(cfg.no_binding_status, REASONS[cfg.no_binding_status],
                        detail="no live binding for this AOR"),
        }  # fmt: skip
        self._tokens = (f"{os.getpid()}.{n}".encode() for n in itertools.count())
        self.bad_records = 0

    @classmethod
    def open(
        cls, cfg: RegistrarConfig, our_hosts: Iterable[str], run_dir: str, **db_options: Any
    ) -> Location:
        """A ``Location`` on ``cfg.cachedb_url`` (no I/O until the first call).

        Args:
            cfg: the ``[registrar]`` settings.
            our_hosts: our listen addresses (the domains served when ``cfg.domains`` is empty).
            run_dir: the node's run directory, for ``local://``.
            db_options: passed to ``open_cachedb`` (``timeout_s``, ``slow_ms`` ...).
        """
        db = open_cachedb(cfg.cachedb_url, run_dir=run_dir, **db_options)
        return cls(db, Registrar(cfg, our_hosts), near_cache_ttl_s=cfg.near_cache_ttl_s,
                   near_cache_max_aors=cfg.near_cache_max_aors)  # fmt: skip

    async def register(self, req: Request, source: Source, now: float) -> Reply:
        """Handle a REGISTER for one of our domains (RFC 3261 §10.3 steps 2 and 5 to 8).

        Args:
            req: the parsed REGISTER (the worker checked ``registrar.serves(req.uri)``).
            source: where it came from (transport, ip, port).
            now: wall-clock epoch seconds (``time.time()``).

        Returns:
            The reply: 200 with the bindings, or 400/403/404/420/423/500 (``Reply.detail``
            says why); build it with ``build_response(req, r.status, r.reason,
            extra_headers=r.headers)``.

        Raises:
            CacheError: the store failed; answer ``exc.status`` (500 or 503). Nothing was
                committed unless the failure was the write itself timing out (docs/cachedb.md).
        """
        plan = self.registrar.prepare(req)
        if isinstance(plan, Reply):
            return plan
        key = reg.record_key(plan.aor)
        if plan.is_query:  # a read only: no lock
            decoded = await self._read(self.db, key)
            outcome = self.registrar.apply(plan, decoded.bindings, source, now)
            return self._reported(outcome.reply, decoded.error)
        async with self._locked(key):
            decoded = await self._read(self.db, key)
            outcome = self.registrar.apply(plan, decoded.bindings, source, now)
            if outcome.store is not None:
                await self._write(key, outcome.store, now)
        return self._reported(outcome.reply, decoded.error)

    async def lookup(self, aor: str, now: float) -> Lookup:
        """The live contacts of ``aor`` (a ``registrar.aor_of`` result), highest q first.

        Raises:
            CacheError: the store failed; answer ``exc.status`` (500 or 503).
        """
        key = reg.record_key(aor)
        raw = await (self._near or self.db).get(key)
        if raw is None:
            return Lookup([], False, self._misses[False])
        decoded = reg.decode(raw)
        if decoded.error is not None:
            self.bad_records += 1
        contacts = [Contact(b.contact, b.source, b.q, b.path)
                    for b in reg.lookup(decoded.bindings, now)]  # fmt: skip
        miss = None if contacts else self._misses[True]
        return Lookup(contacts, True, miss, decoded.error)

    async def remove(self, aor: str, contact: str, now: float) -> bool:
        """Remove the binding of ``contact`` from ``aor`` (a contact that stopped answering
        keep-alives, docs/nat.md); False when there was none. Holds the AOR lock (rule 3).

        Raises:
            CacheError: the store failed.
        """
        key = reg.record_key(aor)
        gone = reg.contact_key_text(contact)
        async with self._locked(key):
            decoded = await self._read(self.db, key)
            kept = tuple(b for b in decoded.bindings
                         if reg.contact_key_text(b.contact) != gone and b.expires_at > now)  # fmt: skip
            if len(kept) == len([b for b in decoded.bindings if b.expires_at > now]):
                return False
            await self._write(key, kept, now)
        return True

    async def bindings(self, aor: str) -> tuple[Binding, ...]:
        """The stored bindings of ``aor``, expired ones included (for ``sipline ctl``)."""
        return (await self._read(self.db, reg.record_key(aor))).bindings

    async def close(self) -> None:
        await self._writer.close()

    # -- internals -----------------------------------------------------------------------

    async def _read(self, db: CacheDB, key: str) -> reg.Decoded:
        raw = await db.get(key)
        if raw is None:
            return reg.Decoded(())
        decoded = reg.decode(raw)
        if decoded.error is not None:
            self.bad_records += 1
        return decoded

    async def _write(self, key: str, bindings: tuple[Binding, ...], now: float) -> None:
        ttl_s = self.registrar.record_ttl_s(bindings, now)
        await self._writer.set(key, reg.encode(bindings), ttl_s=ttl_s)

    @asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        """Hold ``lk:<key>`` (rule 3). Raises ``CacheTimeout`` (503) past ``lock_wait_s``."""
        lock = LOCK_PREFIX + key
        token = next(self._tokens)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lock_wait_s
        while not await self.db.add(lock, token, ttl_s=LOCK_TTL_S):
            if loop.time() >= deadline:
                raise CacheTimeout(f"registration of {key} is locked by another process")
            await asyncio.sleep(LOCK_RETRY_S)
        try:
            yield
        finally:
            try:
                await self.db.delete(lock)
            except CacheError:
                pass  # it expires by itself within LOCK_TTL_S

    def _reported(self, reply: Reply, error: str | None) -> Reply:
        return reply if error is None else replace(reply, bad_record=error)
