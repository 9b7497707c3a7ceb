"""Longest-prefix routing tables (OpenSIPS drouting, Kamailio LCR): number prefixes mapped
to gateway groups with priorities and weights.

Sans-IO: no files, sockets, clock or logging. ``workers/routing/prefix_csv.py`` builds a
table from a file; ``workers/routing/prefix_route.py`` turns a match into destinations.

Rules:
1. A prefix is ``+?[0-9]+`` of at most ``MAX_PREFIX_CHARS`` characters, compared as text:
   ``+44`` and ``44`` are different prefixes, as in drouting. The longest prefix of the key
   in the table wins; nothing else (priority, weight) is weighed against length.
2. A key is the Request-URI user (after the routing rules' rewrites): bytes from the
   network, so one longer than ``MAX_KEY_CHARS`` or with any character but digits (and one
   leading ``+``) matches nothing, before any work is spent on it. A longer key than ``MAX_PREFIX_CHARS`` only
   has its first ``MAX_PREFIX_CHARS`` characters looked at: no prefix is longer.
3. Memory is packed arrays, not Python objects per prefix (docs/prefix_tables.md "Data
   structure, and why" has the measurements that chose this): each prefix is one 64-bit integer, its
   text in base 12 (``+`` is 1, ``0``-``9`` are 2-11, padding is 0) so that numeric order is
   text order and a padded prefix sorts just before every key it starts; its length rides
   in the low 5 bits. A lookup is one ``bisect`` (C) for the greatest prefix not above the
   key; if that is not a prefix of the key, the answer is among its own prefixes, walked
   through ``parents`` (longest first, at most ``MAX_PREFIX_CHARS`` steps): 14 bytes a
   prefix in all (entry, parent, rule set index).
4. What a prefix routes to, its ``RuleSet``, is shared: tables of a million prefixes
   usually hold a few hundred distinct gateway lists, so each prefix stores an index.
5. A table is immutable once built; a reload builds a new one and swaps the reference.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: E.164 numbers have at most 15 digits (ITU-T E.164 §6.1), 16 with the '+'; and
#: 12**16 << 5 < 2**63 keeps a packed prefix with its length one signed 64-bit integer
MAX_PREFIX_CHARS = 16
#: a Request-URI user longer than this is no telephone number: no match, no work
MAX_KEY_CHARS = 32
MAX_GROUPS_PER_PREFIX = 16
MAX_PRIORITY = 65_535
MAX_WEIGHT = 1_000_000

PREFIX_RE = re.compile(rf"\+?[0-9]{{1,{MAX_PREFIX_CHARS - 1}}}|[0-9]{{{MAX_PREFIX_CHARS}}}")
_KEY_RE = re.compile(r"\+?[0-9]+")
# text -> base-12 digits: '+' 1, '0'..'9' 2..b; anything else stays and int() refuses it
_BASE12 = str.maketrans("+0123456789", "123456789ab")
#: _SCALE[n]: 12 ** (MAX_PREFIX_CHARS - n), the weight of a prefix of n characters' padding
_SCALE = [12 ** (MAX_PREFIX_CHARS - n) for n in range(MAX_PREFIX_CHARS + 1)]


def pack(prefix: str) -> int:
    """The 64-bit code of ``prefix`` (rule 3); ``prefix`` matches ``PREFIX_RE``."""
    return int(prefix.translate(_BASE12).ljust(MAX_PREFIX_CHARS, "0"), 12)


def unpack(code: int, length: int) -> str:
    """The text of a prefix from its code and length (status output, tests)."""
    digits = []
    for _ in range(MAX_PREFIX_CHARS):
        code, d = divmod(code, 12)
        digits.append("?+0123456789"[d])
    return "".join(reversed(digits))[:length]


@dataclass(frozen=True, slots=True)
class Gateway:
    """One row of a prefix: send to ``group`` (a destination set) at ``priority`` (lower
    first), sharing its priority with the others by ``weight``."""

    group: str
    priority: int = 0
    weight: int = 1


class RuleSet:
    """The gateway groups of a prefix, in tiers of equal priority (lowest first)."""

    __slots__ = ("gateways", "tiers")

    def __init__(self, gateways: Iterable[Gateway]) -> None:
        self.gateways = tuple(sorted(gateways, key=lambda g: (g.priority, g.group)))
        tiers: dict[int, list[Gateway]] = {}
        for g in self.gateways:
            tiers.setdefault(g.priority, []).append(g)
        self.tiers = [tuple(t) for t in tiers.values()]

    def order(self, h: int) -> list[str]:
        """Every group, the order a call with hash ``h`` tries them: by priority, and within
        one priority drawn by weight without replacement, each draw from ``h``. The same
        ``h`` (the Call-ID's) gives the same order, so a stateless proxy sends a call's
        CANCEL and ACK where its INVITE went."""
        out: list[str] = []
        for tier in self.tiers:
            if len(tier) == 1:
                out.append(tier[0].group)
                continue
            left = list(tier)
            while left:
                total = sum(g.weight for g in left)
                point = h % total
                h = h // total or h  # the next draw from the hash's other digits
                for i, g in enumerate(left):
                    if point < g.weight:
                        out.append(left.pop(i).group)
                        break
                    point -= g.weight
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and self.gateways == other.gateways

    def __hash__(self) -> int:
        return hash(self.gateways)

    def __repr__(self) -> str:
        return f"RuleSet({list(self.gateways)!r})"


class PrefixTable:
    """An immutable longest-prefix table (rules 3-5). Build it with ``build``."""

    __slots__ = ("_entries", "_parents", "_rules", "name", "rulesets")

    def __init__(self, name: str, entries: array[int], parents: array[int], rules: array[int],
                 rulesets: Sequence[RuleSet]) -> None:  # fmt: skip
        self.name = name
        self._entries = entries  # sorted, each ``pack(prefix) << 5 | len(prefix)``
        self._parents = parents  # index of each entry's longest proper prefix, -1 for none
        self._rules = rules  # the index in rulesets of each entry
        self.rulesets = tuple(rulesets)

    @classmethod
    def build(cls, name: str, entries: dict[int, int], rulesets: Sequence[RuleSet]) -> PrefixTable:
        """A table from ``{entry(prefix): index in rulesets}``."""
        return cls(name, *pack_entries(entries, len(rulesets)), rulesets)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> RuleSet | None:
        """The rule set of the longest prefix of ``key``, or None (rule 2 for bad keys)."""
        if len(key) > MAX_KEY_CHARS or not _KEY_RE.fullmatch(key):
            return None
        i = self.find(key)
        return self.rulesets[self._rules[i]] if i >= 0 else None

    def find(self, key: str) -> int:
        """Index of the longest prefix of a valid ``key`` (rule 2), -1 when none."""
        c = pack(key[:MAX_PREFIX_CHARS])
        entries, parents = self._entries, self._parents
        # the greatest entry not above the key padded: the answer, or a sibling of the key
        # whose own prefixes hold it (rule 3)
        i = bisect_right(entries, c << 5 | 31) - 1
        while i >= 0:
            e = entries[i]
            scale = _SCALE[e & 31]
            # a prefix longer than the key has digits where the key has padding: never equal
            if c // scale == (e >> 5) // scale:
                return i
            i = parents[i]
        return -1

    def prefix(self, i: int) -> str:
        e = self._entries[i]
        return unpack(e >> 5, e & 31)

    def nbytes(self) -> int:
        """Bytes held by the packed arrays (the rule sets are extra, and shared)."""
        return sum(a.itemsize * len(a) for a in (self._entries, self._parents, self._rules))


def pack_entries(entries: dict[int, int], rulesets: int,
                 ) -> tuple[array[int], array[int], array[int]]:  # fmt: skip
    """The sorted entries, their parents and their rule set indexes, as packed arrays."""
    keys = sorted(entries)
    rules = array("H" if rulesets <= 1 << 16 else "I", map(entries.__getitem__, keys))
    packed = array("q", keys)
    del keys
    return packed, _parents(packed), rules


def entry(prefix: str) -> int:
    """The sort key of ``prefix`` in a table: its code with its length in the low 5 bits."""
    return pack(prefix) << 5 | len(prefix)


def _parents(entries: array[int]) -> array[int]:
    """Each sorted entry's longest proper prefix among the entries (-1: none), in one pass:
    the stack holds the prefixes of the current entry, longest on top, each as (index, its
    code cut to its length, the scale that cuts)."""
    parents = array("i", bytes(4 * len(entries)))
    stack: list[tuple[int, int, int]] = []
    for i, e in enumerate(entries):
        code = e >> 5
        while stack and code // stack[-1][2] != stack[-1][1]:
            stack.pop()
        parents[i] = stack[-1][0] if stack else -1
        scale = _SCALE[e & 31]
        stack.append((i, code // scale, scale))
    return parents


def table_from(name: str, rows: Iterable[tuple[str, Gateway]]) -> PrefixTable:
    """A table from (prefix, gateway) rows, for tests and small tables; no validation
    beyond ``PREFIX_RE`` (``prefix_csv`` is the loader that explains its refusals).

    Raises:
        ValueError: a prefix that is not ``PREFIX_RE``.
    """
    by_prefix: dict[str, list[Gateway]] = {}
    for prefix, gw in rows:
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"bad prefix {prefix!r}")
        by_prefix.setdefault(prefix, []).append(gw)
    index: dict[RuleSet, int] = {}
    entries: dict[int, int] = {}
    for prefix, gws in by_prefix.items():
        rs = RuleSet(gws)
        entries[entry(prefix)] = index.setdefault(rs, len(index))
    return PrefixTable.build(name, entries, list(index))
