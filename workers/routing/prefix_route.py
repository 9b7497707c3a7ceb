"""A route that sends by prefix table: from a Request-URI user to an ordered destination list.

``PrefixTables.choose`` and ``order_targets`` are sans-IO: the tables are built
(``prefix_csv``, ``prefix_cachedb``) and the destination sets owned (the dispatcher)
elsewhere, and they only order what those hold. ``load_tables``/``load_all`` are what a
worker runs once at start to read the files and the cacheDB; ``read_all`` is what a reload
runs, off the event loop.

Rules:
1. The key is the user of the Request-URI the routing rules left (their rewrites
   applied); no user, or one the table refuses (``prefixes.py`` rule 2), is no match.
2. No match answers the table's ``no_match_status`` (404 unless configured): the proxy
   never guesses a gateway.
3. The matched prefix's groups are tried in ``RuleSet.order`` (priority, then weight drawn
   from the Call-ID hash). The first group with a usable destination gives the first
   destination the way a plain route's set would (``DispatchSet.select``: its algorithm,
   sticky per Call-ID when it had to avoid a down destination); the rest of that group,
   then each later group's usable destinations, follow as failover targets. A destination
   listed by two groups is tried once. With none usable anywhere, the first group's hash
   decides (``DispatchSet.pick``), as a stateless proxy does for a plain route.
4. ``PrefixTables`` holds the tables by name and swaps a whole table at once (``replace``):
   a lookup sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import hashlib
import zlib
from dataclasses import dataclass

from conf.settings import Settings
from workers.cachedb import CacheDB, CacheError, open_cachedb
from workers.routing import prefix_cachedb
from workers.routing.dispatcher import Destination, DispatchSet
from workers.routing.prefix_cachedb import where
from workers.routing.prefix_csv import PrefixFileError, load_file, parse
from workers.routing.prefixes import PrefixTable, RuleSet

#: how long a worker asks a cacheDB that does not answer for its tables before it stops
CACHEDB_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class PrefixChoice:
    """Where a request goes: ``targets[0]`` first, the rest in failover order; ``dset`` is
    the set of the first (its ``failover_codes`` decide when to move on)."""

    prefix_table: str
    ruleset: RuleSet
    targets: list[Destination]
    dset: DispatchSet


class PrefixTables:
    """The loaded prefix tables of a worker, by name (rule 4)."""

    __slots__ = ("_tables",)

    def __init__(self, tables: dict[str, PrefixTable] | None = None) -> None:
        self._tables: dict[str, PrefixTable] = dict(tables or {})

    def __getitem__(self, name: str) -> PrefixTable:
        return self._tables[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tables

    def replace(self, table: PrefixTable) -> None:
        self._tables[table.name] = table

    def choose(self, name: str, user: str | None, call_id: str,
               sets: dict[str, DispatchSet]) -> PrefixChoice | None:  # fmt: skip
        """The destinations for a request to ``user`` by table ``name``; None: no match,
        or none of the matched groups has a usable destination (rule 3)."""
        table = self._tables[name]
        ruleset = table.lookup(user) if user else None
        if ruleset is None:
            return None
        return order_targets(name, ruleset, call_id, sets)


def load_tables(settings: Settings, files_only: bool = False) -> PrefixTables:
    """Every ``[[prefix_table]]`` of ``settings`` read from its file (cacheDB tables need
    ``load_all``; ``files_only`` leaves them out instead of refusing them).

    Raises:
        PrefixFileError: a file is unreadable or has a bad line, or a table is in the
            cacheDB (nothing is returned).
    """
    groups = [ds.name for ds in settings.destination_set]
    tables = PrefixTables()
    for t in settings.prefix_table:
        if t.cachedb_key and not files_only:
            raise PrefixFileError(where(t.cachedb_key), 0, "cachedb_key",
                                  "a table read by the worker at start (load_all)", "none read")  # fmt: skip
        if t.file:
            tables.replace(load_file(t.file, t.name, groups, t.max_prefixes))
    if settings.prefix_table:
        trim_heap()
    return tables


async def load_all(settings: Settings, db: CacheDB | None = None,
                   within_s: float = CACHEDB_WAIT_S,
                   seen: dict[str, str] | None = None) -> PrefixTables:  # fmt: skip
    """Every ``[[prefix_table]]``, the cacheDB ones through ``db`` (opened on ``[registrar]
    cachedb_url`` when None). A cacheDB that does not answer is asked again until
    ``within_s`` (a ``local://`` one lives in the state plane, which may start after us).
    ``seen`` gets each cacheDB key's SHA-256 of the text read (a reload's digest).

    Raises:
        PrefixFileError: a file or a key space is refused.
        CacheError: the cacheDB still fails after ``within_s``.
    """
    tables = load_tables(settings, files_only=True)
    keyed = [t for t in settings.prefix_table if t.cachedb_key]
    if not keyed:
        return tables
    own = db is None
    if db is None:
        db = open_cachedb(settings.registrar.cachedb_url, run_dir=settings.node.run_dir)
    groups = [ds.name for ds in settings.destination_set]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    try:
        for t in keyed:
            while True:
                try:
                    data = await prefix_cachedb.fetch(db, t.cachedb_key)
                    break
                except CacheError:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.2)  # retry step, bounded by the deadline
            if seen is not None:
                seen[t.cachedb_key] = hashlib.sha256(data).hexdigest()
            tables.replace(parse(data, where(t.cachedb_key), t.name, groups, t.max_prefixes))
            del data
    finally:
        if own:
            await db.close()
    trim_heap()
    return tables


def read_all(settings: Settings, within_s: float, seen: dict[str, str]) -> PrefixTables:
    """``load_all`` for a reload, from a thread that is not the event loop's (rule 5 of
    workers/reloading.py): its own loop and cacheDB connection, in one more thread so that a
    caller that runs a loop (a test's ``inline`` offload) is not in the way. The whole read,
    retries included, ends within ``within_s`` (plus a connection's close).

    Raises:
        PrefixFileError: a file or a key space is refused (chunks that do not verify
            name ``cachedb:KEY``).
        CacheError: the cacheDB did not answer within ``within_s``.
    """
    if not any(t.cachedb_key for t in settings.prefix_table):
        return load_tables(settings)

    async def bounded() -> PrefixTables:
        try:
            return await asyncio.wait_for(load_all(settings, None, within_s, seen), within_s)
        except TimeoutError:
            keys = ", ".join(t.cachedb_key for t in settings.prefix_table if t.cachedb_key)
            raise CacheError(f"the cacheDB did not give {keys} within {within_s:.0f} s") from None

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefix-read") as pool:
        return pool.submit(asyncio.run, bounded()).result()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``): a 1M-prefix
    load frees ~150 MB of transient objects, of which ~25 MB otherwise stays resident in
    every worker (docs/prefix_tables.md). Elsewhere than glibc, nothing happens."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # no C library to open, or no malloc_trim in it
        pass


def order_targets(name: str, ruleset: RuleSet, call_id: str,
                  sets: dict[str, DispatchSet]) -> PrefixChoice | None:  # fmt: skip
    """Rule 3: the groups of ``ruleset`` turned into one failover list. A group with no
    usable destination is passed over (drouting skips a gateway list that is all down);
    when none has one, the first group's hash decides, as for a plain route's set."""
    h = zlib.crc32(call_id.encode("latin-1", "replace"))
    order = ruleset.order(h)
    targets: list[Destination] = []
    seen: set[tuple[str, int, str | None]] = set()
    first_set: DispatchSet | None = None
    for group in order:
        ds = sets[group]
        chosen = ds.select(call_id)  # sticky per Call-ID where the set's choice was not its hash
        if chosen is None:
            continue
        first_set = first_set or ds
        for d in (chosen, *ds.alternatives(chosen)):
            where = (d.host, d.port, d.transport)
            if where not in seen:
                seen.add(where)
                targets.append(d)
    if first_set is None:  # every destination of every group is down
        if not order:
            return None
        first_set = sets[order[0]]
        targets = [first_set.pick(call_id)]
    return PrefixChoice(name, ruleset, targets, first_set)
