"""Prefix tables kept in a cacheDB key space: pushed whole, read whole, switched at once.

The cacheDB interface has no key listing (memcached has none), so the key space is laid out
to be read without one. For a table under ``KEY``:

- ``KEY:VERSION:I`` (I from 0): the table's CSV text (``prefix_csv`` format), cut at line
  ends into chunks of at most ``CHUNK_BYTES`` (a memcached item holds 1 MB);
- ``KEY:current``: ``VERSION CHUNKS SHA256`` in ASCII, written last.

Rules:
1. ``push`` checks the whole text as a worker would (``prefix_csv.parse``) before writing
   anything: a refused file changes nothing in the key space. It writes the new version's
   chunks, then points ``current`` at them, then deletes the previous version's chunks.
2. ``fetch`` reads ``current``, then every chunk it names, and checks the digest: a reader
   that met a push half-way (chunks of a version already deleted, or replaced) sees a
   missing chunk or a wrong digest, and tries again from ``current`` (at most ``TRIES``).
3. Everything read may be forged or damaged: ``current`` is parsed strictly, its chunk count
   bounded (``MAX_CHUNKS``), and the text goes through the same checks as a file.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Collection

from workers.cachedb.interface import CacheDB
from workers.routing.prefix_csv import PrefixFileError, parse
from workers.routing.prefixes import PrefixTable

CHUNK_BYTES = 900_000  # under MAX_VALUE_BYTES (1 000 000) of workers/cachedb/interface.py
#: 2 000 chunks of 900 kB: 1.8 GB, far above 20 million prefixes of 40 bytes a line
MAX_CHUNKS = 2_000
TRIES = 3
_CURRENT_RE = re.compile(rb"([0-9]{1,20}) ([0-9]{1,4}) ([0-9a-f]{64})")


def where(key: str) -> str:
    """How errors name a table of the key space (in place of a file name)."""
    return f"cachedb:{key}"


def chunks(data: bytes) -> list[bytes]:
    """``data`` cut after line ends into pieces of at most ``CHUNK_BYTES`` (a single line
    longer than that is cut inside: ``parse`` refuses it anyway)."""
    out, start = [], 0
    while start < len(data):
        end = start + CHUNK_BYTES
        if end < len(data):
            nl = data.rfind(b"\n", start, end)
            end = nl + 1 if nl >= start else end
        out.append(data[start:end])
        start = end
    return out


async def push(db: CacheDB, key: str, data: bytes, groups: Collection[str],
               max_prefixes: int) -> str:  # fmt: skip
    """Check ``data`` and make it the table under ``key`` (rule 1); returns its version.

    Raises:
        PrefixFileError: ``data`` is refused; the key space is unchanged.
        CacheError: the cacheDB failed; ``current`` still names a whole version.
    """
    parse(data, where(key), key, groups, max_prefixes)
    pieces = chunks(data)
    if len(pieces) > MAX_CHUNKS:
        raise PrefixFileError(where(key), 0, "file", f"at most {MAX_CHUNKS * CHUNK_BYTES} bytes",
                              f"{len(data)} bytes")  # fmt: skip
    old = await db.get(f"{key}:current")
    version = str(time.time_ns())
    for i, piece in enumerate(pieces):
        await db.set(f"{key}:{version}:{i}", piece)
    digest = hashlib.sha256(data).hexdigest()
    await db.set(f"{key}:current", f"{version} {len(pieces)} {digest}".encode())
    m = _CURRENT_RE.fullmatch(old) if old is not None else None
    if m is not None and m.group(1).decode() != version:
        for i in range(int(m.group(2))):
            await db.delete(f"{key}:{m.group(1).decode()}:{i}")
    return version


async def fetch(db: CacheDB, key: str) -> bytes:
    """The text of the table under ``key`` (rule 2).

    Raises:
        PrefixFileError: no table there, or no whole version could be read in ``TRIES``.
        CacheError: the cacheDB failed.
    """
    found = "nothing"
    for _ in range(TRIES):
        current = await db.get(f"{key}:current")
        if current is None:
            raise PrefixFileError(where(key), 0, "current", "a table pushed there", "no key")
        m = _CURRENT_RE.fullmatch(current)
        if m is None or not 1 <= int(m.group(2)) <= MAX_CHUNKS:
            raise PrefixFileError(where(key), 0, "current", "VERSION CHUNKS SHA256",
                                  repr(current[:80]))  # fmt: skip
        version, count, digest = m.group(1).decode(), int(m.group(2)), m.group(3).decode()
        pieces = []
        for i in range(count):
            piece = await db.get(f"{key}:{version}:{i}")
            if piece is None:
                found = f"chunk {i} of version {version} missing"
                break
            pieces.append(piece)
        else:
            data = b"".join(pieces)
            if hashlib.sha256(data).hexdigest() == digest:
                return data
            found = f"version {version} with another digest"
    raise PrefixFileError(where(key), 0, "chunks", f"a whole version in {TRIES} tries", found)


async def load(db: CacheDB, key: str, name: str, groups: Collection[str],
               max_prefixes: int) -> PrefixTable:  # fmt: skip
    """The table ``name`` built from the key space under ``key``.

    Raises:
        PrefixFileError: as ``fetch``, or a bad line (named as ``cachedb:KEY:LINE``).
        CacheError: the cacheDB failed.
    """
    return parse(await fetch(db, key), where(key), name, groups, max_prefixes)
