"""Errors of the SIP codec and of request validation.

Every error a peer can provoke is a :class:`SipError`. It carries the status to answer with and
whatever header lines were salvaged to build that answer (a reply copies Via, From, To, Call-ID
and CSeq, RFC 3261 §8.2.6.2), because a message that failed to parse cannot be asked again.
Anything else raised while handling peer input is a bug.

    SipError
    ├── BadRequest               400  malformed syntax, missing mandatory header
    ├── TooManyHeaders           400  over the parser's header line, field or list value caps
    ├── RequestTooLarge          413  header section or body over the configured cap
    ├── UnsupportedUriScheme     416  Request-URI scheme we cannot route (RFC 3261 §16.3)
    ├── BadExtension             420  Proxy-Require names an option we lack (§16.3)
    ├── LoopDetected             482  our own Via with the same branch (§16.3)
    ├── TooManyHops              483  Max-Forwards reached zero (§16.3)
    ├── NotImplemented           501  method not understood and not proxyable
    ├── VersionNotSupported      505  SIP version other than 2.0
    └── MessageTooLarge          513  a stream message over the framing cap (§18.1.1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ingress.sip.headers import canonical_name


@dataclass(slots=True)
class Salvage:
    """What could be read of a message that failed, enough to answer it.

    ``lines`` are the raw header lines (name and value, no final CRLF; a folded line keeps its
    continuation) of every Via and the first From, To, Call-ID and CSeq, in their original
    order.
    """

    is_request: bool
    method: str | None = None
    lines: list[bytes] = field(default_factory=list)


class SipError(Exception):
    """A message or request that must be refused with :attr:`status`."""

    status: ClassVar[int] = 400
    reason: ClassVar[str] = "Bad Request"

    def __init__(self, detail: str, salvage: Salvage | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.salvage = salvage
        #: extra header lines to put in the answer (e.g. ``Unsupported`` for 420)
        self.extra_headers: tuple[bytes, ...] = ()

    @property
    def key(self) -> str:
        """The reason as a counter name (``bad_request``, ``too_many_headers``): one of a fixed
        few, unlike ``detail``, which may quote what the peer sent."""
        return self.reason.lower().replace(" ", "_")

    @property
    def answerable(self) -> bool:
        """True when a reply can be built: a request whose Via and CSeq were salvaged.

        RFC 3261 §17.2.1: no response is ever sent for an ACK, and responses are never answered.
        The client matches a response to its transaction by the top Via branch and the CSeq
        method (§17.1.3), so those two are enough to answer (RFC 4475 3.3.1, ``insuf``: "a
        400 can only echo Via and CSeq"); From, To and Call-ID are copied when present.
        """
        s = self.salvage
        if s is None or not s.is_request or s.method == "ACK":
            return False
        names = {canonical_name(line.partition(b":")[0].strip()) for line in s.lines}
        return _ANSWER_NEEDS <= names


_ANSWER_NEEDS = frozenset({"via", "cseq"})


class BadRequest(SipError):
    status = 400
    reason = "Bad Request"


class TooManyHeaders(SipError):
    """More header fields, or more values in the list headers, than the parser takes.

    400 and not 513: 513 says the message is too long (§21.5.14), and this one may be short;
    a reason phrase naming the fault is what a sender's log can act on (§21: the phrase is
    free text, the class is what a UAC acts on, and 400 means "do not retry as is").
    """

    status = 400
    reason = "Too Many Headers"


class RequestTooLarge(SipError):
    status = 413
    reason = "Request Entity Too Large"


class UnsupportedUriScheme(SipError):
    status = 416
    reason = "Unsupported URI Scheme"


class BadExtension(SipError):
    status = 420
    reason = "Bad Extension"


class LoopDetected(SipError):
    status = 482
    reason = "Loop Detected"


class TooManyHops(SipError):
    status = 483
    reason = "Too Many Hops"


class NotImplemented_(SipError):
    status = 501
    reason = "Not Implemented"


class VersionNotSupported(SipError):
    status = 505
    reason = "Version Not Supported"


class MessageTooLarge(SipError):
    status = 513
    reason = "Message Too Large"
