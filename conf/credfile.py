"""Credentials files and the nonce secret of ``[auth]`` (``docs/auth.md``), read by
``conf.load`` to validate them and by the workers to use them.

Rules:
1. A credentials file holds one user per line: ``username algorithm ha1``, separated by
   spaces or tabs (``alice SHA-256 5f2c...``); ``#`` starts a comment line. Each user may have
   one line per algorithm: a client that answers with an algorithm the user has no line for
   fails like a wrong password. A malformed line makes the whole file unusable (the error
   names the line), so a typo never silently locks out or lets in anyone.
2. A file holds at most ``MAX_USERS`` lines.
3. The nonce secret file holds at least ``MIN_SECRET_BYTES`` bytes (surrounding whitespace
   is not part of it).
"""

from __future__ import annotations

import re
from pathlib import Path

#: algorithm name as RFC 7616 §6.1 registers it -> hex digits of its digest
HEX_LEN = {"SHA-256": 64, "MD5": 32}
MIN_SECRET_BYTES = 16

#: a credentials file larger than this is a mistake (a log file given by accident)
MAX_USERS = 1_000_000
_HEX = re.compile(r"[0-9a-fA-F]+")

#: (username, algorithm) -> HA1 in lower-case hex
Table = dict[tuple[str, str], str]


class CredentialsFileError(ValueError):
    """A credentials file that cannot be used; ``str()`` names the line and the fault."""


def parse_file(text: str, name: str = "<credentials>") -> Table:
    """The table of a credentials file's text (rule 1).

    Raises:
        CredentialsFileError: a line breaks rule 1, or there are too many.
    """
    table: Table = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{name}:{number}"
        if len(fields) != 3:
            raise CredentialsFileError(f"{where}: expected 'username algorithm ha1'")
        user, algorithm, ha1 = fields
        if algorithm not in HEX_LEN:
            known = ", ".join(HEX_LEN)
            raise CredentialsFileError(f"{where}: algorithm {algorithm!r} is not one of {known}")
        if len(ha1) != HEX_LEN[algorithm] or not _HEX.fullmatch(ha1):
            raise CredentialsFileError(f"{where}: ha1 is not {HEX_LEN[algorithm]} hex digits")
        if (user, algorithm) in table:
            raise CredentialsFileError(f"{where}: {user} {algorithm} is listed twice")
        if len(table) >= MAX_USERS:
            raise CredentialsFileError(f"{where}: more than {MAX_USERS} lines")
        table[(user, algorithm)] = ha1.lower()
    return table


def load_file(path: str) -> Table:
    """Raises:
    CredentialsFileError: the file cannot be read or breaks rule 1.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsFileError(f"{path}: {exc}") from None
    return parse_file(text, path)


def load_secret(path: str) -> bytes:
    """The nonce secret in ``path`` (rule 3).

    Raises:
        ValueError: unreadable, or shorter than ``MIN_SECRET_BYTES``.
    """
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{len(secret)} bytes, at least {MIN_SECRET_BYTES} needed")
    return secret
