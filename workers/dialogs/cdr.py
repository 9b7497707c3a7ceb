"""CDR file: one JSON object per line, appended (the dialog module's only I/O).

Rules:
1. ``write`` and ``flush`` never raise into the proxy: a CDR that cannot be encoded, a file
   that cannot be opened or written, is counted (``errors``), and what could not be written
   waits for the next ``flush`` within the buffer bound.
2. No waiting for an interval: the worker calls ``flush`` at the end of every loop iteration
   that ended calls, before that iteration's dialog deltas leave for the state plane and
   before its ingress pipes are flushed (the BYE it forwards, the 200 it relays). So a CDR
   is in the kernel (``write(2)`` returned: a SIGKILL of the worker cannot lose it) before
   anything else learns that its call ended (``docs/dialogs.md`` "CDRs").
3. Durable = ``fsync(2)`` returned after the line's ``write(2)``: at most ``fsync_s`` after it
   (``sync_deadline``; the worker arms one loop timer for it), at once with ``fsync_s = 0``.
   The clock is injected (monotonic seconds), so tests measure the window without sleeping.
4. Buffering is bounded: at most ``max_lines`` lines wait. Past it (the file has been failing)
   new CDRs are dropped and counted (``dropped``), and ``write`` says so: the worker logs
   them instead (``workers/dialogs/cdrfile.py``).
5. One ``os.write`` per flush on an ``O_APPEND`` descriptor, so concurrent writers (several
   workers on one file) interleave whole lines, never parts of one.
6. Rotation: every flush compares the path's inode with the one held; a renamed or deleted
   file (logrotate, an operator) is synced, closed and the path opened again, created if
   missing. ``reopen`` (SIGHUP) does the same at the next flush. A failed write closes the
   descriptor too.
7. A file this writer creates is ``0640`` and belongs to ``gid`` (readable by the owner and
   that group only), ``0600`` without a group; an existing file keeps its mode and owner.
8. ``recent_keys`` reads back the tail of the file (and of other CDR files, a failover peer's)
   for the keys of the CDRs already written: a dialog that comes back after a crash (adopted
   from the state plane) whose key is there ended already, and must not get a second CDR.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

# the lines' keys are read by the state plane too (conf/cdrkeys.py: what every process agrees on)
from conf.cdrkeys import cdr_key
from conf.cdrkeys import keys_in as _keys
from conf.cdrkeys import tail_lines as _tail_fd

__all__ = ["CdrWriter", "cdr_key"]

#: lines held at most while the file fails (rule 4)
DEFAULT_MAX_LINES = 10_000
#: how long a written line may wait for its fsync (rule 3): a host crash loses at most this
#: much; 0.02 s costs one fsync per 20 ms at most, whatever the call rate
DEFAULT_FSYNC_S = 0.02
#: bytes read back from the end of each CDR file by ``recent_keys`` (rule 8): ~12 000 CDRs,
#: seconds of a busy node, while a dialog whose CDR was written but whose end did not reach
#: the state plane comes back within a couple of heartbeats of the crash (or right after the
#: restart, the file not written meanwhile). Reading 4 MiB costs ~80 ms on a loaded 2-core box,
#: once per burst of adoptions (RECENT_REUSE_S)
RECENT_BYTES = 4 << 20
#: how long a ``recent_keys`` reading is reused (one takeover sends its dialogs in many
#: envelopes within this time; a reading is extended by what was appended since)
RECENT_REUSE_S = 5.0

#: ``json.dumps(cdr, separators=(",", ":"), ensure_ascii=False)`` builds a ``JSONEncoder`` per
#: call; one built once writes the same text (tests/workers/test_cdr_line.py), ~1.5 µs a CDR
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class CdrWriter:
    def __init__(self, path: str, *, fsync_s: float = DEFAULT_FSYNC_S, gid: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_lines: int = DEFAULT_MAX_LINES,
                 recent_bytes: int = RECENT_BYTES) -> None:  # fmt: skip
        self.path = path
        self.fsync_s = max(0.0, fsync_s)
        self.gid = gid
        self.clock = clock
        self.max_lines = max(1, max_lines)
        self.recent_bytes = recent_bytes
        self.counters: Counter[str] = Counter()  # written, synced, errors, dropped, reopened
        self._lines: list[bytes] = []
        self._fd: int | None = None
        self._ident: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file held
        self._unsynced_since: float | None = None  # when the oldest unsynced line was written
        self._reopen = False
        #: path -> (ident, offset read to, keys, taken at): rule 8's reading, reused
        self._recent: dict[str, tuple[tuple[int, int], int, set[str], float]] = {}

    def write(self, cdr: dict[str, Any]) -> bool:
        """Queue one CDR for the next ``flush``; False when it was not queued (dropped or not
        encodable). Never raises."""
        if len(self._lines) >= self.max_lines:
            self.counters["dropped"] += 1
            return False
        try:
            line = _ENCODE(cdr).encode("utf-8", "surrogateescape")
        except (TypeError, ValueError, UnicodeEncodeError):
            self.counters["errors"] += 1
            return False
        self._lines.append(line + b"\n")
        return True

    def flush(self) -> int:
        """Write what is queued (rule 2), fsync it if ``fsync_s`` is 0; returns how many lines
        were written. Never raises."""
        if not self._lines:
            return 0
        view = memoryview(b"".join(self._lines))
        try:
            fd = self._open()
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            self.counters["errors"] += 1
            self._close_fd()
            if view.nbytes < sum(map(len, self._lines)):  # a partial write: keep the rest only
                self._lines[:] = _split_lines(bytes(view))
            return 0
        n = len(self._lines)
        self._lines.clear()
        self.counters["written"] += n
        if self._unsynced_since is None:
            self._unsynced_since = self.clock()
        if self.fsync_s == 0:
            self.sync()
        return n

    def sync_deadline(self) -> float | None:
        """When the oldest line written and not yet fsynced must be (rule 3); None: none waits."""
        if self._unsynced_since is None:
            return None
        return self._unsynced_since + self.fsync_s

    def sync(self) -> bool:
        """fsync what was written; True when it is durable now (or nothing waited)."""
        if self._unsynced_since is None:
            return True
        if self._fd is None:  # closed after a failed write: its lines were synced or are queued
            self._unsynced_since = None
            return True
        try:
            os.fsync(self._fd)
        except OSError:
            self.counters["errors"] += 1
            self._close_fd()
            return False
        self._unsynced_since = None
        self.counters["synced"] += 1
        return True

    def reopen(self) -> None:
        """SIGHUP (rule 6): sync and close the file now; the next flush opens the path again."""
        self._reopen = True
        self._close_fd()

    @property
    def pending(self) -> int:
        return len(self._lines)

    def close(self) -> None:
        """Flush, sync and close the file (at shutdown). Never raises."""
        self.flush()
        self._close_fd()

    def recent_keys(self, others: Iterable[str] = ()) -> set[str]:
        """The keys (``cdr_key``) of the CDRs in the last ``recent_bytes`` of our file, of the
        rotated file we may still hold, and of ``others`` (rule 8). A line of an older
        version, without a From-tag, gives its Call-ID alone. Never raises."""
        found: set[str] = set()
        now = self.clock()
        for path in (self.path, *others):
            found |= self._recent_of(path, now)
        if self._fd is not None:  # rotated away and not reopened yet: the rest of its lines
            try:
                ident = _ident(os.stat(self.path))
            except OSError:
                ident = (0, 0)
            if ident != self._ident:
                try:
                    found |= _keys(_tail_fd(self._fd, self.recent_bytes, 0)[1])
                except OSError:
                    self.counters["errors"] += 1
        return found

    def _recent_of(self, path: str, now: float) -> set[str]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return set()
        try:
            ident = _ident(os.fstat(fd))
            held = self._recent.get(path)
            if held is not None and held[0] == ident and now - held[3] < RECENT_REUSE_S:
                _, start, keys, taken = held  # extend the reading by what was appended
            else:
                start, keys, taken = 0, set(), now
            read_to, data = _tail_fd(fd, self.recent_bytes, start)
            if read_to < start:  # truncated in place: read it all again
                read_to, data = _tail_fd(fd, self.recent_bytes, 0)
                keys, taken = set(), now
            keys |= _keys(data)
            self._recent[path] = (ident, read_to, keys, taken)
            return keys
        except OSError:
            self.counters["errors"] += 1
            return set()
        finally:
            os.close(fd)

    def _open(self) -> int:
        """The descriptor to append to: the one held while the path still names its file."""
        if self._fd is not None:
            try:
                moved = _ident(os.stat(self.path)) != self._ident
            except FileNotFoundError:
                moved = True
            if moved:  # rule 6: renamed or deleted under us
                self.counters["reopened"] += 1
                self._close_fd()
            else:
                return self._fd
        elif self._reopen:
            self.counters["reopened"] += 1
        self._reopen = False
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC  # read: ``recent_keys`` after a rename
        mode = 0o600 if self.gid is None else 0o640
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            fd = os.open(self.path, flags)
        else:
            try:  # rule 7, whatever the umask
                if self.gid is not None:
                    os.fchown(fd, -1, self.gid)
                os.fchmod(fd, mode)
            except OSError:
                os.close(fd)
                raise
        self._fd, self._ident = fd, _ident(os.fstat(fd))
        return fd

    def _close_fd(self) -> None:
        """Sync (what was written must not wait for the window) and close; never raises."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._unsynced_since is not None:
                os.fsync(fd)
                self.counters["synced"] += 1
        except OSError:
            self.counters["errors"] += 1
        try:
            os.close(fd)
        except OSError:
            self.counters["errors"] += 1
        self._unsynced_since = None


def _ident(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _split_lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]] + (
        [data[data.rfind(b"\n") + 1 :]] if not data.endswith(b"\n") else [])  # fmt: skip
