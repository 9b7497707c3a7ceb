"""A route that sends by prefix table: from a Request-URI user to an ordered destination list.

Sans-IO: the tables are built (``prefix_csv``) and the destination sets owned (the
dispatcher) elsewhere; this module only orders what they hold.

Rules:
1. The key is the Request-URI user (``Request.uri.user``); no user, or one the table
   refuses (``prefixes.py`` rule 2), is no match.
2. No match answers the table's ``no_match_status`` (404 unless configured): the proxy
   never guesses a gateway.
3. The matched prefix's groups are tried in ``RuleSet.order`` (priority, then weight drawn
   from the Call-ID hash). The first group gives the first destination the way a plain
   route's set would (``DispatchSet.pick``, sticky per Call-ID for the stateless proxy);
   the rest of that group, then each later group's usable destinations, follow as
   failover targets. A destination listed by two groups is tried once.
4. ``PrefixTables`` holds the tables by name and swaps a whole table at once (``replace``):
   a lookup sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import ctypes
import zlib
from dataclasses import dataclass

from conf.settings import Settings
from workers.routing.dispatcher import Destination, DispatchSet
from workers.routing.prefix_csv import load_file
from workers.routing.prefixes import PrefixTable, RuleSet


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


def load_tables(settings: Settings) -> PrefixTables:
    """Every ``[[prefix_table]]`` of ``settings``, read from its file.

    Raises:
        PrefixFileError: a file is unreadable or has a bad line (nothing is returned).
    """
    groups = [ds.name for ds in settings.destination_set]
    tables = PrefixTables({t.name: load_file(t.file, t.name, groups, t.max_prefixes)
                           for t in settings.prefix_table})  # fmt: skip
    if settings.prefix_table:
        trim_heap()
    return tables


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
    """Rule 3: the groups of ``ruleset`` turned into one failover list."""
    h = zlib.crc32(call_id.encode("latin-1", "replace"))
    targets: list[Destination] = []
    seen: set[tuple[str, int, str | None]] = set()
    first_set: DispatchSet | None = None
    for group in ruleset.order(h):
        ds = sets[group]
        if first_set is None:
            first = ds.pick(call_id)
            first_set = ds
            candidates = [first, *ds.alternatives(first)]
        else:
            chosen = ds.select(call_id)
            candidates = [] if chosen is None else [chosen, *ds.alternatives(chosen)]
        for d in candidates:
            where = (d.host, d.port, d.transport)
            if where not in seen:
                seen.add(where)
                targets.append(d)
    if first_set is None or not targets:
        return None
    return PrefixChoice(name, ruleset, targets, first_set)
