"""Load-time checks of ``[bus]`` (``conf/sections/bus.py``): its shedding thresholds, and the
hop between hosts, which ``conf/bustcp.py`` checks with its own error."""

from __future__ import annotations

from conf import bustcp
from conf.checks.errors import ConfigError, Said, _num
from conf.settings import Settings


def check_bus(f: str, s: Settings) -> None:
    if s.bus.shed_invite_fill < s.bus.shed_start_fill:
        expected = f"at least bus.shed_start_fill ({_num(s.bus.shed_start_fill)})"
        raise ConfigError(f, "bus.shed_invite_fill", expected, s.bus.shed_invite_fill)


def check_hosts(f: str, s: Settings) -> None:
    """[bus] address and [[peer]] bus_address: the hop between hosts (``conf/bustcp.py``)."""
    try:
        bustcp.check(s)
    except bustcp.BusConfigError as exc:
        said = isinstance(exc.found, str) and " again " in exc.found
        raise ConfigError(f, exc.key, exc.expected, Said(exc.found) if said else exc.found) from None
