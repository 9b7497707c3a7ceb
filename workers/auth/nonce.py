"""Nonces that expire and cannot be replayed, with no table of issued nonces.

Rules:
1. A nonce is ``base64url(issued_ms || salt || mac)``: the issue time in milliseconds (8
   bytes), 8 random bytes, and the first 16 bytes of HMAC-SHA256 under the configured secret
   over (issuer, realm, Call-ID, issued_ms, salt). Verifying it recomputes the MAC: nothing is
   stored per issued nonce, so a flood of challenges costs no memory.
2. The issuer is the worker that minted it (node name and worker id). Requests reach the
   worker that owns their Call-ID, and the Call-ID is signed, so every use of a nonce comes
   to the worker that issued it and that worker's ``NonceCounts`` sees them all. A nonce
   from another worker, node or call is not ours: the client gets a fresh challenge.
3. A nonce older than ``lifetime_s`` (or more than ``FUTURE_SLACK_MS`` ahead, a clock step)
   is stale: the client may retry with a fresh one without asking its user (``stale=true``).
4. ``NonceCounts`` remembers, per nonce used, the highest nonce-count (nc) accepted and a
   window of ``WINDOW`` below it, so each (nonce, nc) passes once: a replay is refused and
   requests overtaking each other on UDP still pass. It holds at most ``max_nonces``; the
   entry evicted first is the least recently first used, and ``floor_ms`` rises to the
   newest issue time evicted. A nonce issued at or before the floor that is not in the table
   is refused as stale: it may have been used already. The floor starts at the tracker's
   creation, so a restarted worker refuses the nonces of its previous run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from enum import Enum

#: bytes of the MAC kept: 128 bits are beyond guessing within a nonce's lifetime
MAC_BYTES = 16
SALT_BYTES = 8
#: a nonce is 43 base64url characters; anything longer is not one of ours
MAX_NONCE_CHARS = 64
#: a nonce issued this far in the future is stale, not forged: another process's clock
FUTURE_SLACK_MS = 2000
#: nonce-counts below the highest seen that may still arrive (reordered UDP, parallel
#: requests of one client sharing a nonce)
WINDOW = 64
#: nonce-counts are 8 hex digits
MAX_NC = 0xFFFFFFFF


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"  # ours, but expired or possibly used (rule 3, rule 4)
    FOREIGN = "foreign"  # not minted by this worker for this realm and call (rule 2)


class NonceMint:
    """Issues and checks nonces for one worker (rules 1-3)."""

    __slots__ = ("_issuer", "_lifetime_ms", "_secret")

    def __init__(self, secret: bytes, issuer: str, lifetime_s: float) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self._issuer = issuer.encode()
        self._lifetime_ms = int(lifetime_s * 1000)

    def issue(self, realm: str, call_id: str, now: float) -> str:
        """A fresh nonce for a challenge in ``realm`` answering the call ``call_id``."""
        head = int(now * 1000).to_bytes(8, "big") + os.urandom(SALT_BYTES)
        raw = head + self._mac(realm, call_id, head)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str, realm: str, call_id: str, now: float) -> tuple[NonceState, int]:
        """(state, issue time in ms) of a nonce a client sent back; the time is 0 unless
        the nonce is ours."""
        if len(nonce) > MAX_NONCE_CHARS:
            return NonceState.FOREIGN, 0
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return NonceState.FOREIGN, 0
        if len(raw) != 8 + SALT_BYTES + MAC_BYTES:
            return NonceState.FOREIGN, 0
        head, mac = raw[: 8 + SALT_BYTES], raw[8 + SALT_BYTES :]
        if not hmac.compare_digest(mac, self._mac(realm, call_id, head)):
            return NonceState.FOREIGN, 0
        issued_ms = int.from_bytes(head[:8], "big")
        now_ms = int(now * 1000)
        if now_ms - issued_ms > self._lifetime_ms or issued_ms - now_ms > FUTURE_SLACK_MS:
            return NonceState.STALE, issued_ms
        return NonceState.VALID, issued_ms

    def _mac(self, realm: str, call_id: str, head: bytes) -> bytes:
        # length-prefixed fields: ("ab", "c") and ("a", "bc") must not sign alike
        msg = b"".join(
            len(part).to_bytes(4, "big") + part
            for part in (self._issuer, realm.encode(), call_id.encode("utf-8", "surrogateescape"))
        )
        return hmac.new(self._secret, msg + head, hashlib.sha256).digest()[:MAC_BYTES]


class NonceCounts:
    """Which (nonce, nc) pairs were accepted, in bounded memory (rule 4)."""

    __slots__ = ("_max", "_seen", "floor_ms")

    def __init__(self, max_nonces: int, now: float) -> None:
        self._max = max_nonces
        #: nonce -> [issued_ms, highest nc, bit i set: nc (highest - i) seen]
        self._seen: dict[str, list[int]] = {}
        self.floor_ms = int(now * 1000)

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, nonce: str, issued_ms: int, nc: int) -> bool:
        """Record ``nc`` as used with ``nonce``; False when it was used already or may have
        been (a replay, or a nonce evicted or from before the floor)."""
        if not 0 < nc <= MAX_NC:
            return False
        entry = self._seen.get(nonce)
        if entry is None:
            if issued_ms <= self.floor_ms:
                return False
            self._make_room()
            self._seen[nonce] = [issued_ms, nc, 1]
            return True
        _, top, mask = entry
        if nc > top:
            shift = nc - top
            entry[1] = nc
            entry[2] = ((mask << shift) | 1) & ((1 << WINDOW) - 1) if shift < WINDOW else 1
            return True
        back = top - nc
        if back >= WINDOW or mask >> back & 1:
            return False
        entry[2] = mask | 1 << back
        return True

    def _make_room(self) -> None:
        while len(self._seen) >= self._max:
            oldest = next(iter(self._seen))
            issued_ms = self._seen.pop(oldest)[0]
            self.floor_ms = max(self.floor_ms, issued_ms)
