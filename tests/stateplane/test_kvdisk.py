"""The embedded store on disk (stateplane/kvdisk.py): what a restarted state plane loads is
what the store held, deadlines kept in wall-clock time, whatever the journal's history."""

from __future__ import annotations

from pathlib import Path

import msgpack

from stateplane import kv
from stateplane.kvdisk import KvDisk

WALL = 1_800_000_000.0


def write(store: kv.KvStore, disk: KvDisk, op: str, key: str, value: bytes = b"",
          ttl_s: float | None = None, by: int = 0, now: float = 0.0) -> None:  # fmt: skip
    """One request as the server runs it: applied, its result noted, the batch flushed."""
    kv.apply(store, kv.Request(op, key, ttl_s, by, value), now)
    disk.note(key, store, now, WALL + now)
    disk.flush()


def contents(store: kv.KvStore, now: float) -> dict[str, bytes]:
    return {k: v for k, v, _ in store.items(now)}


def reload(path: Path, now: float = 0.0, wall: float = WALL) -> tuple[kv.KvStore, KvDisk]:
    store, disk = kv.KvStore(), KvDisk(str(path))
    disk.load(store, now, wall)
    return store, disk


class TestKvDisk:
    def test_a_reloaded_store_holds_what_the_old_one_held(self, tmp_path: Path) -> None:
        """Sets, adds, counters and deletes come back as they ended; a key with a TTL keeps
        the time it had left in wall-clock terms, on another monotonic origin."""
        store, disk = reload(tmp_path)
        write(store, disk, "set", "aor:alice", b"contact-1", ttl_s=3600)
        write(store, disk, "set", "aor:bob", b"contact-2")
        write(store, disk, "add", "aor:bob", b"not-this")  # refused: bob keeps contact-2
        write(store, disk, "incr", "calls", by=5)
        write(store, disk, "decr", "calls", by=2)
        write(store, disk, "set", "gone", b"x")
        write(store, disk, "delete", "gone")
        disk.close()
        # 100 s later, on a monotonic clock that starts at 5000
        again, disk2 = reload(tmp_path, now=5000.0, wall=WALL + 100)
        assert contents(again, 5000.0) == {"aor:alice": b"contact-1", "aor:bob": b"contact-2",
                                            "calls": b"3"}  # fmt: skip
        entry = again.peek("aor:alice", 5000.0)
        assert entry is not None and entry[1] == 5000.0 + 3500
        assert again.peek("aor:bob", 5000.0) == (b"contact-2", None)
        disk2.close()

    def test_keys_past_their_deadline_are_not_loaded(self, tmp_path: Path) -> None:
        """A registration that expired while the state plane was down stays gone."""
        store, disk = reload(tmp_path)
        write(store, disk, "set", "short", b"1", ttl_s=10)
        write(store, disk, "set", "long", b"2", ttl_s=1000)
        disk.close()
        again, disk2 = reload(tmp_path, wall=WALL + 11)
        assert contents(again, 0.0) == {"long": b"2"}
        disk2.close()

    def test_a_torn_tail_keeps_what_was_whole(self, tmp_path: Path) -> None:
        """A write cut short by a crash: every entry before it loads, the tail is counted."""
        store, disk = reload(tmp_path)
        for i in range(10):
            write(store, disk, "set", f"k{i}", b"v%d" % i)
        disk.close()
        with (tmp_path / "kv.journal").open("ab") as f:
            f.write(msgpack.packb(["k10", b"v10", None])[:-2])
        fresh, again = kv.KvStore(), KvDisk(str(tmp_path))
        found = again.load(fresh, 0.0, WALL)
        assert contents(fresh, 0.0) == {f"k{i}": b"v%d" % i for i in range(10)}
        assert (found.keys, found.torn) == (10, 1)
        write(fresh, again, "set", "after", b"restart")  # appended after the last whole one
        again.close()
        last, d = reload(tmp_path)
        assert contents(last, 0.0) == {**contents(fresh, 0.0)} and len(last) == 11
        d.close()

    def test_garbage_entries_are_skipped_and_counted(self, tmp_path: Path) -> None:
        """Entries of the wrong shape (a disk is not trusted more than a peer) are skipped."""
        store, disk = reload(tmp_path)
        write(store, disk, "set", "good", b"1")
        disk.close()
        with (tmp_path / "kv.journal").open("ab") as f:
            f.write(msgpack.packb([1, 2, 3]) + msgpack.packb("x") + msgpack.packb(["k", "str", 1])
                    + msgpack.packb(["nan", b"v", float("nan")])
                    + msgpack.packb(["inf", b"v", float("inf")]))
        fresh, d = kv.KvStore(), KvDisk(str(tmp_path))
        found = d.load(fresh, 0.0, WALL)
        assert contents(fresh, 0.0) == {"good": b"1"} and found.bad == 5
        d.close()

    def test_compaction_keeps_the_store_and_empties_the_journal(self, tmp_path: Path) -> None:
        """After a compaction the snapshot alone holds the store; later writes journal on top;
        a crash between the snapshot's rename and the journal's truncation (the old journal
        replayed over the new snapshot) loads the same store."""
        store, disk = reload(tmp_path)
        for i in range(50):
            write(store, disk, "set", f"k{i}", b"v%d" % i, ttl_s=100 + i)
        for i in range(0, 50, 2):
            write(store, disk, "delete", f"k{i}")
        write(store, disk, "incr", "n", by=7)
        old_journal = (tmp_path / "kv.journal").read_bytes()
        disk.compact(store, 0.0, WALL)
        assert (tmp_path / "kv.journal").stat().st_size == 0 and disk.entries == 0
        write(store, disk, "incr", "n", by=1)
        write(store, disk, "delete", "k1")
        disk.close()
        expect = contents(store, 0.0)
        again, d2 = reload(tmp_path)
        assert contents(again, 0.0) == expect
        d2.close()
        # the crash: the journal as it was before the compaction, then the later writes
        later = (tmp_path / "kv.journal").read_bytes()
        (tmp_path / "kv.journal").write_bytes(old_journal + later)
        crashed, d3 = reload(tmp_path)
        assert contents(crashed, 0.0) == expect
        d3.close()

    def test_compaction_is_due_when_the_journal_outgrows_the_store(self, tmp_path: Path) -> None:
        """Rewrites of one key grow the journal, not the store: compaction comes due."""
        store, disk = reload(tmp_path)
        assert not disk.due(len(store))
        disk.entries = 100_001
        assert disk.due(0) and not disk.due(1)
        disk.close()

    def test_a_length_inflated_by_corruption_is_a_torn_tail(self, tmp_path: Path) -> None:
        """A bin32 header claiming 4 GB after the whole entries: the bounded buffer fills,
        which is a torn tail like any other, never an exception at start."""
        store, disk = reload(tmp_path)
        write(store, disk, "set", "good", b"1")
        disk.close()
        with (tmp_path / "kv.journal").open("ab") as f:
            f.write(b"\x93\xa1k\xc6\xff\xff\xff\xff" + b"\0" * (3 << 20))
        fresh, d = kv.KvStore(), KvDisk(str(tmp_path))
        found = d.load(fresh, 0.0, WALL)
        assert contents(fresh, 0.0) == {"good": b"1"} and found.torn == 1
        d.close()
