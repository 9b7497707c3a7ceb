"""Load-time checks of ``[pike]`` and ``[[ratelimit]]`` (``conf/sections/protection.py``)."""

from __future__ import annotations

import ipaddress

from conf.checks.common import _CIDR_HELP, TOKEN_RE, _methods, _unique
from conf.checks.errors import ConfigError, _num
from conf.settings import RATELIMIT_SHARE_INTERVAL_S, RATELIMIT_SHARE_MIN_INTERVALS, Settings


def check_protection(f: str, s: Settings) -> None:
    """[pike] and [[ratelimit]] (docs/protection.md)."""
    for i, w in enumerate(s.pike.whitelist):
        try:
            ipaddress.ip_network(w, strict=False)
        except ValueError:
            raise ConfigError(f, f"pike.whitelist[{i}]", _CIDR_HELP, w) from None
    if s.pike.cluster and not s.pike.enabled:
        raise ConfigError(f, "pike.cluster", "false unless [pike] enabled = true", True)
    if s.pike.cluster and not s.stateplane.peers:
        expected = ("false when [stateplane] peers is empty (blocks are shared with the nodes "
                    "it lists; [dialogs] is not needed)")
        raise ConfigError(f, "pike.cluster", expected, True)
    routes = {r.name for r in s.route}
    names: dict[str, int] = {}
    for i, rl in enumerate(s.ratelimit):
        key = f"ratelimit[{i}]"
        if not TOKEN_RE.fullmatch(rl.name):
            raise ConfigError(f, f"{key}.name", "a name of letters, digits, '-', '_' or '.'",
                              rl.name)  # fmt: skip
        _unique(f, "ratelimit", i, rl.name, names)
        if rl.limit_per_s * rl.window_s < 1:
            # a window that cannot hold one request refuses everything
            expected = f"at least 1 / limit_per_s ({_num(1 / rl.limit_per_s)})"
            raise ConfigError(f, f"{key}.window_s", expected, rl.window_s)
        min_window = RATELIMIT_SHARE_INTERVAL_S * RATELIMIT_SHARE_MIN_INTERVALS
        if rl.shared and rl.window_s < min_window:
            expected = (f"at least {_num(min_window)} on a shared pipe (counts are exchanged "
                        f"every {_num(RATELIMIT_SHARE_INTERVAL_S)} s)")
            raise ConfigError(f, f"{key}.window_s", expected, rl.window_s)
        _methods(f, key, rl.methods)
        if rl.source:
            try:
                ipaddress.ip_network(rl.source, strict=False)
            except ValueError:
                raise ConfigError(f, f"{key}.source", _CIDR_HELP, rl.source) from None
        if rl.route and rl.route not in routes:
            known = ", ".join(sorted(routes)) if routes else "none is defined"
            raise ConfigError(f, f"{key}.route", f"the name of a [[route]] ({known})", rl.route)
