"""conf/logging.py: lines leave once per loop iteration, at once without a loop; stdout's
pipe is grown. Real pipes, real loops."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import TextIO

from conf.logging import PIPE_BYTES, LoopFlushedLogger, widen_pipe


def pipe() -> tuple[int, TextIO]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, os.fdopen(w, "w")


def pending(r: int) -> bytes:
    try:
        return os.read(r, 1 << 16)
    except BlockingIOError:
        return b""


def test_without_a_loop_each_line_leaves_at_once() -> None:
    r, w = pipe()
    log = LoopFlushedLogger(w)
    log.info("one")
    assert pending(r) == b"one\n"
    w.close()
    os.close(r)


def test_in_a_loop_the_iterations_lines_leave_together() -> None:
    r, w = pipe()
    log = LoopFlushedLogger(w)

    async def run() -> tuple[bytes, bytes]:
        log.info("a")
        log.warning("b")
        before = pending(r)  # still in the file's buffer
        await asyncio.sleep(0)  # the loop runs the flush
        return before, pending(r)

    assert asyncio.run(run()) == (b"", b"a\nb\n")
    w.close()
    os.close(r)


def test_a_loop_that_closed_before_its_flush_does_not_hold_the_next_loops_lines() -> None:
    r, w = pipe()
    log = LoopFlushedLogger(w)
    first = asyncio.new_event_loop()
    first.call_soon(log.info, "left behind")  # queues its flush for the next iteration...
    first.call_soon(first.stop)  # ...which never comes
    first.run_forever()
    first.close()
    assert pending(r) == b""

    async def later() -> None:
        log.info("next")
        await asyncio.sleep(0)

    asyncio.run(later())
    assert pending(r) == b"left behind\nnext\n"
    w.close()
    os.close(r)


def test_stdout_pipe_is_widened(tmp_path: Path) -> None:
    r, w = pipe()
    with open("/proc/sys/fs/pipe-max-size") as f:
        cap = int(f.read())
    assert widen_pipe(w) == min(PIPE_BYTES, cap) == fcntl.fcntl(w.fileno(), fcntl.F_GETPIPE_SZ)
    with open(tmp_path / "log", "w") as regular:
        assert widen_pipe(regular) == 0  # not a pipe: left alone
    w.close()
    os.close(r)
