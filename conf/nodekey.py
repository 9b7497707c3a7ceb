"""The node key: the secret behind every routing tag a worker puts on the wire and must
trust when a peer sends it back (``workers/conntag.py``).

Rules:
1. One key per node, shared by all of the node's processes: ``KEY_BYTES`` random bytes in
   ``<run_dir>/node.key``, mode 0600. Whichever process needs it first creates it; the others
   read it. It outlives the processes (a restarted worker still trusts the tags of the
   requests forwarded before), and deleting it rotates it for processes started afterwards.
2. Creation is atomic: the key is written to a private temporary file (``O_CREAT|O_EXCL``,
   0600) and linked into place. ``link(2)`` fails when another process got there first, and
   that key is read instead: no process ever reads a partly written key.
3. A key file of the wrong size, or one that group or others may read (they could forge
   tags), stops the process at start: ``NodeKeyError`` names the file and what is wrong.
"""

from __future__ import annotations

import os
import secrets
import stat

KEY_BYTES = 32
KEY_FILE = "node.key"


class NodeKeyError(Exception):
    """The key file cannot be used (rule 3); the message names the file."""


def load(run_dir: str) -> bytes:
    """The node's key, created on first use (rules 1-2).

    Raises:
        NodeKeyError: the file is unusable (rule 3), or cannot be read or created.
    """
    path = os.path.join(run_dir, KEY_FILE)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise NodeKeyError(f"{path}: {exc.strerror or exc}") from exc
    try:
        _create(path)
        return _read(path)
    except OSError as exc:
        raise NodeKeyError(f"{path}: {exc.strerror or exc}") from exc


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise NodeKeyError(f"{path}: mode {stat.filemode(st.st_mode)}, expected -rw-------"
                               " (others could forge routing tags)")  # fmt: skip
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise NodeKeyError(f"{path}: {len(key)} bytes, expected {KEY_BYTES}")
    return key


def _create(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race: its key is the node's (rule 2)
    finally:
        os.unlink(tmp)
