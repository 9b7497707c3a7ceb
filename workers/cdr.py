"""CDR file: one JSON object per line, appended (the dialog module's only I/O).

Rules:
1. ``write`` never raises into the proxy: a CDR that cannot be encoded, a file that cannot be
   opened or written, is counted (``errors``), and what could not be written waits for the
   next ``flush`` within the buffer bound.
2. Buffering is bounded: at most ``max_lines`` lines wait; ``write`` flushes when the buffer
   holds ``flush_lines`` lines (call ``flush`` on a timer and at shutdown for the rest). Past
   ``max_lines`` (the file has been failing) new CDRs are dropped and counted (``dropped``):
   the log carries every CDR as well, so none is lost for good.
3. One ``os.write`` per flush on an ``O_APPEND`` descriptor, so concurrent writers (several
   workers on one file) interleave whole lines, never parts of one. A failed write closes the
   descriptor; the next flush opens the path again (so a rotated file is recreated).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

#: lines that trigger a flush from ``write``: ~100 CDRs are ~30 KB, one write
DEFAULT_FLUSH_LINES = 100
#: lines held at most while the file fails (rule 2)
DEFAULT_MAX_LINES = 10_000


class CdrWriter:
    def __init__(self, path: str, *, flush_lines: int = DEFAULT_FLUSH_LINES,
                 max_lines: int = DEFAULT_MAX_LINES) -> None:  # fmt: skip
        self.path = path
        self.flush_lines = max(1, flush_lines)
        self.max_lines = max(self.flush_lines, max_lines)
        self.counters: Counter[str] = Counter()  # written, errors, dropped
        self._lines: list[bytes] = []
        self._fd: int | None = None

    def write(self, cdr: dict[str, Any]) -> None:
        """Queue one CDR; flushes when ``flush_lines`` are queued. Never raises."""
        if len(self._lines) >= self.max_lines:
            self.counters["dropped"] += 1
            return
        try:
            line = json.dumps(cdr, separators=(",", ":"), ensure_ascii=False).encode(
                "utf-8", "surrogateescape")  # fmt: skip
        except (TypeError, ValueError, UnicodeEncodeError):
            self.counters["errors"] += 1
            return
        self._lines.append(line + b"\n")
        if len(self._lines) >= self.flush_lines:
            self.flush()

    def flush(self) -> int:
        """Write what is queued; returns how many lines were written. Never raises."""
        if not self._lines:
            return 0
        view = memoryview(b"".join(self._lines))
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self.counters["errors"] += 1
            self._close_fd()
            if view.nbytes < sum(map(len, self._lines)):  # a partial write: keep the rest only
                self._lines[:] = _split_lines(bytes(view))
            return 0
        n = len(self._lines)
        self._lines.clear()
        self.counters["written"] += n
        return n

    @property
    def pending(self) -> int:
        return len(self._lines)

    def close(self) -> None:
        """Flush and close the file (at shutdown). Never raises."""
        self.flush()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                self.counters["errors"] += 1
            self._fd = None


def _split_lines(data: bytes) -> list[bytes]:
    return [line + b"\n" for line in data.split(b"\n")[:-1]] + (
        [data[data.rfind(b"\n") + 1 :]] if not data.endswith(b"\n") else [])  # fmt: skip
