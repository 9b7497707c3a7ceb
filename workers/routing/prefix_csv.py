"""The prefix table file: CSV lines ``prefix,group[,priority[,weight]]`` (docs/routing.md).

Rules:
1. All or nothing: the first bad line raises ``PrefixFileError`` naming the file, the line,
   the field, what was expected and what was found; no table is built, so the caller keeps
   the one it had.
2. Lines are ASCII. ``#`` starts a comment line; blank lines are skipped; one header line
   ``prefix,group,priority,weight`` (or a shorter start of it) may come first. Spaces and
   tabs around a field are ignored.
3. ``group`` names a ``[[destination_set]]``; a prefix names each group at most once and at
   most ``MAX_GROUPS_PER_PREFIX`` of them; the table holds at most ``max_prefixes``.
4. A line that is well formed takes one regex match (the fast path); only a refused line
   is taken apart field by field to say what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

from workers.routing.prefixes import (
    _BASE12,
    MAX_GROUPS_PER_PREFIX,
    MAX_PREFIX_CHARS,
    MAX_PRIORITY,
    MAX_WEIGHT,
    PREFIX_RE,
    Gateway,
    PrefixTable,
    RuleSet,
    pack_entries,
)

HEADER = ("prefix", "group", "priority", "weight")
GROUP_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LINE_RE = re.compile(
    rf"[ \t]*({PREFIX_RE.pattern})[ \t]*,[ \t]*([A-Za-z0-9_.-]{{1,64}})[ \t]*"
    r"(?:,[ \t]*([0-9]{1,5})[ \t]*(?:,[ \t]*([0-9]{1,7})[ \t]*)?)?"
)
# a row packed in one int: group << 36 | priority << 20 | weight
_GROUP_SHIFT, _PRIO_SHIFT = 36, 20
_FIELD_MASK = (1 << 16) - 1
_WEIGHT_MASK = (1 << 20) - 1


class PrefixFileError(ValueError):
    """A prefix table file was refused; nothing was loaded from it."""

    def __init__(self, file: str, line: int, field: str, expected: str, found: str) -> None:
        self.file, self.line, self.field = file, line, field
        self.expected, self.found = expected, found
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: expected {expected}, found {found}")


def load_file(path: str, name: str, groups: Collection[str], max_prefixes: int) -> PrefixTable:
    """Read and build the table ``name`` from the CSV file at ``path``.

    Raises:
        PrefixFileError: the file cannot be read or a line is refused (rule 1).
    """
    try:
        with open(path, "rb") as fh:
            data = [fh.read()]  # in a list: parse drops the only reference once decoded
    except OSError as exc:
        raise PrefixFileError(
            path, 0, "file", "a readable file", exc.strerror or str(exc)
        ) from None
    return parse(data.pop(), path, name, groups, max_prefixes)


def parse(data: bytes, file: str, name: str, groups: Collection[str],
          max_prefixes: int) -> PrefixTable:  # fmt: skip
    """The table in ``data`` (a whole file; ``file`` names it in errors).

    Raises:
        PrefixFileError: a line is refused (rule 1).
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise PrefixFileError(
            file, at, "line", "ASCII text", f"byte 0x{data[exc.start]:02x}"
        ) from None
    del data  # a 1M-prefix file is 24 MB: not held twice while the table is built
    group_ids = {g: i for i, g in enumerate(groups)}
    # each prefix's one row as an interned id (rows repeat: a few hundred distinct ones per
    # million prefixes); a prefix with several rows keeps them in ``multi`` until the end
    row_ids: dict[int, int] = {}
    rows: list[int] = []  # row_ids inverted
    entries: dict[int, int] = {}
    multi: dict[int, list[tuple[int, int]]] = {}
    match, translate = _LINE_RE.fullmatch, str.translate
    for lineno, line in enumerate(_lines(text), 1):
        m = match(line)
        if m is None:
            if not _skipped(line, lineno):
                _explain(file, lineno, line, group_ids)
            continue
        prefix, group, prio, weight = m.groups()
        gid = group_ids.get(group)
        if gid is None:
            raise PrefixFileError(file, lineno, "group", _known(group_ids), repr(group))
        p = int(prio) if prio else 0
        w = int(weight) if weight else 1
        if p > MAX_PRIORITY or not 1 <= w <= MAX_WEIGHT:
            _explain(file, lineno, line, group_ids)
        row = gid << _GROUP_SHIFT | p << _PRIO_SHIFT | w
        rid = row_ids.setdefault(row, len(row_ids))
        if rid == len(rows):
            rows.append(row)
        key = int(translate(prefix, _BASE12).ljust(MAX_PREFIX_CHARS, "0"), 12) << 5 | len(prefix)
        known = len(entries)
        entries.setdefault(key, rid)
        if len(entries) == known:  # not new: a second row for the prefix
            _add_row(multi, key, rows[entries[key]], lineno, row, file, prefix)
        elif known == max_prefixes:
            expected = f"at most {max_prefixes} prefixes (prefix_table max_prefixes)"
            raise PrefixFileError(file, lineno, "prefix", expected, "one more")
    return _build(name, entries, rows, multi, list(groups))


