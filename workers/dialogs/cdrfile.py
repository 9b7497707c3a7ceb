"""The worker's CDR file on its event loop: the writer (``workers/dialogs/cdr.py``), the one
loop timer that fsyncs it within its window (cdr.py rule 3), its reopening on SIGHUP, the
check that keeps an adopted dialog whose CDR is already written from getting a second one
(cdr.py rule 8), and which CDRs go to the log as ``cdr`` events as well.

The log (``[dialogs] cdr_log``): ``all`` logs every CDR; ``unwritten`` (the default) logs
only a CDR the file does not hold at the end of its loop iteration: one the writer refused
(its buffer full, or not encodable), and those of an iteration whose ``flush`` failed (they
wait in memory, lost if the worker dies before a write succeeds). Each CDR is logged at most
once. A line per call costs the worker its structlog line and the log relay (honcho) a
read and a write: more CPU per call than the file (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog

from dialogstate.table import DialogTable
from workers.dialogs.cdr import CdrWriter, cdr_key

log = structlog.get_logger()


class CdrFile:
    def __init__(self, writer: CdrWriter, loop: asyncio.AbstractEventLoop,
                 peer_files: Sequence[str] = (), *, log_all: bool = False) -> None:  # fmt: skip
        self.writer = writer
        self.loop = loop
        #: the other CDR files (a failover peer's) read back by ``already_written``
        self.peer_files = peer_files
        #: ``[dialogs] cdr_log = "all"``: every CDR is logged too, not only the unwritten
        self.log_all = log_all
        #: this iteration's CDRs queued and not logged: logged if its ``flush`` fails
        self._unlogged: list[dict[str, Any]] = []
        self._sync_timer: asyncio.TimerHandle | None = None

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one CDR for this iteration's ``flush``; log it as well where the module's
        docstring says."""
        if self.log_all:
            log.info("cdr", **fields)
            self.writer.write(fields)
        elif self.writer.write(fields):
            self._unlogged.append(fields)
        else:  # the file will not hold it: the log does
            log.info("cdr", **fields)

    def flush(self) -> None:
        """Write the queued CDRs now and see that they are fsync'd within the window."""
        w = self.writer
        w.flush()
        if self._unlogged:
            if w.pending:  # the write failed: this iteration's CDRs are in memory only
                for fields in self._unlogged:
                    log.info("cdr", **fields)
            self._unlogged.clear()
        at = w.sync_deadline()
        if at is not None and self._sync_timer is None:
            self._sync_timer = self.loop.call_at(at, self._sync)

    def _sync(self) -> None:
        self._sync_timer = None
        self.writer.flush()  # what a failed write left queued
        self.writer.sync()
        if self.writer.sync_deadline() is not None:  # written since: its own window
            self.flush()

    def reopen(self) -> None:
        """SIGHUP: the CDR file was rotated; write to whatever its path names from now on."""
        self.writer.reopen()
        log.info("cdr_file_reopened", path=self.writer.path)

    def already_written(self, records: list[Any], dialogs: DialogTable,
                        counters: Counter[str]) -> list[Any]:  # fmt: skip
        """The adopted records whose CDR is not in our CDR file nor a peer's yet: the others
        ended, their CDR written, before their end reached the state plane (the writer died
        in between); each is forgotten with a "t" delta, never given a second CDR."""
        if not records:
            return records
        own = os.path.normpath(self.writer.path)
        others = [p for p in self.peer_files if os.path.normpath(p) != own]
        written = self.writer.recent_keys(others)
        if not written:
            return records
        keep, wall = [], time.time()
        for rec in records:
            cid, tag = rec[0], rec[1]
            if isinstance(cid, str) and isinstance(tag, str) and (
                    cdr_key(cid, tag) in written or cid in written):  # fmt: skip
                dialogs.forget(cid, tag, "cdr_written", wall)
                counters["adopt_cdr_written"] += 1
                log.info("dialog_already_ended", call_id=cid, from_tag=tag)
                continue
            keep.append(rec)
        return keep

    def cancel(self) -> None:
        """The loop is closing: no fsync timer left behind."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()

    def close(self) -> None:
        self.writer.close()
