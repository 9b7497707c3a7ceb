"""Dialog profiles and call limits (dialogstate/profiles.py through the dialog table), and the
[dialogs]/[[dialog_profile]] configuration checks (the CDR writer: tests/workers/test_cdr.py)."""

from __future__ import annotations

from typing import Any

import pytest

from conf.load import ConfigError, from_dict
from conf.settings import DialogProfile

from .dialog_helpers import T0, W0, Call, table
from .helpers import parsed_req, request


def _calls(t: Any, calls: list[Call], route: str = "default") -> list[tuple[int, str] | None]:
    out = []
    for c in calls:
        refusal = t.admit(c.invite(), source_ip=c.src, route=route)
        out.append(refusal)
        if refusal is None:
            t.invite_forwarded(c.invite(), caller=("i", ()), callee=("i", ()), source_ip=c.src,
                               source_port=5070, destination="127.0.0.1:7000", now=T0, wall=W0,
                               route=route)  # fmt: skip
    return out


@pytest.mark.parametrize(("profile", "calls", "refused"), [
    (DialogProfile(name="all", limit=2), [Call(1), Call(2), Call(3)], [None, None, (486, "Busy Here")]),
    (DialogProfile(name="all", limit=1, over_limit_status=503), [Call(1), Call(2)],
     [None, (503, "Service Unavailable")]),
    (DialogProfile(name="all"), [Call(n) for n in range(5)], [None] * 5),
    (DialogProfile(name="caller", with_value=True, value_from="from_user", limit=1),
     [Call(1, from_user="a"), Call(2, from_user="b"), Call(3, from_user="a")],
     [None, None, (486, "Busy Here")]),
    (DialogProfile(name="dest", with_value=True, value_from="ruri_user", limit=1),
     [Call(1, user="x"), Call(2, user="y"), Call(3, user="y")], [None, None, (486, "Busy Here")]),
    (DialogProfile(name="src", with_value=True, value_from="source_ip", limit=1),
     [Call(1, src="10.0.0.1"), Call(2, src="10.0.0.2"), Call(3, src="10.0.0.2")],
     [None, None, (486, "Busy Here")]),
    (DialogProfile(name="trunk", with_value=True, value_from="route", limit=2),
     [Call(1), Call(2), Call(3)], [None, None, (486, "Busy Here")]),
    (DialogProfile(name="other", limit=1, routes=["nope"]), [Call(1), Call(2)], [None, None]),
], ids=["flat-486", "flat-503", "no-limit", "from-user", "ruri-user", "source-ip", "route",
        "other-route"])  # fmt: skip
def test_limits(profile: DialogProfile, calls: list[Call], refused: list[Any]) -> None:
    """A call that would take a profile (or one value of it) over its limit is refused."""
    t = table(profiles=[profile])
    assert _calls(t, calls) == refused
    assert t.profiles.refused[profile.name] == sum(r is not None for r in refused)


def test_sizes_and_release_once() -> None:
    """Sizes count live dialogs per profile and value; ending releases exactly once."""
    t = table(profiles=[DialogProfile(name="all"),
                        DialogProfile(name="caller", with_value=True, value_from="from_user")])
    a1, a2, b = Call(1, from_user="a"), Call(2, from_user="a"), Call(3, from_user="b")
    for c in (a1, a2, b):
        c.confirmed(t)
    assert t.profile_sizes() == {"all": 3, "caller": {"a": 2, "b": 1}}
    bye = a1.in_dialog("BYE", 2)
    t.receive_request(bye, T0 + 5, W0 + 5)
    t.receive_request(bye, T0 + 5.5, W0 + 5.5)  # a retransmission
    t.final_sent(a1.invite(), 486, T0 + 6, W0 + 6)
    assert t.profile_sizes() == {"all": 2, "caller": {"a": 1, "b": 1}}
    assert t.stats()["profiles"] == t.profile_sizes()
    t.receive_request(b.in_dialog("BYE", 1, from_caller=False), T0 + 7, W0 + 7)
    assert t.profile_sizes() == {"all": 1, "caller": {"a": 1}}  # a value at zero is forgotten


def test_limit_frees_a_slot_when_a_call_ends() -> None:
    """Once a call of a full profile ends, the next call is admitted."""
    t = table(profiles=[DialogProfile(name="all", limit=1)])
    c1, c2 = Call(1), Call(2)
    c1.confirmed(t)
    assert t.admit(c2.invite(), source_ip=c2.src) == (486, "Busy Here")
    t.receive_request(c1.in_dialog("BYE", 2), T0 + 5, W0 + 5)
    assert t.admit(c2.invite(), source_ip=c2.src) is None


