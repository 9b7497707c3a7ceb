"""The harness's children: nothing is left behind a failed test (node.py rule 4), and
nothing they print stops their output being read."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .node import Proc, reap_all


def test_reap_all_kills_a_forgotten_child_and_its_children_and_closes_the_pipe(
        tmp_path: Path) -> None:  # fmt: skip
    """A child that started a grandchild and was never stopped: both die, the pipe closes."""
    p = Proc.start(["sh", "-c", "sleep 60 & echo $!; wait"], dict(os.environ), tmp_path)
    lines = p.lines
    grandchild = int(p.wait_lines(1)[0])
    left = reap_all()
    assert left == ["sh -c sleep 60 & echo $!; wait"]
    assert p.popen.poll() is not None and p.popen.stdout is not None and p.popen.stdout.closed
    assert not Path(f"/proc/{grandchild}").exists() or _zombie(grandchild), lines
    assert reap_all() == []  # nothing is reaped twice


def test_output_that_is_not_utf8_is_read_on(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 become replacement characters and the lines after them are
    still collected (a reader thread ended by a decoding error would leave the child
    blocked on a full pipe)."""
    script = "import sys; sys.stdout.buffer.write(b'tls \\xa7\\xff\\n'); print('after')"
    p = Proc.start([sys.executable, "-c", script], dict(os.environ), tmp_path)
    assert p.wait_lines(2) == ["tls \ufffd\ufffd", "after"]
    assert p.popen.wait(10) == 0  # it exits by itself: stop() could SIGTERM it first
    assert p.stop() == 0


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
