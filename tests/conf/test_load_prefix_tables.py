"""[[prefix_table]] and routes' prefix_table: what load refuses, naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conf.load import ConfigError, from_dict

DSET = {"name": "uas", "destinations": ["sip:127.0.0.1:5080"]}


def conf(tmp_path: Path, table: dict[str, Any] | None = None,
         route: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    csv = tmp_path / "p.csv"
    csv.write_text("44,uas\n")
    t = {"name": "carriers", "file": str(csv), **(table or {})}
    r = {"name": "out", "prefix_table": "carriers", **(route or {})}
    return {"destination_set": [DSET], "prefix_table": [t], "route": [r]}


def error(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        from_dict(data, "conf/test.toml")
    return info.value


class TestPrefixTable:
    def test_minimal(self, tmp_path: Path) -> None:
        """A table with a readable absolute file and a route to it load, 404 by default."""
        s = from_dict(conf(tmp_path))
        assert s.route[0].prefix_table == "carriers"
        assert (s.prefix_table[0].no_match_status, s.prefix_table[0].max_prefixes) == (404, 2_000_000)

    @pytest.mark.parametrize(
        ("table", "route", "key", "expected"),
        [
            ({"file": "p.csv"}, None, "prefix_table[0].file", "an absolute file path"),
            ({"file": "/nonexistent/p.csv"}, None, "prefix_table[0].file", "a readable CSV file"),
            ({"name": ""}, {"prefix_table": "", "to": "uas"}, "prefix_table[0].name", "a non-empty name"),
            ({"no_match_status": 200}, None, "prefix_table[0].no_match_status", "from 400"),
            ({"no_match_reason": "a\r\nb"}, None, "prefix_table[0].no_match_reason",
             "without control characters"),
            (None, {"prefix_table": "nope"}, "route[0].prefix_table",
             "the name of a [[prefix_table]] (carriers)"),
            (None, {"to": "uas"}, "route[0].prefix_table", "one action per route"),
        ],
        ids=["relative", "missing", "no-name", "status", "reason", "unknown-table", "two-actions"],
    )  # fmt: skip
    def test_refused(self, tmp_path: Path, table: dict[str, Any] | None,
                     route: dict[str, Any] | None, key: str, expected: str) -> None:  # fmt: skip
        """Each mistake is refused under its own key, saying what was expected."""
        e = error(conf(tmp_path, table, route))
        assert e.key == key
        assert expected in e.expected

    def test_directory_is_not_a_file(self, tmp_path: Path) -> None:
        assert error(conf(tmp_path, {"file": str(tmp_path)})).key == "prefix_table[0].file"

    def test_names_unique(self, tmp_path: Path) -> None:
        """Two tables of one name are refused."""
        data = conf(tmp_path)
        data["prefix_table"].append(dict(data["prefix_table"][0]))
        assert error(data).key == "prefix_table[1].name"


class TestCacheDBTable:
    def test_cachedb_key_instead_of_a_file(self, tmp_path: Path) -> None:
        """A table may name a cacheDB key instead of a file."""
        s = from_dict(conf(tmp_path, {"file": "", "cachedb_key": "sipline:prefixes:carriers"}))
        assert s.prefix_table[0].cachedb_key == "sipline:prefixes:carriers"

    @pytest.mark.parametrize(
        ("table", "key", "expected"),
        [({"cachedb_key": "k"}, "prefix_table[0].file", "one of them"),
         ({"file": ""}, "prefix_table[0].file", "a file or a cachedb_key"),
         ({"file": "", "cachedb_key": "a b"}, "prefix_table[0].cachedb_key", "letters, digits"),
         ({"file": "", "cachedb_key": "k" * 201}, "prefix_table[0].cachedb_key", "1 to 200")],
        ids=["both", "neither", "space", "long"],
    )  # fmt: skip
    def test_refused(self, tmp_path: Path, table: dict[str, Any], key: str, expected: str) -> None:
        e = error(conf(tmp_path, table))
        assert e.key == key and expected in e.expected


def test_failure_sets_after_a_prefix_table(tmp_path: Path) -> None:
    """A stateful route to a prefix table may name failure sets; a stateless one may not."""
    data = conf(tmp_path, route={"failure_sets": ["uas"], "mode": "stateful"})
    assert from_dict(data).route[0].failure_sets == ["uas"]
    data = conf(tmp_path, route={"failure_sets": ["uas"]})
    assert error(data).key == "route[0].mode"
