"""SIP messages as the parser builds them (RFC 3261 §7).

A message keeps the bytes it came in (``raw``) and, for every header, its canonical name, its
value and where its line sits in ``raw``. A proxy forwards what it does not touch byte for byte,
so edits are splices at those offsets (see ``serialize.splice``), never a re-serialisation.

Views that routing needs on every message (top Via, tags, Call-ID, CSeq, Max-Forwards, the
Request-URI) are parsed once by the parser; the rest is parsed on demand from ``headers``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingress.sip.headers import MULTI_VALUE, split_commas

#: one header: (canonical lower-case name, value with folding collapsed, line start, line end).
#: ``raw[start:end]`` is the whole line including its CRLF and any continuation lines.
#: Plain tuples: a message has ~10 of them and a dataclass each would cost more than the parse.
Header = tuple[str, bytes, int, int]

Params = dict[str, str | None]


@dataclass(slots=True, eq=False, kw_only=True)
class Uri:
    """A URI; for ``sip``/``sips`` split into parts (RFC 3261 §19.1.1), else opaque."""

    raw: str
    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params | None = None
    headers: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        return self.params.get(name) if self.params else None

    def has_param(self, name: str) -> bool:
        return bool(self.params) and name in self.params  # type: ignore[operator]

    @property
    def host_plain(self) -> str:
        """Host without the brackets of an IPv6 reference."""
        h = self.host
        return h[1:-1] if h.startswith("[") else h


@dataclass(slots=True, eq=False, kw_only=True)
class Via:
    """One via-parm (RFC 3261 §20.42)."""

    raw: bytes
    transport: str  # upper case: UDP, TCP, TLS, SCTP, ...
    host: str
    port: int | None
    params: Params

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def host_plain(self) -> str:
        h = self.host
        return h[1:-1] if h.startswith("[") else h


@dataclass(slots=True, eq=False, kw_only=True)
class NameAddr:
    """From, To, Contact, Route and Record-Route values (RFC 3261 §20.10)."""

    raw: bytes
    display: str | None
    uri: Uri
    params: Params

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(slots=True, eq=False, kw_only=True)
class Message:
    raw: bytes
    headers: list[Header]
    #: offset past the start line's CRLF, where the first header begins
    line_end: int
    #: the body is ``raw[body_start:body_end]``; bytes after ``body_end`` are not part of it
    body_start: int
    body_end: int
    call_id: str
    cseq: int
    cseq_method: str
    vias: list[Via]
    from_: NameAddr
    to: NameAddr

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.body_end]

    def header(self, name: str) -> bytes | None:
        """Value of the first header called ``name`` (canonical lower-case), or None."""
        for h in self.headers:
            if h[0] == name:
                return h[1]
        return None

    def header_values(self, name: str) -> list[bytes]:
        """Every value of ``name``, comma-split for multi-value headers (RFC 3261 §7.3.1)."""
        out: list[bytes] = []
        split = name in MULTI_VALUE
        for h in self.headers:
            if h[0] == name:
                if split:
                    out.extend(split_commas(h[1]))
                else:
                    out.append(h[1])
        return out

    def has_header(self, name: str) -> bool:
        return any(h[0] == name for h in self.headers)


@dataclass(slots=True, eq=False, kw_only=True)
class Request(Message):
    method: str
    uri: Uri
    max_forwards: int | None

    @property
    def is_request(self) -> bool:
        return True


@dataclass(slots=True, eq=False, kw_only=True)
class Response(Message):
    status: int
    reason: str

    @property
    def is_request(self) -> bool:
        return False
