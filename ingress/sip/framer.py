"""Frame SIP messages out of a byte stream (RFC 3261 §18.3, RFC 5626 §3.5.1).

Like h11's ReceiveBuffer: ``receive_data(bytes)`` then ``next_message()`` until it returns
``NEED_DATA``. The buffer holds only bytes actually received, and the search for the end of the
header section resumes where it stopped, so a message trickled in one byte at a time is never
rescanned. Errors are unrecoverable on a stream: the caller answers (when it can) and closes.
"""

from __future__ import annotations

import re
from enum import Enum

from ingress.sip.errors import BadRequest, MessageTooLarge, RequestTooLarge
from ingress.sip.parser import salvage

# "Content-Length" or compact "l", HCOLON, and the value with any folded continuation (§7.3.1)
CONTENT_LENGTH_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)")

#: Kamailio and OpenSIPS cap a SIP message at 64 KiB (BUF_SIZE); a header section beyond
#: 16 KiB is far past anything real (RFC 4475's longest request is 3.5 KB) and is an attack.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BODY_BYTES = 48 * 1024


class Signal(Enum):
    NEED_DATA = "need_data"
    #: a CRLFCRLF ping; answer with a CRLF pong (RFC 5626 §3.5.1)
    KEEPALIVE = "keepalive"


NEED_DATA = Signal.NEED_DATA
KEEPALIVE = Signal.KEEPALIVE


class StreamFramer:
    """Split a SIP byte stream into messages framed by Content-Length."""

    __slots__ = ("_body_end", "_buf", "_scanned", "max_body_bytes", "max_header_bytes", "reads")

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._buf = bytearray()
        self._scanned = 0  # offset up to which no header terminator exists
        self._body_end = -1  # end of the current message once its header section is known
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        #: reads since the current message started; the adapter caps it (slow-sender defence)
        self.reads = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def in_message(self) -> bool:
        """True while part of a message has arrived but not all of it."""
        return bool(self._buf)

    def receive_data(self, data: bytes) -> None:
        self._buf += data
        self.reads += 1

    def next_message(self) -> bytes | Signal:
        """The next complete message, ``KEEPALIVE``, or ``NEED_DATA``.

        Raises:
            BadRequest: no usable Content-Length (it is mandatory on streams).
            MessageTooLarge: the header section passed ``max_header_bytes``.
            RequestTooLarge: the Content-Length passed ``max_body_bytes``.
        """
        buf = self._buf
        if self._body_end < 0:
            signal = self._skip_crlf()
            if signal is not None:
                return signal
            end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
            if end < 0:
                self._scanned = len(buf)
                if len(buf) > self.max_header_bytes:
                    raise MessageTooLarge("header section too large", salvage(bytes(buf)))
                return NEED_DATA
            if end > self.max_header_bytes:
                raise MessageTooLarge("header section too large", salvage(bytes(buf[: end + 4])))
            self._body_end = end + 4 + self._content_length(bytes(buf[: end + 4]))
        if len(buf) < self._body_end:
            return NEED_DATA
        message = bytes(buf[: self._body_end])
        del buf[: self._body_end]
        if not buf:
            self._buf = bytearray()  # give back the capacity a large message left behind
        self._scanned = 0
        self._body_end = -1
        self.reads = 0
        return message

    def _skip_crlf(self) -> Signal | None:
        buf = self._buf
        while buf.startswith(b"\r\n"):
            if buf.startswith(b"\r\n\r\n"):
                del buf[:4]
                self.reads = 0
                return KEEPALIVE
            if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                return NEED_DATA  # maybe the start of a ping
            del buf[:2]
        if not buf:
            self.reads = 0
            return NEED_DATA
        return None

    def _content_length(self, head: bytes) -> int:
        values = CONTENT_LENGTH_RE.findall(head)
        if not values:  # §18.3; RFC 4475 3.4.1 (inv2543) is an error on a stream
            raise BadRequest("Content-Length is mandatory on a stream", salvage(head))
        # two values (RFC 4475 3.3.9) or a negative one (3.1.2.3): the framing is lost
        value = values[0].strip()
        if len(values) != 1 or not value.isdigit() or len(value.lstrip(b"0")) > 10:
            raise BadRequest("malformed Content-Length", salvage(head))
        length = int(value)
        if length > self.max_body_bytes:
            raise RequestTooLarge("body too large", salvage(head))
        return length
