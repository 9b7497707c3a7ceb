"""What both ends of the timer protocol agree on: limits, op names, header checks.

The envelope kinds are in ``conf/envelope.py`` (``TOPS`` worker -> timers, ``TIMER`` timers ->
worker); this module says what their entries hold, so the service and ``TimerClient`` cannot
drift apart. docs/timers.md tells the protocol as a whole.
"""

from __future__ import annotations

import math
from typing import Any

#: a timer is small: it names a dialog, an AOR or an address, not a blob
MAX_KEY_CHARS = 512
MAX_KIND_CHARS = 32
MAX_PAYLOAD_BYTES = 1024
#: arms and cancels in one TOPS message at most (~4096 x 60 B: a few hundred KB)
MAX_OPS_PER_MSG = 4096

#: TIMER meta ops: the timer fired (its payload is the frame), or it was fired elsewhere,
#: cancelled by another worker or superseded, so the armer forgets it
OP_FIRE = "f"
OP_DONE = "d"


def owner_key(key: str) -> bytes:
    """What a key's owner is hashed on: its text up to the first NUL, the whole key when it has
    none. A dialog's key is ``Call-ID NUL From-tag`` (the dialog table's own key), and its
    lifetime fires to the worker that owns the Call-ID, as the ingresses hash it."""
    return key.partition("\0")[0].encode("utf-8", "surrogateescape")


def check_timer(key: str, kind: str, payload: bytes) -> None:
    """Raises ValueError for a timer the service would refuse."""
    if len(key) > MAX_KEY_CHARS or not key:
        raise ValueError(f"timer key must have 1..{MAX_KEY_CHARS} characters")
    if len(kind) > MAX_KIND_CHARS:
        raise ValueError(f"timer kind must have at most {MAX_KIND_CHARS} characters")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"timer payload must have at most {MAX_PAYLOAD_BYTES} bytes")


def valid_arm(a: Any) -> bool:
    """``[key, deadline, kind, payload, gen]`` with sane types and sizes."""
    return (
        type(a) is list
        and len(a) == 5
        and type(a[0]) is str
        and 0 < len(a[0]) <= MAX_KEY_CHARS
        and type(a[1]) in (float, int)
        and math.isfinite(a[1])
        and type(a[2]) is str
        and len(a[2]) <= MAX_KIND_CHARS
        and type(a[3]) is bytes
        and len(a[3]) <= MAX_PAYLOAD_BYTES
        and type(a[4]) is int
    )


def valid_cancel(c: Any) -> bool:
    """``[key, gen]``."""
    return type(c) is list and len(c) == 2 and type(c[0]) is str and type(c[1]) is int
