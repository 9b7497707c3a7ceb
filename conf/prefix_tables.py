"""Load-time checks of ``[[prefix_table]]`` and of the routes that name one.

Every process loads the configuration, so this checks only what is cheap: names, paths,
statuses, the routes' references. The file's lines are checked where the table is built
(``workers/routing/prefix_csv.py``): at worker start and by ``sipline check-config``.
"""

from __future__ import annotations

import os

from conf.load import ConfigError, Said, _unique, show
from conf.settings import Settings


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
        if not os.path.isabs(t.file):
            raise ConfigError(f, f"{key}.file", "an absolute file path", t.file)
        if not os.access(t.file, os.R_OK) or os.path.isdir(t.file):
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
