"""Validation of the [[route]] conditions and actions of conf/checks/route_rules.py: every mistake is
refused at load naming the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conf.load import ConfigError, from_dict
from tests.test_cli import run

SETS = [{"name": "a", "destinations": ["sip:127.0.0.1:5080"]},
        {"name": "b", "destinations": ["sip:127.0.0.1:5081"]}]  # fmt: skip


def load(route: dict[str, Any], **extra: Any) -> Any:
    return from_dict({"destination_set": SETS, "route": [{"name": "r", **route}], **extra},
                     "conf/test.toml")  # fmt: skip


def error(route: dict[str, Any], **extra: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(route, **extra)
    assert str(info.value).startswith("conf/test.toml: route[0].")
    return info.value


STATEFUL = {"proxy": {"mode": "stateful"}}


@pytest.mark.parametrize(("route", "key", "expected"), [
    ({"to": "a", "header": [{"name": "Bad Name"}]}, "header[0].name", "a header name"),
    ({"to": "a", "header": [{"name": "X", "regex": "("}]}, "header[0].regex",
     "a regular expression"),
    ({"to": "a", "header": [{"name": "X", "regex": "a", "present": False}]}, "header[0].regex",
     '"" when present = false'),
    ({"to": "a", "listener": "127.0.0.1:1"}, "listener", "the address:port of a [[listen]]"),
    ({"to": "a", "untrusted": True}, "untrusted", "false, true with a [[trusted]] table"),
    ({"to": "a", "prefix_user": "+ 1"}, "prefix_user", "URI user characters"),
    ({"to": "a", "prefix_user": "a@b"}, "prefix_user", "URI user characters"),
    ({"to": "a", "user_replace": "x"}, "user_regex", "a regular expression with user_replace"),
    ({"to": "a", "user_regex": "(a", "user_replace": "x"}, "user_regex", "a regular expression"),
    ({"to": "a", "user_regex": "(a)", "user_replace": r"\2"}, "user_replace",
     "URI user characters and group references"),
    ({"to": "a", "user_regex": "a", "user_replace": "x y"}, "user_replace",
     "URI user characters and group references"),
    ({"to": "a", "user_regex": "(?P<n>a)", "user_replace": r"\g<m>"}, "user_replace",
     "URI user characters and group references"),
    ({"to": "a", "header_edit": [{"name": "Via", "action": "remove"}]}, "header_edit[0].name",
     "a header the proxy does not own"),
    ({"to": "a", "header_edit": [{"name": "l", "action": "remove"}]}, "header_edit[0].name",
     "a header the proxy does not own"),
    ({"to": "a", "header_edit": [{"name": "Content-Length", "action": "set", "value": "0"}]},
     "header_edit[0].name", "a header the proxy does not own"),
    ({"to": "a", "header_edit": [{"name": "X-A:", "action": "append", "value": "v"}]},
     "header_edit[0].name", "a header name"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "append", "value": "v\r\nVia: x"}]},
     "header_edit[0].value", "a value without control characters"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "append", "value": "v\n"}]},
     "header_edit[0].value", "a value without control characters"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "append", "value": "{call_id}"}]},
     "header_edit[0].value", "a value whose braces name one of"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "append", "value": "{from_host!r}"}]},
     "header_edit[0].value", "a value whose braces name one of"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "append", "value": "a}"}]},
     "header_edit[0].value", "a value whose braces name one of"),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "remove", "value": "x"}]},
     "header_edit[0].value", 'nothing with action = "remove"'),
    ({"to": "a", "header_edit": [{"name": "X-A", "action": "drop"}]},
     "header_edit[0].action", 'one of "set", "append", "remove"'),
    ({"to": "a", "continue_routing": True}, "to", "no to, to_request_uri, reject or prefix_table"),
    ({"continue_routing": True}, "continue_routing", "a rewrite"),
    ({"to": "a", "failure_sets": ["c"]}, "failure_sets[0]", "the name of a [[destination_set]]"),
    ({"to": "a", "failure_sets": ["b"]}, "mode", '"stateful"'),
    ({"to": "a", "failure_sets": ["b"], "mode": "stateless"}, "mode", '"stateful"'),
    ({"reject": 403, "failure_sets": ["b"], "mode": "stateful"}, "failure_sets",
     "[] unless the rule has a to"),
    ({"to": "a", "failure_codes": ["6xx"]}, "failure_codes[0]", "status codes from 300 to 599"),
    ({"to": "a", "failure_codes": ["50x"]}, "failure_codes[0]", "status codes from 300 to 599"),
    ({"to": "a", "strip_user": 65}, "strip_user", "a number from 0 to 64"),
])  # fmt: skip
def test_refused(route: dict[str, Any], key: str, expected: str) -> None:
    """Each mistake names its key and what was expected."""
    e = error(route)
    assert e.key == f"route[0].{key}"
    assert e.expected.startswith(expected), e.expected


def test_untrusted_tag_must_exist() -> None:
    """untrusted names a tag some [[trusted]] table has, listing the tags there are."""
    e = error({"to": "a", "untrusted": "pbx"}, trusted=[{"cidr": "10.0.0.0/8", "tag": "carrier"}])
    assert e.key == "route[0].untrusted" and "(carrier)" in e.expected


def test_the_issue_fragment_loads() -> None:
    """The opensips.cfg fragment of docs/routing.md, written as sipline config, loads."""
    s = from_dict({
        "proxy": {"mode": "stateful"},
        "trusted": [{"cidr": "10.0.0.0/8", "tag": "carrier"}],
        "destination_set": SETS,
        "route": [
            {"name": "untrusted", "untrusted": "carrier", "reject": 403, "reason": "Forbidden"},
            {"name": "intl", "ruri_user": "00.*", "strip_user": 2, "prefix_user": "+",
             "continue_routing": True},
            {"name": "pai", "continue_routing": True, "header_edit": [
                {"name": "P-Asserted-Identity", "action": "set",
                 "value": "<sip:+15551234@{from_host}>"}]},
            {"name": "us", "ruri_user": r"\+1\d+", "to": "a", "failure_sets": ["b"],
             "failure_codes": ["5xx", "408"]},
            {"name": "none", "reject": 404, "reason": "No route"},
        ],
    }, "conf/test.toml")  # fmt: skip
    assert [r.name for r in s.route] == ["untrusted", "intl", "pai", "us", "none"]


def test_stateless_failure_routing_is_refused_by_the_command(tmp_path: Path) -> None:
    """`sipline check-config` on failure routing in a stateless node exits 2 and says why."""
    p = tmp_path / "stateless.toml"
    p.write_text("""
[[destination_set]]
name = "a"
destinations = ["sip:127.0.0.1:5080"]

[[destination_set]]
name = "b"
destinations = ["sip:127.0.0.1:5081"]

[[route]]
name = "us"
to = "a"
failure_sets = ["b"]
""")
    r = run(["check-config", "--conf", str(p)])
    assert r.returncode == 2
    assert r.stderr.strip() == (
        f'configuration error: {p}: route[0].mode: expected "stateful" (here or in [proxy]): '
        "failure routing needs transactions to see the final response (a stateless proxy "
        'forwards it and forgets), found "stateless"')
