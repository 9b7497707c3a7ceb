"""Longest-prefix tables: the packed table against a naive reference, keys from the network,
the order of a prefix's gateway groups."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conf.settings import DestinationSet as SetCfg
from conf.settings import Listener
from workers.routing.dispatcher import Dispatcher, DispatchSet
from workers.routing.prefix_route import PrefixTables
from workers.routing.prefixes import (
    MAX_KEY_CHARS,
    MAX_PREFIX_CHARS,
    Gateway,
    PrefixTable,
    RuleSet,
    entry,
    pack,
    table_from,
    unpack,
)


def naive(prefixes: list[str], key: str) -> str | None:
    """The reference: the longest prefix in the list that ``key`` starts with."""
    hits = [p for p in prefixes if key.startswith(p)]
    return max(hits, key=len) if hits else None


def found(t: PrefixTable, key: str) -> str | None:
    rs = t.lookup(key)
    return None if rs is None else rs.gateways[0].group


def numbered(prefixes: list[str]) -> PrefixTable:
    """A table whose group names the prefix, so a match says which prefix won."""
    return table_from("t", [(p, Gateway(f"g{p}")) for p in prefixes])


prefix_st = st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True)
# keys from a small alphabet so they often start with the table's prefixes
key_st = st.from_regex(r"\+?[0-3]{0,20}", fullmatch=True)


class TestLongestPrefix:
    def test_longest_wins(self) -> None:
        """Of several prefixes of the key, the longest is the answer."""
        t = numbered(["1", "12", "123", "2"])
        assert found(t, "1239") == "g123"
        assert found(t, "129") == "g12"
        assert found(t, "13") == "g1"
        assert found(t, "3") is None

    def test_plus_is_part_of_the_prefix(self) -> None:
        """+44 and 44 are different prefixes, as in drouting."""
        t = numbered(["+44", "44"])
        assert found(t, "+4420") == "g+44"
        assert found(t, "4420") == "g44"
        assert found(t, "0044") is None

    def test_sibling_above_the_key_does_not_hide_the_parent(self) -> None:
        """A longer sibling sorting just under the key sends the search back to the parent."""
        t = numbered(["44", "4419", "441999", "45"])
        assert found(t, "4420") == "g44"
        assert found(t, "44199") == "g4419"

    def test_exact_key(self) -> None:
        """A key equal to a prefix matches it."""
        assert found(numbered(["4420", "44"]), "4420") == "g4420"

    def test_key_longer_than_any_prefix(self) -> None:
        """Keys up to MAX_KEY_CHARS match on their first MAX_PREFIX_CHARS characters."""
        p = "9" * MAX_PREFIX_CHARS
        t = numbered([p, "9"])
        assert found(t, p + "1" * (MAX_KEY_CHARS - MAX_PREFIX_CHARS)) == f"g{p}"

    @pytest.mark.parametrize(
        "key",
        ["", "+", "++44", "44a", "4 4", "44;x", "٤٤", "+44\x00", "1" * (MAX_KEY_CHARS + 1), "0x44"],
        ids=["empty", "plus", "two-plus", "letter", "space", "param", "arabic-digits", "nul",
             "too-long", "hex"],
    )  # fmt: skip
    def test_hostile_keys_match_nothing(self, key: str) -> None:
        """A key with anything but digits and one leading '+', or too long, matches nothing
        even where the table has a one-character catch-all."""
        t = numbered([str(d) for d in range(10)] + ["+1"])
        assert t.lookup(key) is None

    def test_empty_table(self) -> None:
        assert table_from("t", []).lookup("123") is None

    @given(st.lists(prefix_st, max_size=60, unique=True), st.lists(key_st, max_size=30))
    @settings(max_examples=300, deadline=None)
    def test_matches_naive_reference(self, prefixes: list[str], keys: list[str]) -> None:
        """For any table and key, the packed lookup names the same prefix as the naive
        longest ``startswith`` (keys drawn to share starts with the prefixes)."""
        small = [p.translate(str.maketrans("456789", "012301")) for p in prefixes]
        table_prefixes = sorted(set(prefixes) | set(small))
        t = numbered(table_prefixes)
        for key in keys + [p + "1" for p in table_prefixes[:10]]:
            want = naive(table_prefixes, key) if key.lstrip("+") else None
            if len(key) > MAX_KEY_CHARS:
                want = None
            assert found(t, key) == (None if want is None else f"g{want}"), key

    @given(prefix_st)
    def test_pack_round_trip_and_order(self, p: str) -> None:
        """Packing keeps the text and text order (a prefix sorts before what it starts)."""
        assert unpack(pack(p), len(p)) == p
        assert entry(p) < entry(p + "0")


class TestRuleSetOrder:
    def test_priority_first(self) -> None:
        """Lower priority groups come first whatever their weight."""
        rs = RuleSet([Gateway("late", 2, 1000), Gateway("early", 0, 1), Gateway("mid", 1, 5)])
        for h in range(50):
            assert rs.order(h) == ["early", "mid", "late"]

    def test_every_group_once_and_deterministic(self) -> None:
        """Each call tries every group once; the same hash gives the same order."""
        rs = RuleSet([Gateway(g, 0, w) for g, w in (("a", 1), ("b", 2), ("c", 3))])
        for h in range(0, 10**6, 7919):
            assert sorted(rs.order(h)) == ["a", "b", "c"]
            assert rs.order(h) == rs.order(h)

    def test_weights_share_the_first_place(self) -> None:
        """Within a priority the first group is drawn in proportion to the weights."""
        rs = RuleSet([Gateway("a", 0, 1), Gateway("b", 0, 3)])
        firsts = Counter(rs.order(h * 2654435761 % 2**32)[0] for h in range(4000))
        assert 0.2 < firsts["a"] / 4000 < 0.3
        assert firsts["a"] + firsts["b"] == 4000


class TestTargets:
    """A matched prefix's groups become one failover list over real destination sets."""

    @staticmethod
    def sets(*down: str) -> dict[str, DispatchSet]:
        cfgs = [
            SetCfg(name="a", destinations=["sip:10.0.0.1", "sip:10.0.0.2"]),
            SetCfg(name="b", destinations=["sip:10.0.1.1", "sip:10.0.0.2"]),
            SetCfg(name="c", destinations=["sip:10.0.2.1"], probe_interval_s=1),
        ]
        d = Dispatcher(cfgs, [Listener(transport="udp")])
        for uri in down:
            d.disable("c", uri)
        return d.sets

    def test_first_group_then_the_rest(self) -> None:
        """The first group's pick leads, its other destinations follow, then the next
        priority's; a destination in two groups is tried once."""
        t = table_from("t", [("44", Gateway("a", 0)), ("44", Gateway("b", 1)),
                             ("44", Gateway("c", 2))])  # fmt: skip
        choice = PrefixTables({"t": t}).choose("t", "4420", "call-1", self.sets())
        assert choice is not None and choice.dset.name == "a"
        hosts = [d.host for d in choice.targets]
        assert set(hosts[:2]) == {"10.0.0.1", "10.0.0.2"}
        assert hosts[2:] == ["10.0.1.1", "10.0.2.1"]

    def test_unusable_fallbacks_are_left_out(self) -> None:
        """A disabled destination of a later group is not a failover target."""
        t = table_from("t", [("44", Gateway("a", 0)), ("44", Gateway("c", 1))])
        choice = PrefixTables({"t": t}).choose("t", "44", "call-1", self.sets("sip:10.0.2.1"))
        assert choice is not None
        assert "10.0.2.1" not in [d.host for d in choice.targets]

    def test_no_user_or_no_prefix(self) -> None:
        """No Request-URI user, or no prefix of it, is no choice."""
        tables = PrefixTables({"t": table_from("t", [("44", Gateway("a"))])})
        assert tables.choose("t", None, "c", self.sets()) is None
        assert tables.choose("t", "33", "c", self.sets()) is None

    def test_same_call_same_first_destination(self) -> None:
        """A call's requests (INVITE, then its CANCEL or ACK) get the same first target."""
        t = table_from("t", [("4", Gateway("a", 0, 1)), ("4", Gateway("b", 0, 1))])
        tables, sets = PrefixTables({"t": t}), self.sets()
        for i in range(20):
            first = [tables.choose("t", "44", f"call-{i}", sets).targets[0] for _ in range(3)]  # type: ignore[union-attr]
            assert first[0] == first[1] == first[2]

    def test_group_all_down_is_passed_over(self) -> None:
        """A first group whose every destination is disabled gives way to the next one; with
        none usable at all, the first group's hash still names a destination."""
        t = table_from("t", [("44", Gateway("c", 0)), ("44", Gateway("b", 1))])
        tables = PrefixTables({"t": t})
        choice = tables.choose("t", "44", "call-1", self.sets("sip:10.0.2.1"))
        assert choice is not None and choice.dset.name == "b"
        assert choice.targets[0].host in ("10.0.1.1", "10.0.0.2")
        only_c = PrefixTables({"t": table_from("t", [("44", Gateway("c"))])})
        choice = only_c.choose("t", "44", "call-1", self.sets("sip:10.0.2.1"))
        assert choice is not None and [d.host for d in choice.targets] == ["10.0.2.1"]
