"""The harness leaves nothing behind a failed test (node.py rule 4)."""

from __future__ import annotations

import os
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


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
