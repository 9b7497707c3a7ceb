"""The operator's inactive marks (``sipline ctl destinations set SET URI inactive``), kept in
the run directory so that a worker started after a mark takes it too (docs/operations.md,
"Marking destinations").

Rules:
1. One file, ``destination-marks.json`` in the run directory: the (set, URI) pairs marked
   inactive. ``sipline ctl`` is its one writer (``update``, under an exclusive ``flock`` of
   a lock file beside it, written to a temporary file and renamed over it), and writes it
   BEFORE it asks the live workers: a worker is either already listed as live (it gets the
   verb) or reads the file later (rule 2), so no worker misses a mark.
2. A worker reads it (``read``) right after its control socket is bound, before its event
   loop handles any control message, and again at each routing swap; it marks every pair
   its dispatcher lists and passes over the rest (a set or URI a reload removed: the mark
   holds again if they come back).
3. The file may be damaged or forged (anyone who can write the run directory can also talk
   to the control sockets, so it grants nothing more): it is read bounded (``MAX_BYTES``,
   ``MAX_MARKS``, ``MAX_ARG`` a name), and a file that does not parse counts as no marks
   (logged by the caller), never as an exception that stops a worker.
4. The marks last as long as the run directory: across worker restarts, reloads and a restart
   of the whole node; a reboot empties ``/run``. ``active`` removes a mark.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

FILE = "destination-marks.json"
LOCK = "destination-marks.lock"
MAX_BYTES = 1 << 20
MAX_MARKS = 10_000
#: longest set name or URI kept (the control verb refuses longer: workers/reloading.py)
MAX_ARG = 1024

Mark = tuple[str, str]


class MarksError(Exception):
    """The marks file cannot be read or written; ``str()`` says which and why."""


def parse(data: bytes) -> list[Mark]:
    """The marks of a file's bytes (rule 3).

    Raises:
        MarksError: not a marks file, or over a bound.
    """
    if len(data) > MAX_BYTES:
        raise MarksError(f"{FILE}: more than {MAX_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MarksError(f"{FILE}: not JSON ({exc})") from None
    rows = doc.get("inactive") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or len(rows) > MAX_MARKS:
        raise MarksError(f'{FILE}: expected {{"inactive": [[SET, URI], ...]}} '
                         f"with at most {MAX_MARKS} pairs")  # fmt: skip
    out: list[Mark] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 2
                and all(isinstance(x, str) and 0 < len(x) <= MAX_ARG for x in row)):  # fmt: skip
            raise MarksError(f"{FILE}: expected a [SET, URI] pair, found {str(row)[:80]!r}")
        out.append((row[0], row[1]))
    return out


def dump(marks: list[Mark]) -> bytes:
    return json.dumps({"inactive": [list(m) for m in marks]}).encode()


def read(run_dir: str) -> list[Mark]:
    """The marks in ``run_dir``; none when there is no file.

    Raises:
        MarksError: the file is unreadable or does not parse (rule 3).
    """
    path = Path(run_dir) / FILE
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MarksError(f"{path}: {exc.strerror}") from None
    return parse(data)


def _owned(path: Path, run_dir: str) -> None:
    """``ctl`` run as root (``sudo sipline ctl ...``) writes files the workers, running as
    the run directory's owner, must read: give them to that owner."""
    if os.geteuid() == 0:
        st = os.stat(run_dir)
        os.chown(path, st.st_uid, st.st_gid)


@contextlib.contextmanager
def _locked(run_dir: str) -> Iterator[None]:
    fd = os.open(Path(run_dir) / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    _owned(Path(run_dir) / LOCK, run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update(run_dir: str, mark: Mark, inactive: bool) -> bool:
    """Add (``inactive``) or remove ``mark`` in the file of ``run_dir`` (rule 1); returns
    whether the file changed. A file that does not parse is replaced (its marks were lost
    already: no worker could read them).

    Raises:
        MarksError: the run directory cannot be written, or ``MAX_MARKS`` would be passed.
    """
    try:
        with _locked(run_dir):
            try:
                marks = read(run_dir)
            except MarksError:
                marks = []
            if (mark in marks) == inactive:
                return False
            if inactive:
                if len(marks) >= MAX_MARKS:
                    raise MarksError(f"{FILE}: {MAX_MARKS} marks already (mark some active)")
                marks.append(mark)
            else:
                marks.remove(mark)
            tmp = Path(run_dir) / f".{FILE}.{os.getpid()}"
            tmp.write_bytes(dump(marks))
            tmp.chmod(0o600)
            _owned(tmp, run_dir)
            tmp.replace(Path(run_dir) / FILE)
            return True
    except OSError as exc:
        raise MarksError(f"{run_dir}/{FILE}: {exc.strerror or exc}") from None
