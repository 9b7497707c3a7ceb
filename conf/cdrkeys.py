"""The keys of the CDRs a CDR file holds, read back from its end (``docs/dialogs.md``
"Exactly once: where it comes from"). Shared by the worker's writer (``workers/dialogs/cdr.py``
rule 8) and the state plane, which checks a dead worker's file before its dialogs leave the
host (``stateplane/handover.py`` rule 3): a CDR on one host's disk is invisible to another.
"""

from __future__ import annotations

import json
import os

#: bytes read back from the end of a CDR file: as much as the writer reads back
#: (``workers/dialogs/cdr.py`` RECENT_BYTES, ~12 000 CDRs)
READ_BACK_BYTES = 4 << 20
#: how a line the writer made begins (``make_cdr`` puts the key's two fields first)
_HEAD, _MID = b'{"call_id":"', b'","from_tag":"'


def cdr_key(call_id: str, from_tag: str) -> str:
    """A dialog's key as the table spells it (Call-ID NUL From-tag)."""
    return call_id + "\0" + from_tag


def read_keys(path: str, max_bytes: int) -> set[str]:
    """The keys in the last ``max_bytes`` of the file at ``path``; empty when it cannot be
    read. Never raises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        return keys_in(tail_lines(fd, max_bytes, 0)[1])
    except OSError:
        return set()
    finally:
        os.close(fd)


def tail_lines(fd: int, max_bytes: int, start: int) -> tuple[int, bytes]:
    """(offset read to, the whole lines from the later of ``start`` and the last
    ``max_bytes``); an offset below ``start`` says the file is shorter than that now."""
    size = os.fstat(fd).st_size
    if size < start:
        return size, b""
    first = max(start, size - max_bytes)
    data = os.pread(fd, size - first, first)
    if first > start:  # we began inside a line: drop its end
        cut = data.find(b"\n") + 1
        first, data = first + cut, data[cut:] if cut else b""
    end = data.rfind(b"\n") + 1  # a line still being written is read next time
    return first + end, data[:end]


def keys_in(data: bytes) -> set[str]:
    """Rule 8: the keys of the lines in ``data``. A line this writer made starts with its
    Call-ID and From-tag, cut out with ``find`` (a JSON string holds no bare quote); one with
    a backslash in them, or written another way, is decoded whole."""
    keys: set[str] = set()
    for line in data.split(b"\n"):
        if line.startswith(_HEAD):
            mid = line.find(_MID, len(_HEAD))
            end = line.find(b'"', mid + len(_MID)) if mid > 0 else -1
            if end > 0 and b"\\" not in line[:end]:
                keys.add(
                    cdr_key(
                        line[len(_HEAD) : mid].decode("utf-8", "surrogateescape"),
                        line[mid + len(_MID) : end].decode("utf-8", "surrogateescape"),
                    )
                )
                continue
        try:
            cdr = json.loads(line.decode("utf-8", "surrogateescape"))
        except ValueError:
            continue
        if isinstance(cdr, dict) and isinstance(cdr.get("call_id"), str):
            tag = cdr.get("from_tag")
            keys.add(cdr_key(cdr["call_id"], tag) if isinstance(tag, str) else cdr["call_id"])
    return keys