def test_limit_view_counts_what_admission_checks() -> None:
    """``limits`` (ctl dialogs) is own + the others' counts for limited profiles only, and a
    call is refused exactly when that count has reached the limit."""
    t = table(profiles=[DialogProfile(name="trunk", limit=3),
                        DialogProfile(name="caller", with_value=True, value_from="from_user",
                                      limit=2),
                        DialogProfile(name="all")])  # fmt: skip
    Call(1, from_user="a").confirmed(t)
    assert t.stats()["limits"] == {"trunk": 1, "caller/a": 1}
    t.profiles.remote.update({("trunk", ""): 2, ("caller", "b"): 2, ("caller", "a"): 0})
    assert t.stats()["limits"] == {"trunk": 3, "caller/a": 1, "caller/b": 2}
    assert t.admit(Call(2, from_user="c").invite(), source_ip="10.0.0.1") == (486, "Busy Here")
    t.profiles.remote[("trunk", "")] = 1
    assert t.stats()["limits"]["trunk"] == 2
    assert t.admit(Call(3, from_user="b").invite(), source_ip="10.0.0.1") == (486, "Busy Here")
    assert t.admit(Call(4, from_user="a").invite(), source_ip="10.0.0.1") is None


def test_empty_value_is_not_a_member() -> None:
    """A profile with values skips a dialog whose value would be empty."""
    t = table(profiles=[DialogProfile(name="u", with_value=True, value_from="ruri_user")])
    c = Call(1)
    inv = c.invite()
    assert t.profiles.members(inv, c.src, "default") == (("u", "bob"),)
    no_user = parsed_req(request(uri="sip:example.com"))
    assert t.profiles.members(no_user, c.src, "default") == ()


def test_memberships_are_shared() -> None:
    """Equal membership tuples are one object (compact state)."""
    t = table(profiles=[DialogProfile(name="all")])
    Call(1).start(t)
    Call(2).start(t)
    d1, d2 = (t.get(Call(n).call_id, Call(n).ftag) for n in (1, 2))
    assert d1 is not None and d2 is not None and d1.members is d2.members


# -- configuration --------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "destination_set": [{"name": "uas", "destinations": ["sip:127.0.0.1:5080"]}],
    "route": [{"name": "default", "to": "uas", "mode": "stateful"}],
}


@pytest.mark.parametrize(("extra", "key", "expected"), [
    ({"dialogs": {"enabled": True}, "proxy": {"record_route": False}}, "proxy.record_route",
     "true when [dialogs] enabled"),
    ({"dialogs": {"enabled": True, "early_lifetime_s": 100}}, "dialogs.early_lifetime_s",
     "more than transactions.timer_c_s"),
    ({"dialog_profile": [{"name": "a"}]}, "dialog_profile[0]", "unless [dialogs] enabled"),
    ({"dialogs": {"enabled": True}, "dialog_profile": [{"name": "a", "with_value": True}]},
     "dialog_profile[0].value_from", "one of ruri_user"),
    ({"dialogs": {"enabled": True}, "dialog_profile": [{"name": "a", "value_from": "route"}]},
     "dialog_profile[0].value_from", "unless with_value"),
    ({"dialogs": {"enabled": True}, "dialog_profile": [{"name": "a", "over_limit_status": 500}]},
     "dialog_profile[0].over_limit_status", "486 or 503"),
    ({"dialogs": {"enabled": True}, "dialog_profile": [{"name": "a"}, {"name": "a"}]},
     "dialog_profile[1].name", "a unique name"),
    ({"dialogs": {"enabled": True}, "dialog_profile": [{"name": "a", "routes": ["x"]}]},
     "dialog_profile[0].routes[0]", "the name of a [[route]]"),
    ({"dialogs": {"enabled": True},
      "route": [{"name": "default", "to": "uas", "mode": "stateless", "dialog_lifetime_s": 60}]},
     "route[0].dialog_lifetime_s", "0 on a stateless route"),
    ({"route": [{"name": "default", "to": "uas", "mode": "stateful", "dialog_lifetime_s": 60}]},
     "route[0].dialog_lifetime_s", "unless [dialogs] enabled"),
    ({"dialogs": {"enabled": True, "max_dialogs": 0}}, "dialogs.max_dialogs", "a number from 1"),
], ids=["record-route", "early-lifetime", "profile-needs-dialogs", "value-from-needed",
        "value-from-unwanted", "status", "unique", "routes", "stateless-lifetime",
        "lifetime-needs-dialogs", "max-dialogs"])  # fmt: skip
def test_config_errors(extra: dict[str, Any], key: str, expected: str) -> None:
    """A bad [dialogs] or [[dialog_profile]] stops start-up naming the key and what it wants."""
    with pytest.raises(ConfigError) as err:
        from_dict({**BASE, **extra}, "sipline.toml")
    assert err.value.file == "sipline.toml" and err.value.key == key
    assert expected in err.value.expected


def test_config_loads() -> None:
    """A valid configuration builds the sections with their values."""
    s = from_dict({**BASE, "dialogs": {"enabled": True, "cdr_file": "/tmp/cdr.jsonl"},
                   "dialog_profile": [{"name": "trunk", "with_value": True, "value_from": "route",
                                       "limit": 10, "over_limit_status": 503,
                                       "routes": ["default"]}]})  # fmt: skip
    assert s.dialogs.enabled and s.dialogs.cdr_file == "/tmp/cdr.jsonl"
    assert s.dialog_profile[0] == DialogProfile(name="trunk", with_value=True, value_from="route",
                                                limit=10, over_limit_status=503,
                                                routes=["default"])  # fmt: skip
