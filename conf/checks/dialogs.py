"""Load-time checks of ``[dialogs]``, ``[[dialog_profile]]`` and the routes' dialog lifetimes
(``conf/sections/dialogs.py``)."""

from __future__ import annotations

import os

from conf import rundir
from conf.checks.common import TOKEN_RE, _unique
from conf.checks.errors import ConfigError, Said, _num
from conf.settings import Settings

#: statuses a call over a profile limit may get (OpenSIPS scripts answer 486 or 503)
OVER_LIMIT_STATUSES = (486, 503)


def _check_cdr(f: str, s: Settings) -> None:
    """cdr_group and cdr_peer_files: only with a cdr_file, a group that exists, absolute paths,
    each once."""
    d = s.dialogs
    if d.cdr_group:
        if not d.cdr_file:
            raise ConfigError(f, "dialogs.cdr_group", "empty unless cdr_file is set", d.cdr_group)
        try:
            rundir.group_id(d.cdr_group)
        except KeyError:
            raise ConfigError(f, "dialogs.cdr_group", "the name or number of an existing group",
                              d.cdr_group) from None  # fmt: skip
    seen: set[str] = set()
    for i, path in enumerate(d.cdr_peer_files):
        key = f"dialogs.cdr_peer_files[{i}]"
        if not d.cdr_file:
            raise ConfigError(f, key, "no peer files unless cdr_file is set", path)
        if any(ord(c) < 32 or c == "\x7f" for c in path) or not os.path.isabs(path):
            raise ConfigError(f, key, "an absolute path without control characters", path)
        norm = os.path.normpath(path)  # our own file may be listed: a pair shares one list
        if norm in seen:
            raise ConfigError(f, key, "each file once", path)
        seen.add(norm)


def check_dialogs(f: str, s: Settings) -> None:
    """[dialogs], [[dialog_profile]] and the routes' dialog_lifetime_s (docs/dialogs.md)."""
    d = s.dialogs
    if d.enabled and not s.proxy.record_route:
        # without our Record-Route, BYEs and re-INVITEs bypass us: the dialog would never end
        raise ConfigError(f, "proxy.record_route", "true when [dialogs] enabled = true", False)
    if d.enabled and d.early_lifetime_s <= s.transactions.timer_c_s:
        expected = f"more than transactions.timer_c_s ({_num(s.transactions.timer_c_s)})"
        raise ConfigError(f, "dialogs.early_lifetime_s", expected, d.early_lifetime_s)
    if d.profiles_cluster and not s.stateplane.peers:
        expected = "false unless [stateplane] peers names the other nodes"
        raise ConfigError(f, "dialogs.profiles_cluster", expected, True)
    if any(ord(c) < 32 or c == "\x7f" for c in d.cdr_file):
        raise ConfigError(f, "dialogs.cdr_file", "a path without control characters", d.cdr_file)
    _check_cdr(f, s)
    for i, r in enumerate(s.route):
        if not r.dialog_lifetime_s:
            continue
        key = f"route[{i}].dialog_lifetime_s"
        if not d.enabled:
            raise ConfigError(f, key, "0 unless [dialogs] enabled = true", r.dialog_lifetime_s)
        if (r.mode or s.proxy.mode) != "stateful":
            expected = "0 on a stateless route (dialogs are tracked on stateful ones)"
            raise ConfigError(f, key, expected, r.dialog_lifetime_s)
    routes = {r.name for r in s.route}
    names: dict[str, int] = {}
    for i, p in enumerate(s.dialog_profile):
        key = f"dialog_profile[{i}]"
        if not d.enabled:
            raise ConfigError(f, key, "no [[dialog_profile]] unless [dialogs] enabled = true",
                              Said("a profile"))  # fmt: skip
        if not TOKEN_RE.fullmatch(p.name):
            raise ConfigError(f, f"{key}.name", "a name of letters, digits, '-', '_' or '.'",
                              p.name)  # fmt: skip
        _unique(f, "dialog_profile", i, p.name, names)
        if p.with_value and not p.value_from:
            expected = "one of ruri_user, from_user, to_user, source_ip, route (with_value = true)"
            raise ConfigError(f, f"{key}.value_from", expected, p.value_from)
        if p.value_from and not p.with_value:
            raise ConfigError(f, f"{key}.value_from", '"" unless with_value = true', p.value_from)
        if p.over_limit_status not in OVER_LIMIT_STATUSES:
            raise ConfigError(f, f"{key}.over_limit_status", "486 or 503", p.over_limit_status)
        for j, name in enumerate(p.routes):
            if name not in routes:
                known = ", ".join(sorted(routes)) if routes else "none is defined"
                expected = f"the name of a [[route]] ({known})"
                raise ConfigError(f, f"{key}.routes[{j}]", expected, name)
