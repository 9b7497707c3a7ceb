"""The embedded store's sans-IO core: time is an argument, so expiry is exact and instant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stateplane import kv
from stateplane.kv import KvLimits, KvStore, NotACounter, StoreFull


class TestExpiry:
    def test_key_lives_until_its_deadline(self) -> None:
        """A key with ttl 2 is there at now+1.999 and gone at now+2."""
        s = KvStore()
        s.set("k", b"v", 2.0, now=10.0)
        assert s.get("k", 11.999) == b"v"
        assert s.get("k", 12.0) is None
        assert len(s) == 0 and s.bytes_used == 0

    def test_expire_reclaims_in_bounded_batches(self) -> None:
        """expire(now, limit) drops at most ``limit`` due keys, earliest first."""
        s = KvStore()
        for i in range(10):
            s.set(f"k{i}", b"v", 1.0 + i, now=0.0)
        assert s.next_deadline() == 1.0
        assert s.expire(5.5, limit=3) == 3
        assert s.expire(5.5) == 2
        assert len(s) == 5 and s.next_deadline() == 6.0

    def test_replaced_ttl_leaves_no_early_expiry(self) -> None:
        """A set that replaces a key's TTL cancels the old deadline."""
        s = KvStore()
        s.set("k", b"1", 1.0, now=0.0)
        s.set("k", b"2", 10.0, now=0.5)
        assert s.expire(5.0) == 0
        assert s.get("k", 5.0) == b"2"
        s.set("k", b"3", None, now=6.0)
        assert s.expire(100.0) == 0 and s.get("k", 100.0) == b"3"

    def test_expired_key_is_absent_for_add(self) -> None:
        """add treats an expired key as missing."""
        s = KvStore()
        s.set("k", b"old", 1.0, now=0.0)
        assert s.add("k", b"new", None, now=0.5) is False
        assert s.add("k", b"new", None, now=1.0) is True
        assert s.get("k", 2.0) == b"new"


class TestCounters:
    def test_incr_creates_with_ttl_and_keeps_it(self) -> None:
        """incr of a missing key sets the TTL; later incrs keep that deadline."""
        s = KvStore()
        assert s.incr("c", 3, 2.0, now=0.0) == 3
        assert s.incr("c", 1, 100.0, now=1.0) == 4
        assert s.get("c", 1.99) == b"4"
        assert s.get("c", 2.0) is None

    def test_decr_floors_and_missing_is_zero(self) -> None:
        """decr stops at 0; a missing key answers 0 and stays missing."""
        s = KvStore()
        assert s.decr("c", 1, now=0.0) == 0
        assert s.get("c", 0.0) is None
        s.incr("c", 2, None, now=0.0)
        assert s.decr("c", 5, now=0.0) == 0
        assert s.get("c", 0.0) == b"0"

    @pytest.mark.parametrize("value", [b"abc", b"-1", b"", b"1.5", b"99999999999999999999"])
    def test_non_counters_refused(self, value: bytes) -> None:
        """incr/decr of anything but a decimal 0..2**63-1 raises and leaves the value."""
        s = KvStore()
        s.set("c", value, None, now=0.0)
        with pytest.raises(NotACounter):
            s.incr("c", 1, None, now=0.0)
        with pytest.raises(NotACounter):
            s.decr("c", 1, now=0.0)
        assert s.get("c", 0.0) == value

    def test_overflow_refused(self) -> None:
        """A sum past 2**63 - 1 raises instead of wrapping."""
        s = KvStore()
        s.incr("c", 2**63 - 1, None, now=0.0)
        with pytest.raises(NotACounter):
            s.incr("c", 1, None, now=0.0)

    def test_memcached_padding_accepted(self) -> None:
        """A space-padded counter (as memcached leaves one) still counts."""
        s = KvStore()
        s.set("c", b"9 ", None, now=0.0)
        assert s.incr("c", 1, None, now=0.0) == 10


class TestBounds:
    def test_refuse_policy(self) -> None:
        """Under ``refuse`` a new key past max_keys raises StoreFull; replacing one still works."""
        s = KvStore(KvLimits(max_keys=2, on_full="refuse"))
        s.set("a", b"1", None, 0.0)
        s.set("b", b"1", None, 0.0)
        with pytest.raises(StoreFull):
            s.set("c", b"1", None, 0.0)
        s.set("a", b"2", None, 0.0)
        assert s.get("a", 0.0) == b"2" and s.get("c", 0.0) is None

    def test_expired_keys_make_room_first(self) -> None:
        """A full store drops expired keys before refusing or evicting."""
        s = KvStore(KvLimits(max_keys=2, on_full="refuse"))
        s.set("a", b"1", 1.0, 0.0)
        s.set("b", b"1", None, 0.0)
        s.set("c", b"1", None, 1.0)
        assert s.get("b", 1.0) == b"1" and s.get("c", 1.0) == b"1"

    def test_evict_policy_drops_least_recently_used(self) -> None:
        """Under ``evict`` the least recently read or written key goes."""
        s = KvStore(KvLimits(max_keys=2, on_full="evict"))
        s.set("a", b"1", None, 0.0)
        s.set("b", b"1", None, 0.0)
        s.get("a", 0.0)
        s.set("c", b"1", None, 0.0)
        assert s.get("b", 0.0) is None and s.get("a", 0.0) == b"1" and s.evicted == 1

    def test_max_bytes(self) -> None:
        """Key plus value bytes are bounded; growing a value counts its growth."""
        s = KvStore(KvLimits(max_bytes=10, on_full="refuse"))
        s.set("k", b"12345", None, 0.0)  # 6 bytes
        with pytest.raises(StoreFull):
            s.set("k", b"1234567890", None, 0.0)
        s.set("k", b"123456789", None, 0.0)
        assert s.bytes_used == 10


