"""The embedded store's keys on disk: a snapshot plus a journal, so what ``local://`` holds
(registrations above all) outlives a restart of the state plane (docs/cachedb.md
"Persistence").

Rules:
1. The journal holds results, never operations: after a write the key's state is appended,
   ``[key, value, expires]`` for a key that holds a value (an ``incr`` journals the number
   it reached) and ``[key]`` for one that is gone. Replaying a result twice gives the same
   store, so replaying the whole journal over any later snapshot is right.
2. Deadlines on disk are wall-clock seconds (``expires``; None for no TTL): the store's are
   monotonic and mean nothing in another process. A key loaded after its deadline is
   dropped; one before it keeps the time left.
3. One ``os.write`` per batch of requests, as the batch is answered (a killed process loses
   nothing written); ``sync`` (``os.fdatasync``, every sweep of the store, 0.5 s) bounds
   what a power cut loses.
4. Compaction: once the journal holds more than ``2 x keys + MIN_JOURNAL`` entries, the whole
   store is written to ``kv.snap.tmp``, synced and renamed over ``kv.snap``, then the journal
   is truncated. It runs at once, between two batches, so no write interleaves (about a
   second per million keys, during which requests wait). A crash after the rename and before
   the truncation replays the old journal over the new snapshot: harmless by rule 1.
5. ``load`` stops at a torn tail (a write the crash cut short): what was whole before it is
   kept, the tail counted and cut off, so new entries follow the last whole one. A value or key of the wrong type is skipped and counted: the
   files are ours, but a disk is no more trusted than a peer.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from stateplane.kv import KvStore, StoreFull

#: journal entries tolerated above twice the keys before compaction (rule 4)
MIN_JOURNAL = 100_000
#: writes whose result is journaled (rule 1); reads never change what is on disk
MUTATING = frozenset({"set", "add", "incr", "decr", "delete"})
#: bytes read from a file per step of ``load``
READ_CHUNK = 1 << 20
#: the largest entry ``load`` accepts: a value is at most 1 MB (workers/cachedb/interface.py)
MAX_ENTRY_BYTES = 2 << 20


@dataclass(slots=True)
class Loaded:
    """What ``load`` found."""

    keys: int = 0
    expired: int = 0
    entries: int = 0
    torn: int = 0
    bad: int = 0
    refused_full: int = 0


class KvDisk:
    """The journal and snapshot of one store in ``directory`` (module rules)."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.snap = self.dir / "kv.snap"
        self.journal = self.dir / "kv.journal"
        self._fd = -1
        self._buf: list[bytes] = []
        #: entries in the journal now (rule 4)
        self.entries = 0
        self.compactions = 0

    def load(self, store: KvStore, now: float, wall: float) -> Loaded:
        """Fill ``store`` from the snapshot then the journal (``now`` monotonic, ``wall``
        time.time()) and open the journal for appending."""
        found = Loaded()
        latest: dict[str, list[Any]] = {}
        self._read(self.snap, latest, found)
        found.entries, whole = self._read(self.journal, latest, found)
        if found.torn and self.journal.exists():
            os.truncate(self.journal, whole)  # appends must follow the last whole entry
        for key, entry in latest.items():
            if len(entry) == 1:
                continue
            value, expires = entry[1], entry[2]
            if expires is not None and expires <= wall:
                found.expired += 1
                continue
            try:
                store.set(key, value, None if expires is None else expires - wall, now)
            except StoreFull:
                found.refused_full += 1
                continue
            found.keys += 1
        self.entries = found.entries
        self._fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return found

    @staticmethod
    def _read(path: Path, latest: dict[str, list[Any]], found: Loaded) -> tuple[int, int]:
        """Every whole entry of ``path`` into ``latest`` (the last state of each key wins);
        returns how many were read and the offset after the last whole one."""
        try:
            f = path.open("rb")
        except FileNotFoundError:
            return 0, 0
        n = whole = 0
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=True,
                                    max_buffer_size=MAX_ENTRY_BYTES + READ_CHUNK)  # fmt: skip
        with f:
            while chunk := f.read(READ_CHUNK):
                try:  # a length the corruption inflated fills the bounded buffer: BufferFull
                    unpacker.feed(chunk)
                    for entry in unpacker:
                        n, whole = n + 1, unpacker.tell()
                        if _well_formed(entry):
                            latest[entry[0]] = entry
                        else:
                            found.bad += 1
                except (ValueError, msgpack.UnpackException):
                    found.torn += 1  # rule 5: what follows cannot be framed again
                    return n, whole
        if whole != path.stat().st_size:
            found.torn += 1
        return n, whole

    def note(self, key: str, store: KvStore, now: float, wall: float) -> None:
        """Journal the state ``key`` is in after a write (rule 1); written by ``flush``."""
        entry = store.peek(key, now)
        if entry is None:
            self._buf.append(msgpack.packb([key]))
            return
        value, expires_at = entry
        expires = None if expires_at is None else expires_at - now + wall
        self._buf.append(msgpack.packb([key, value, expires]))

    def flush(self) -> None:
        """Rule 3: what this batch changed, in one write."""
        if not self._buf or self._fd < 0:
            return
        data = b"".join(self._buf)
        self.entries += len(self._buf)
        self._buf.clear()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def sync(self) -> None:
        if self._fd >= 0:
            os.fdatasync(self._fd)

    def due(self, keys: int) -> bool:
        """Rule 4: the journal has grown enough to be compacted."""
        return self.entries > 2 * keys + MIN_JOURNAL

    def compact(self, store: KvStore, now: float, wall: float) -> None:
        """Rule 4: the whole store as the new snapshot, and an empty journal."""
        self.flush()
        tmp = self.snap.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                pack = msgpack.Packer().pack
                for key, value, expires_at in store.items(now):
                    f.write(pack([key, value, None if expires_at is None
                                  else expires_at - now + wall]))  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, self.snap)
        _sync_dir(self.dir)
        os.ftruncate(self._fd, 0)
        self.entries = 0
        self.compactions += 1

    def close(self) -> None:
        if self._fd < 0:
            return
        self.flush()
        self.sync()
        os.close(self._fd)
        self._fd = -1


def _well_formed(entry: Any) -> bool:
    if not isinstance(entry, list) or not entry or not isinstance(entry[0], str):
        return False
    if len(entry) == 1:
        return True
    # a NaN or infinite deadline would never expire and breaks the expiry heap's order
    return (len(entry) == 3 and isinstance(entry[1], bytes)
            and (entry[2] is None
                 or (isinstance(entry[2], int | float) and math.isfinite(entry[2]))))  # fmt: skip


def _sync_dir(path: Path) -> None:
    """A rename is durable once the directory is synced."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