def _lines(text: str, block: int = 1 << 16) -> Iterator[str]:
    """``text.splitlines()`` a block at a time: a list of every line of a 1M-prefix file
    would add ~70 MB to the peak (``io.StringIO`` would copy the text as UCS-4, 4x)."""
    start, n = 0, len(text)
    while start < n:
        end = text.find("\n", start + block)
        end = n if end < 0 else end + 1  # blocks end after a newline: no CRLF is cut
        yield from text[start:end].splitlines()
        start = end


def _skipped(line: str, lineno: int) -> bool:
    """Blank, comment and header lines (rule 2)."""
    s = line.strip()
    if not s or s.startswith("#"):
        return True
    fields = tuple(f.strip().lower() for f in s.split(","))
    return lineno == 1 and 2 <= len(fields) <= 4 and fields == HEADER[: len(fields)]


def _add_row(multi: dict[int, list[tuple[int, int]]], key: int, first: int, lineno: int,
             row: int, file: str, prefix: str) -> None:  # fmt: skip
    """A second or later row for ``prefix`` (rule 3); ``first`` is its first row."""
    rows = multi.get(key)
    if rows is None:
        rows = multi[key] = [(0, first)]  # its line is unknown: 0 until an error needs it
    gid = row >> _GROUP_SHIFT
    for line, r in rows:
        if r >> _GROUP_SHIFT == gid:
            where = f"line {line}" if line else "an earlier line"
            expected = f"each group once per prefix ({prefix} has it on {where})"
            raise PrefixFileError(file, lineno, "group", expected, "it again")
    if len(rows) >= MAX_GROUPS_PER_PREFIX:
        expected = f"at most {MAX_GROUPS_PER_PREFIX} groups per prefix"
        raise PrefixFileError(file, lineno, "group", expected, f"more for {prefix}")
    rows.append((lineno, row))


def _build(name: str, entries: dict[int, int], singles: list[int],
           multi: dict[int, list[tuple[int, int]]], groups: list[str]) -> PrefixTable:  # fmt: skip
    """The table (prefixes.py rule 4). Its ``RuleSet`` objects are made last, once the
    parse's million small objects are freed: made among them, a few thousand long-lived
    objects kept ~25 MB of the interpreter's arenas from going back to the system."""
    idents: list[tuple[int, ...]] = [(r,) for r in singles]
    index: dict[tuple[int, ...], int] = {}
    for key, rows in multi.items():
        ident = tuple(sorted(r for _, r in rows))
        i = index.get(ident)
        if i is None:
            i = index[ident] = len(idents)
            idents.append(ident)
        entries[key] = i
    multi.clear()
    del index
    arrays = pack_entries(entries, len(idents))
    entries.clear()
    rulesets = [RuleSet(_gateway(r, groups) for r in ident) for ident in idents]
    return PrefixTable(name, *arrays, rulesets)


def _gateway(row: int, groups: list[str]) -> Gateway:
    return Gateway(groups[row >> _GROUP_SHIFT], row >> _PRIO_SHIFT & _FIELD_MASK,
                   row & _WEIGHT_MASK)  # fmt: skip


def _known(group_ids: dict[str, int]) -> str:
    names = ", ".join(list(group_ids)[:10]) + (", ..." if len(group_ids) > 10 else "")
    return f"the name of a [[destination_set]] ({names or 'none is defined'})"


def _explain(file: str, lineno: int, line: str, group_ids: dict[str, int]) -> None:
    """Raise the error that says what is wrong with a refused ``line``."""
    fields = [f.strip(" \t") for f in line.split(",")]
    if not 2 <= len(fields) <= 4:
        expected = "2 to 4 fields: prefix,group[,priority[,weight]]"
        raise PrefixFileError(file, lineno, "line", expected, f"{len(fields)} fields")
    prefix, group = fields[0], fields[1]
    if not PREFIX_RE.fullmatch(prefix):
        expected = f"digits with an optional leading +, at most {MAX_PREFIX_CHARS} characters"
        raise PrefixFileError(file, lineno, "prefix", expected, repr(prefix[:40]))
    if not GROUP_RE.fullmatch(group):
        expected = "a group name: letters, digits, '.', '_' or '-', 1 to 64 of them"
        raise PrefixFileError(file, lineno, "group", expected, repr(group[:70]))
    if len(fields) > 2 and not _in_range(fields[2], 0, MAX_PRIORITY):
        expected = f"a priority from 0 to {MAX_PRIORITY} (lower is tried first)"
        raise PrefixFileError(file, lineno, "priority", expected, repr(fields[2][:20]))
    if len(fields) > 3 and not _in_range(fields[3], 1, MAX_WEIGHT):
        expected = f"a weight from 1 to {MAX_WEIGHT}"
        raise PrefixFileError(file, lineno, "weight", expected, repr(fields[3][:20]))
    raise PrefixFileError(file, lineno, "line", "prefix,group[,priority[,weight]]", repr(line[:80]))


def _in_range(text: str, lo: int, hi: int) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 7 and lo <= int(text) <= hi