_keys = st.sampled_from(["a", "b", "c", "é"])
_ops = st.lists(
    st.tuples(
        st.sampled_from(["get", "set", "add", "incr", "decr", "delete", "tick"]),
        _keys,
        st.one_of(st.none(), st.integers(1, 5)),
        st.integers(0, 3),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(_ops)
def test_store_matches_model(ops: list[tuple[str, str, int | None, int]]) -> None:
    """Any sequence of ops and clock ticks agrees with a plain dict of (value, deadline), and
    the byte count always equals what is held."""
    s = KvStore(KvLimits(max_keys=100))
    model: dict[str, tuple[bytes, float | None]] = {}
    now = 0.0

    def live(k: str) -> bytes | None:
        v = model.get(k)
        if v is None or (v[1] is not None and v[1] <= now):
            model.pop(k, None)
            return None
        return v[0]

    for op, key, ttl, by in ops:
        if op == "tick":
            now += by
            s.expire(now)
        elif op == "get":
            assert s.get(key, now) == live(key)
        elif op == "set":
            s.set(key, b"%d" % by, ttl, now)
            model[key] = (b"%d" % by, None if ttl is None else now + ttl)
        elif op == "add":
            absent = live(key) is None
            assert s.add(key, b"x", ttl, now) is absent
            if absent:
                model[key] = (b"x", None if ttl is None else now + ttl)
        elif op == "delete":
            assert s.delete(key, now) is (live(key) is not None)
            model.pop(key, None)
        else:
            cur = live(key)
            if cur is not None and not cur.isdigit():
                with pytest.raises(NotACounter):
                    s.incr(key, by, ttl, now) if op == "incr" else s.decr(key, by, now)
                continue
            if op == "incr":
                n = by if cur is None else int(cur) + by
                deadline = (None if ttl is None else now + ttl) if cur is None else model[key][1]
                assert s.incr(key, by, ttl, now) == n
                model[key] = (b"%d" % n, deadline)
            else:
                n = 0 if cur is None else max(0, int(cur) - by)
                assert s.decr(key, by, now) == n
                if cur is not None:
                    model[key] = (b"%d" % n, model[key][1])
        held = {k: v for k in list(model) if (v := live(k)) is not None}
        for k, v in held.items():
            assert s.get(k, now) == v
        assert s.bytes_used == sum(len(k.encode()) + len(v) for k, v in held.items())


class TestWire:
    def test_request_round_trip(self) -> None:
        """A request survives pack/unpack with its value frame untouched."""
        req = kv.Request("set", "k", 1.5, 0, b"\x00\xff")
        assert kv.unpack_request(kv.pack_request(b"r1", req)) == req

    @pytest.mark.parametrize(
        "frames",
        [
            [b"\xc1", b""],
            [b"\x93\x01\x02\x03", b""],
            [kv.pack_request(b"r", kv.Request("get", "k", None, 0, b""))[1], b"", b""],
            [b"\x94\xa4nope\xa1k\xc0\x00", b""],
            [b"\x94\xa3set\xa1k\xff\x00", b""],
            [b"\x94\xa4incr\xa1k\xc0\xff", b""],
            [b"\x81\x01\x02", b""],
            [b"\x94" + b"\xdc\xff\xff" * 400, b""],
            [kv.msgpack.packb(["set", "k", float("nan"), 0]), b""],
            [kv.msgpack.packb(["set", "k", float("inf"), 0]), b""],
            [kv.msgpack.packb(["set", "k", 1e300, 0]), b""],
            [kv.msgpack.packb(["set", "k", True, 0]), b""],
        ],
        ids=[
            "not-msgpack",
            "short",
            "four-frames",
            "bad-op",
            "negative-ttl",
            "negative-by",
            "int-map-key",
            "too-large",
            "nan-ttl",
            "infinite-ttl",
            "huge-ttl",
            "bool-ttl",
        ],
    )
    def test_bad_requests_are_wire_errors(self, frames: list[bytes]) -> None:
        """Anything but a well-formed request raises WireError, nothing else."""
        with pytest.raises(kv.WireError):
            kv.unpack_request([b"rid", *frames])
