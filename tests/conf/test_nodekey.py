"""conf/nodekey.py: one key per node, created atomically, refused when unsafe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conf import nodekey

REPO = Path(__file__).resolve().parents[2]


def test_created_once_then_read(tmp_path: Path) -> None:
    """The first load creates a 0600 file of KEY_BYTES; later loads read the same key."""
    key = nodekey.load(str(tmp_path / "run"))
    path = tmp_path / "run" / nodekey.KEY_FILE
    assert len(key) == nodekey.KEY_BYTES and path.read_bytes() == key
    assert path.stat().st_mode & 0o777 == 0o600
    assert nodekey.load(str(tmp_path / "run")) == key
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [nodekey.KEY_FILE]


def test_processes_starting_together_agree(tmp_path: Path) -> None:
    """Eight processes loading the key at once all get the same one (rule 2)."""
    code = "import sys; from conf import nodekey; print(nodekey.load(sys.argv[1]).hex())"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]  # fmt: skip
    keys = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(keys) == 1 and len(next(iter(keys))) == 2 * nodekey.KEY_BYTES
    assert [p.name for p in tmp_path.iterdir()] == [nodekey.KEY_FILE]  # no temporary left


def test_readable_by_others_refused(tmp_path: Path) -> None:
    """A key others may read could be used to forge tags: refused, naming the file."""
    nodekey.load(str(tmp_path))
    path = tmp_path / nodekey.KEY_FILE
    os.chmod(path, 0o644)
    with pytest.raises(nodekey.NodeKeyError, match=f"{path}: mode -rw-r--r--"):
        nodekey.load(str(tmp_path))


def test_wrong_size_refused(tmp_path: Path) -> None:
    """A truncated key file is refused, naming the file, the size found and expected."""
    path = tmp_path / nodekey.KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(nodekey.NodeKeyError, match=f"{path}: 5 bytes, expected 32"):
        nodekey.load(str(tmp_path))
