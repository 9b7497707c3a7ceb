"""What the stateless proxy refuses: the drops it counts and the SIP errors it answers with.

``Drop`` (and ``Malformed``) end a message with no forward; the ``SipError`` subclasses here
are answered statelessly with their status (rules 6, 7, 9 and 10 of ``workers/proxy.py``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from ingress.sip.errors import SipError

if TYPE_CHECKING:
    from workers.proxy import Out


class Drop(Exception):
    """A message that is neither forwarded nor answered; ``reason`` is the counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Malformed(Drop):
    """A message the full parse refused; ``reply`` answers it where an answer is allowed
    (a request with its transaction headers, never an ACK), sent back where it came from."""

    def __init__(self, error: SipError, reply: Out | None) -> None:
        super().__init__("malformed")
        self.error = error
        self.reply = reply


class RateLimited(SipError):
    """An initial request over a ``[[ratelimit]]`` pipe's rate (rule 9)."""

    status = 503
    reason = "Service Unavailable"


class NotFound(SipError):
    status = 404
    reason = "Not Found"


class RelayRefused(SipError):
    """An in-dialog request that would go where it says, from a source not trusted to say
    so and not through our Record-Route (rule 10; Kamailio's default answers the same)."""

    status = 404
    reason = "Not Here"


class PreloadedRoute(RelayRefused):
    """An initial request with a Route that is not ours, from a source not trusted (rule 10)."""

    status = 403
    reason = "Not Relaying"


@functools.lru_cache(maxsize=256)  # one class per (status, reason) of the configured routes
@functools.cache  # one class per configured (status, reason), not one per request
def rejection(status: int, reason: str) -> type[SipError]:
    """The error a ``reject`` route (or a prefix table without a match) raises: its status
    and reason, answered statelessly."""
    return type(f"Rejected{status}", (SipError,), {"status": status, "reason": reason})


class Unreachable(SipError):
    """The next hop cannot be reached from here: it needs DNS (not resolved yet), or a
    transport or address family we do not listen on."""

    status = 503
    reason = "Service Unavailable"

