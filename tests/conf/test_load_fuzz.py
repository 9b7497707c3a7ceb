"""Property: any TOML document gives Settings or a one-line ConfigError, never another exception."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, get_args, get_origin

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conf.load import ConfigError, from_dict, load
from conf.settings import Settings


def _all_keys(cls: type, out: set[str]) -> set[str]:
    for f in dataclasses.fields(cls):
        out.add(f.name)
        hint = typing.get_type_hints(cls)[f.name]
        inner = get_args(hint)[0] if get_origin(hint) is list else hint
        if dataclasses.is_dataclass(inner):
            _all_keys(inner, out)  # type: ignore[arg-type]
    return out


#: real key names, so generated tables reach the deep checks, plus some strangers
KEYS = st.sampled_from(sorted(_all_keys(Settings, set()))) | st.text(max_size=8)
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats()
    | TEXT
    | st.sampled_from(
        ["udp", "tcp", "127.0.0.1", "::1", "sip:127.0.0.1:5080", "uas", "info", "weighted"]
    )
    | st.datetimes()
    | st.dates()
    | st.times()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)
SECTIONS = st.sampled_from(
    ["node", "listen", "tcp", "bus", "proxy", "destination_set", "route", "log"]
)


def _check(data: dict[str, Any]) -> None:
    try:
        from_dict(data, "fuzz.toml")
    except ConfigError as exc:
        message = str(exc)
        assert (
            message.startswith("fuzz.toml: ") and ": expected " in message and ", found " in message
        )
        assert "\n" not in message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(SECTIONS | st.text(max_size=5), VALUES, max_size=6))
def test_any_document(data: dict[str, Any]) -> None:
    """Arbitrary TOML values in any section are accepted or refused with a ConfigError."""
    _check(data)


ROUTE_LIKE = st.fixed_dictionaries(
    {"name": TEXT, "to": st.sampled_from(["uas", "x"])},
    optional={
        "methods": st.lists(TEXT, max_size=3),
        "ruri_user": TEXT,
        "ruri_host": TEXT,
        "source": TEXT,
    },
)
SET_LIKE = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["uas", "x", ""]),
        "destinations": st.lists(TEXT | st.just("sip:127.0.0.1"), max_size=3),
    },
    optional={
        "algorithm": st.sampled_from(["round_robin", "weighted", "hash_call_id", "x"]),
        "weights": st.lists(st.integers(-2, 5), max_size=3),
    },
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(SET_LIKE, max_size=3),
    st.lists(ROUTE_LIKE, max_size=3),
    st.lists(
        st.fixed_dictionaries({"transport": st.sampled_from(["udp", "tcp"]), "address": TEXT}),
        max_size=3,
    ),
)
def test_routing_shaped(sets: list[Any], routes: list[Any], listen: list[Any]) -> None:
    """Well-shaped routing tables with arbitrary strings reach every cross-check without crashing."""
    _check({"destination_set": sets, "route": routes, "listen": listen})


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=200))
def test_any_text(tmp_path_factory: Any, text: str) -> None:
    """Any file content loads or raises ConfigError (syntax errors included)."""
    path = tmp_path_factory.mktemp("fuzz") / "f.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: ")
