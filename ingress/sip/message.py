"""SIP messages as the parser builds them (RFC 3261 §7).

A message keeps the bytes it came in (``raw``) and, for every header, its canonical name, its
value and where its line sits in ``raw``. A proxy forwards what it does not touch byte for byte,
so edits are splices at those offsets (see ``serialize.splice``), never a re-serialisation.

Rules:
1. Views that routing needs on every message (Vias, From/To, Call-ID, CSeq, Max-Forwards, the
   Request-URI) are validated by the parser; the rest is parsed on demand from ``headers``.
2. Inside a view, what is rarely read (parameter dicts, the URI of a From/To) is built on
   first access from text the grammar already validated, so reading it never raises.
3. Views are read-only and may be shared between messages (``grammar`` caches them by their
   text): never assign to one, nor mutate its ``params`` dict; copy it first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ingress.sip.headers import MULTI_VALUE, split_commas

#: one header: (canonical lower-case name, value with folding collapsed, line start, line end).
#: ``raw[start:end]`` is the whole line including its CRLF and any continuation lines.
#: Plain tuples: a message has ~10 of them and a dataclass each would cost more than the parse.
Header = tuple[str, bytes, int, int]

Params = dict[str, str | None]


def parse_params(text: str) -> Params:
    """``;name[=value]`` pairs of text the grammar already validated; never raises.

    Names are lower-cased (they are case-insensitive, §7.3.1); values keep their case and
    quotes. LWS around ``;`` and ``=`` is dropped. A repeated name keeps its last value.
    """
    params: Params = {}
    pieces = _split_quoted(text) if '"' in text else text.split(";")
    for piece in pieces[1:]:  # pieces[0] is the (empty) text before the first ";"
        name, eq, value = piece.partition("=")
        name = name.strip(" \t").lower()
        if name:
            params[name] = value.strip(" \t") if eq else None
    return params


def _split_quoted(text: str) -> list[str]:
    """Split on ";" outside quoted strings (a quoted gen-value may hold ";", §25.1)."""
    out: list[str] = []
    start = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == ";":
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


_UNSET: object = object()


class Uri:
    """A URI; for ``sip``/``sips`` split into parts (RFC 3261 §19.1.1), else opaque.

    ``params`` is None when the URI has none; it is split into a dict on first use.
    Treat a Uri as immutable: views may be shared.
    """

    __slots__ = ("_params", "headers", "host", "password", "port", "raw", "scheme", "user")

    def __init__(
        self,
        raw: str,
        scheme: str,
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: Params | None = None,
        headers: str | None = None,
        *,
        _ptext: str | None = None,
    ) -> None:
        self.raw = raw
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.headers = headers
        # a str is the validated ";a=b;c" text, split on first use
        self._params: Params | str | None = _ptext or None if params is None else params

    @property
    def params(self) -> Params | None:
        p = self._params
        if isinstance(p, str):
            p = self._params = parse_params(p)
        return p

    @property
    def is_sip(self) -> bool:
        return self.scheme == "sip" or self.scheme == "sips"

    def param(self, name: str) -> str | None:
        p = self._params
        if p is None:
            return None
        if isinstance(p, str) and ";" + name not in p.lower():
            return None  # cheap miss, the common case for "lr" / "transport" lookups
        return self.params.get(name)  # type: ignore[union-attr]

    def has_param(self, name: str) -> bool:
        p = self.params
        return p is not None and name in p

    @property
    def host_plain(self) -> str:
        """Host without the brackets of an IPv6 reference."""
        h = self.host
        return h[1:-1] if h[:1] == "[" else h

    def __repr__(self) -> str:
        return f"Uri({self.raw!r})"


class Via:
    """One via-parm (RFC 3261 §20.42). ``params`` is split into a dict on first use."""

    __slots__ = ("_branch", "_params", "host", "port", "raw", "transport")

    def __init__(
        self, raw: bytes, transport: str, host: str, port: int | None, params: Params | str
    ) -> None:
        self.raw = raw
        self.transport = transport  # upper case: UDP, TCP, TLS, SCTP, ...
        self.host = host
        self.port = port
        self._params = params
        self._branch: str | None | object = _UNSET

    @property
    def params(self) -> Params:
        p = self._params
        if isinstance(p, str):
            p = self._params = parse_params(p)
        return p

    @property
    def branch(self) -> str | None:
        # read several times per message (proxy, transaction keys, dialogs): kept once found,
        # which rule 3 allows as it is derived from the view's own text
        b = self._branch
        if b is _UNSET:
            b = self._branch = self.params.get("branch")
        return b  # type: ignore[return-value]

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def host_plain(self) -> str:
        h = self.host
        return h[1:-1] if h[:1] == "[" else h

    def __repr__(self) -> str:
        return f"Via({self.raw!r})"


class NameAddr:
    """From, To, Contact, Route and Record-Route values (RFC 3261 §20.10).

    ``uri`` and ``params`` are built on first use from text the grammar already validated.
    """

    __slots__ = ("_params", "_tag", "_uri", "display", "raw")

    def __init__(
        self, raw: bytes, display: str | None, uri: Uri | str, params: Params | str
    ) -> None:
        self.raw = raw
        self.display = display
        self._uri = uri
        self._params = params
        self._tag: str | None | object = _UNSET

    @property
    def uri(self) -> Uri:
        u = self._uri
        if isinstance(u, str):
            u = self._uri = _parse_uri()(u)
        return u

    @property
    def params(self) -> Params:
        p = self._params
        if isinstance(p, str):
            p = self._params = parse_params(p)
        return p

    @property
    def tag(self) -> str | None:
        # read ~5 times per message in the stateful core: kept once found (as Via.branch)
        t = self._tag
        if t is _UNSET:
            p = self._params
            if isinstance(p, str) and "tag" not in p.lower():
                t = None  # no parameter could be a tag: skip the split
            else:
                t = self.params.get("tag")
            self._tag = t
        return t  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"NameAddr({self.raw!r})"


def _parse_uri() -> Callable[[str], Uri]:
    # grammar imports this module; bind its parse_uri on first use instead of at import
    global _parse_uri_fn
    if _parse_uri_fn is None:
        from ingress.sip.grammar import parse_uri

        _parse_uri_fn = parse_uri
    return _parse_uri_fn


_parse_uri_fn: Callable[[str], Uri] | None = None


# Not kw_only: the parser builds every message positionally, which costs half as much as
# keywords (~0.5 µs a message on the 2-core box). Field order is therefore part of the contract
# with parser.py; other code should use keywords.
@dataclass(slots=True, eq=False)
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


@dataclass(slots=True, eq=False)
class Request(Message):
    method: str
    uri: Uri
    max_forwards: int | None

    # written out (the dataclass keeps it): compiled it is native code, where the one
    # ``dataclasses`` generates is interpreted, ~0.5 µs a message (#16); the order is Message's
    # fields, then these
    def __init__(self, raw: bytes, headers: list[Header], line_end: int, body_start: int,
                 body_end: int, call_id: str, cseq: int, cseq_method: str, vias: list[Via],
                 from_: NameAddr, to: NameAddr, method: str, uri: Uri,
                 max_forwards: int | None) -> None:  # fmt: skip
        self.raw, self.headers, self.line_end = raw, headers, line_end
        self.body_start, self.body_end, self.call_id = body_start, body_end, call_id
        self.cseq, self.cseq_method, self.vias = cseq, cseq_method, vias
        self.from_, self.to = from_, to
        self.method, self.uri, self.max_forwards = method, uri, max_forwards

    @property
    def is_request(self) -> bool:
        return True


@dataclass(slots=True, eq=False)
class Response(Message):
    status: int
    reason: str

    # written out, as Request's
    def __init__(self, raw: bytes, headers: list[Header], line_end: int, body_start: int,
                 body_end: int, call_id: str, cseq: int, cseq_method: str, vias: list[Via],
                 from_: NameAddr, to: NameAddr, status: int, reason: str) -> None:  # fmt: skip
        self.raw, self.headers, self.line_end = raw, headers, line_end
        self.body_start, self.body_end, self.call_id = body_start, body_end, call_id
        self.cseq, self.cseq_method, self.vias = cseq, cseq_method, vias
        self.from_, self.to = from_, to
        self.status, self.reason = status, reason

    @property
    def is_request(self) -> bool:
        return False
