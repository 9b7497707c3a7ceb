"""Load-time checks of ``[[prefix_table]]`` and of the routes that name one.

Every process loads the configuration, so this checks only what is cheap: names, paths,
statuses, the routes' references. The file's lines are checked where the table is built
(``workers/routing/prefix_csv.py``): at worker start and by ``sipline check-config``.
"""

from __future__ import annotations

import os
import re

from conf.checks.common import _unique
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Settings

#: the chunks' keys add ``:VERSION:N`` (at most 26 more) under memcached's 250 bytes
CACHEDB_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


def check(f: str, s: Settings) -> None:
    """Raises:
    ConfigError: a ``[[prefix_table]]`` or a route's ``prefix_table`` is wrong.
    """
    tables: dict[str, int] = {}
    for i, t in enumerate(s.prefix_table):
        key = f"prefix_table[{i}]"
        if not t.name:
            raise ConfigError(f, f"{key}.name", "a non-empty name", t.name)
        _unique(f, "prefix_table", i, t.name, tables)
        if bool(t.file) == bool(t.cachedb_key):
            expected = "a file or a cachedb_key (one of them)"
            raise ConfigError(f, f"{key}.file", expected, t.file or Said("nothing"))
        if t.cachedb_key:
            if not CACHEDB_KEY_RE.fullmatch(t.cachedb_key):
                expected = "letters, digits, '.', '_', ':' or '-', 1 to 200 of them"
                raise ConfigError(f, f"{key}.cachedb_key", expected, t.cachedb_key)
        elif not os.path.isabs(t.file):
            raise ConfigError(f, f"{key}.file", "an absolute file path", t.file)
        elif not os.access(t.file, os.R_OK) or os.path.isdir(t.file):
            raise ConfigError(
                f, f"{key}.file", "a readable CSV file", Said(f"{show(t.file)}: not readable")
            )
        if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in t.no_match_reason):
            # it goes into the status line as it is (RFC 3261 §25.1 Reason-Phrase)
            expected = "a reason phrase without control characters"
            raise ConfigError(f, f"{key}.no_match_reason", expected, t.no_match_reason)
    known = ", ".join(tables) if tables else "none is defined"
    for i, r in enumerate(s.route):
        if r.prefix_table and r.prefix_table not in tables:
            expected = f"the name of a [[prefix_table]] ({known})"
            raise ConfigError(f, f"route[{i}].prefix_table", expected, r.prefix_table)
