"""``[nat]`` is checked at load (docs/nat.md "Configuration")."""

from __future__ import annotations

from typing import Any

import pytest

from conf.load import DEFAULT_PATH, ConfigError, from_dict, load

REG = {"registrar": {"enabled": True}}


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "t.toml")
    return info.value


def test_defaults_change_nothing() -> None:
    """No [nat] section: no rewriting, no pings; the shipped file has none either."""
    for s in (from_dict({}, "t.toml"), load(DEFAULT_PATH)):
        assert not s.nat.fix_contact and s.nat.ping_interval_s == 0


def test_valid() -> None:
    """A full section loads as written."""
    s = from_dict({**REG, "nat": {"detect": ["rport", "private_contact"], "fix_contact": True,
                                  "ping_interval_s": 30, "ping_method": "options",
                                  "ping_drop_after": 3}}, "t.toml")  # fmt: skip
    assert s.nat.detect == ["rport", "private_contact"] and s.nat.ping_drop_after == 3


@pytest.mark.parametrize(("nat", "reg", "key"), [
    ({"detect": ["private_contact", "sdp"]}, True, "nat.detect[1]"),
    ({"ping_method": "stun"}, True, "nat.ping_method"),
    ({"ping_interval_s": 30}, False, "nat.ping_interval_s"),
    ({"ping_interval_s": 0.5}, True, "nat.ping_interval_s"),
    ({"ping_interval_s": 7200}, True, "nat.ping_interval_s"),
    ({"ping_interval_s": 30, "ping_method": "crlf", "ping_drop_after": 2}, True,
     "nat.ping_drop_after"),
    ({"ping_max_per_tick": 0}, True, "nat.ping_max_per_tick"),
    ({"max_pinged_contacts": 0}, True, "nat.max_pinged_contacts"),
    ({"keepalive": True}, True, "nat.keepalive"),
], ids=["unknown-test", "method", "needs-registrar", "too-often", "too-rare", "crlf-drop",
        "tick-zero", "table-zero", "unknown-key"])  # fmt: skip
def test_refused(nat: dict[str, Any], reg: bool, key: str) -> None:
    """Each bad value is refused naming its key."""
    e = error({**(REG if reg else {}), "nat": nat})
    assert e.key == key, str(e)
