"""The prefix table file: what it accepts, and how it says what is wrong with a bad line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.routing.prefix_csv import PrefixFileError, _lines, load_file, parse
from workers.routing.prefix_route import PrefixTables
from workers.routing.prefixes import MAX_GROUPS_PER_PREFIX, Gateway

GROUPS = ["a", "b", "carrier-1.x"]


def load(text: str, max_prefixes: int = 1000) -> object:
    return parse(text.encode("latin-1"), "p.csv", "t", GROUPS, max_prefixes)


def refusal(text: str | bytes, max_prefixes: int = 1000) -> PrefixFileError:
    data = text if isinstance(text, bytes) else text.encode("latin-1")
    with pytest.raises(PrefixFileError) as info:
        parse(data, "p.csv", "t", GROUPS, max_prefixes)
    return info.value


class TestAccepted:
    def test_full_format(self) -> None:
        """Header, comments, blank lines, spaces, optional columns and several rows per
        prefix make one table."""
        t = parse(
            b"prefix,group,priority,weight\n"
            b"# UK via a, London also via b\n"
            b"\n"
            b"+44,a\r\n"
            b" +4420 , a , 1 , 10 \n"
            b"+4420,b,0\n"
            b"1,carrier-1.x,3,1000000\n",
            "p.csv", "t", GROUPS, 10,
        )  # fmt: skip
        assert len(t) == 3
        rs = t.lookup("+442079460000")
        assert rs is not None
        assert rs.gateways == (Gateway("b", 0, 1), Gateway("a", 1, 10))
        assert t.lookup("+4413") is not None and t.lookup("+4413").gateways == (Gateway("a"),)  # type: ignore[union-attr]
        assert t.lookup("1555") is not None
        assert t.lookup("2") is None

    def test_rule_sets_are_shared(self) -> None:
        """Prefixes with the same rows share one rule set object."""
        t = parse(b"".join(b"%d,a,0,5\n" % p for p in range(100, 200)), "p.csv", "t", GROUPS, 1000)
        assert len(t.rulesets) == 1 and len(t) == 100

    def test_header_only_on_line_one(self) -> None:
        """A header after the first line is a bad line."""
        assert refusal("1,a\nprefix,group\n").line == 2


class TestRefused:
    @pytest.mark.parametrize(
        ("text", "line", "field", "expected"),
        [
            ("1,a\n2\n", 2, "line", "2 to 4 fields"),
            ("1,a,0,1,x\n", 1, "line", "2 to 4 fields"),
            ("12a,a\n", 1, "prefix", "digits with an optional leading +"),
            ("+,a\n", 1, "prefix", "digits"),
            ("1" * 17 + ",a\n", 1, "prefix", "at most 16 characters"),
            ("1,a b\n", 1, "group", "a group name"),
            ("1,zz\n", 1, "group", "the name of a [[destination_set]] (a, b, carrier-1.x)"),
            ("1,a,65536\n", 1, "priority", "a priority from 0 to 65535"),
            ("1,a,-1\n", 1, "priority", "a priority from 0"),
            ("1,a,0,0\n", 1, "weight", "a weight from 1 to 1000000"),
            ("1,a,0,1000001\n", 1, "weight", "a weight from 1"),
            ("# ok\n\n1,a\n1,b\n1,a\n", 5, "group", "each group once per prefix"),
        ],
        ids=["few-fields", "many-fields", "prefix-letter", "prefix-plus-only", "prefix-long",
             "group-space", "group-unknown", "priority-high", "priority-negative", "weight-0",
             "weight-high", "group-twice"],
    )  # fmt: skip
    def test_bad_line_names_line_field_and_expectation(self, text: str, line: int, field: str,
                                                       expected: str) -> None:  # fmt: skip
        """The error names the file, the line, the field and what was expected."""
        err = refusal(text)
        assert (err.file, err.line, err.field) == ("p.csv", line, field)
        assert expected in err.expected
        assert str(err).startswith(f"p.csv:{line}: {field}: expected ")

    def test_not_ascii(self) -> None:
        """A byte that is not ASCII is refused with its line."""
        err = refusal(b"1,a\n2,a\n3,\xe9\n")
        assert (err.line, err.field, err.found) == (3, "line", "byte 0xe9")

    def test_too_many_groups(self) -> None:
        """A prefix has at most MAX_GROUPS_PER_PREFIX groups."""
        groups = [f"g{i}" for i in range(MAX_GROUPS_PER_PREFIX + 1)]
        text = "".join(f"7,{g}\n" for g in groups).encode()
        with pytest.raises(PrefixFileError) as info:
            parse(text, "p.csv", "t", groups, 10)
        assert info.value.line == MAX_GROUPS_PER_PREFIX + 1

    def test_too_many_prefixes(self) -> None:
        """max_prefixes bounds distinct prefixes; extra rows for known ones do not count."""
        assert len(load("1,a\n1,b\n2,a\n", max_prefixes=2)) == 2  # type: ignore[arg-type]
        err = refusal("1,a\n2,a\n3,a\n", max_prefixes=2)
        assert (err.line, err.field) == (3, "prefix")
        assert "at most 2 prefixes" in err.expected

    def test_unreadable_file(self, tmp_path: Path) -> None:
        """A missing file is refused as such."""
        with pytest.raises(PrefixFileError) as info:
            load_file(str(tmp_path / "none.csv"), "t", GROUPS, 10)
        assert info.value.field == "file" and "No such file" in info.value.found

    def test_bad_file_changes_nothing(self, tmp_path: Path) -> None:
        """A refused file leaves the table that was loaded before in service."""
        path = tmp_path / "p.csv"
        path.write_text("44,a\n")
        tables = PrefixTables({"t": load_file(str(path), "t", GROUPS, 10)})
        path.write_text("44,b\n45,a\n46,nowhere\n")
        with pytest.raises(PrefixFileError):
            tables.replace(load_file(str(path), "t", GROUPS, 10))
        assert tables["t"].lookup("4410").gateways == (Gateway("a"),)  # type: ignore[union-attr]
        assert tables["t"].lookup("4510") is None


def test_identical_line_twice_is_refused() -> None:
    """The same row twice (same group, priority and weight) is refused like any repeated
    group, however small the interned ids (a regression: an identity test missed it)."""
    err = refusal("1,a\n1,a\n")
    assert (err.line, err.field) == (2, "group")


@given(st.text(alphabet="12,\r\n\x0ca", max_size=200), st.integers(1, 20))
def test_lines_by_block_are_splitlines(text: str, block: int) -> None:
    """Reading a block at a time gives exactly the lines (and line numbers) of splitlines."""
    assert list(_lines(text, block)) == text.splitlines()
