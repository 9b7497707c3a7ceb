"""The conditions and actions of ``[[route]]`` rules beyond method, URI and source, compiled
once from the settings into plain slotted objects (``docs/routing.md``); sans-IO.

Rules:
1. Compiling happens at start; a message costs attribute reads, a regex match per header
   condition and, for a rule that edits, one string join per edit: no closure or object is
   built per message but the edits themselves.
2. Header conditions see the headers as received; conditions on the Request-URI user see it
   as earlier ``continue_routing`` rules rewrote it (OpenSIPS ``$rU`` after ``strip``).
3. Header edits of every rule that matched are folded in order into one set of edits of the
   received bytes: lines of a removed (or set) header are cut out, new lines go at the end of
   the header section. The body and the headers the proxy owns (``conf.checks.route_rules.OWNED``) are
   never touched, so Content-Length stays true.
4. Nothing from the message reaches a header line unchecked: templates were checked at load
   (``conf/checks/route_rules.py``) and a field taken from the request is dropped from the line if it
   holds CR, LF or NUL (the grammar should have refused it already; a second fence is cheap).
"""

from __future__ import annotations

import re

from conf.checks.route_rules import USER_RE, parse_template
from conf.settings import HeaderEdit as HeaderEditConfig
from conf.settings import HeaderMatch as HeaderMatchConfig
from conf.settings import Route as RouteConfig
from ingress.sip.headers import canonical_name
from ingress.sip.message import Request
from ingress.sip.serialize import Edit

CRLF = b"\r\n"
SET, APPEND, REMOVE = 0, 1, 2
_ACTIONS = {"set": SET, "append": APPEND, "remove": REMOVE}
_UNSAFE = re.compile(rb"[\r\n\x00]")

# template field numbers (``Template.parts``): the order of ``_field``'s branches
FROM_USER, FROM_HOST, TO_USER, TO_HOST, RURI_USER, RURI_HOST, SOURCE_IP = range(7)
_FIELD_IDS = {"from_user": FROM_USER, "from_host": FROM_HOST, "to_user": TO_USER,
              "to_host": TO_HOST, "ruri_user": RURI_USER, "ruri_host": RURI_HOST,
              "source_ip": SOURCE_IP}  # fmt: skip


class HeaderTest:
    """``[[route.header]]``: a header present (matching ``regex``) or absent."""

    __slots__ = ("name", "present", "regex")

    def __init__(self, cfg: HeaderMatchConfig) -> None:
        self.name = canonical_name(cfg.name.encode())
        self.regex = re.compile(cfg.regex.encode()) if cfg.regex else None
        self.present = cfg.present

    def holds(self, req: Request) -> bool:
        name, regex = self.name, self.regex
        for h in req.headers:
            if h[0] == name and (regex is None or regex.fullmatch(h[1]) is not None):
                return self.present
        return not self.present


class UserRewrite:
    """strip, then prefix, then one regex substitution of the Request-URI user."""

    __slots__ = ("prefix", "regex", "replace", "strip")

    def __init__(self, cfg: RouteConfig) -> None:
        self.strip = cfg.strip_user
        self.prefix = cfg.prefix_user
        self.regex = re.compile(cfg.user_regex) if cfg.user_regex else None
        self.replace = cfg.user_replace

    def apply(self, user: str) -> str:
        """The user rewritten; a result that is not a URI user (a group cut inside an
        escape, say) keeps the user as it was."""
        new = self.prefix + user[self.strip :]
        if self.regex is not None:
            new = self.regex.sub(self.replace, new, count=1)
            if USER_RE.fullmatch(new) is None:
                return user
        return new


class Template:
    """A header value with ``{field}`` substitutions, split at load into literals and fields."""

    __slots__ = ("literal", "parts")

    def __init__(self, text: str) -> None:
        parts = parse_template(text)
        self.parts = tuple((lit.encode(), _FIELD_IDS[f] if f else -1) for lit, f in parts)
        #: the whole value when it names no field (the common case: nothing to build)
        plain = all(f < 0 for _, f in self.parts)
        self.literal = b"".join(lit for lit, _ in self.parts) if plain else None

    def render(self, req: Request, user: str | None, src_ip: str) -> bytes:
        if self.literal is not None:
            return self.literal
        out: list[bytes] = []
        for lit, f in self.parts:
            out.append(lit)
            if f >= 0:
                value = _field(f, req, user, src_ip).encode("utf-8", "surrogateescape")
                if _UNSAFE.search(value) is None:  # rule 4
                    out.append(value)
        return b"".join(out)


def _field(f: int, req: Request, user: str | None, src_ip: str) -> str:
    if f == FROM_USER:
        return req.from_.uri.user or ""
    if f == FROM_HOST:
        return req.from_.uri.host
    if f == TO_USER:
        return req.to.uri.user or ""
    if f == TO_HOST:
        return req.to.uri.host
    if f == RURI_USER:
        return user or ""
    if f == RURI_HOST:
        return req.uri.host
    return src_ip


class HeaderEdit:
    """``[[route.header_edit]]``: set, append or remove one header."""

    __slots__ = ("action", "line", "name", "value")

    def __init__(self, cfg: HeaderEditConfig) -> None:
        self.action = _ACTIONS[cfg.action]
        self.name = canonical_name(cfg.name.encode())
        self.line = cfg.name.encode() + b": "  # the name as the operator wrote it
        self.value = Template(cfg.value)


def header_edits(req: Request, edits: tuple[HeaderEdit, ...], user: str | None,
                 src_ip: str) -> list[Edit]:  # fmt: skip
    """``edits`` in order as splices of ``req.raw`` (rule 3)."""
    removed: set[str] = set()
    added: list[tuple[str, bytes]] = []
    for e in edits:
        if e.action != APPEND:
            removed.add(e.name)
            added = [a for a in added if a[0] != e.name]
        if e.action != REMOVE:
            added.append((e.name, e.line + e.value.render(req, user, src_ip) + CRLF))
    out: list[Edit] = []
    if removed:
        out.extend((start, end, b"") for name, _, start, end in req.headers if name in removed)
    if added:
        at = req.headers[-1][3]
        out.append((at, at, b"".join(line for _, line in added)))
    return out


def with_user(uri_raw: str, scheme: str, old: str | None, new: str) -> str:
    """The text of a SIP URI ``uri_raw`` whose user ``old`` becomes ``new`` ("" drops it,
    with the ``@``). The user follows ``scheme:`` (RFC 3261 §19.1.1)."""
    head = len(scheme) + 1
    if old is None:
        return uri_raw if not new else f"{uri_raw[:head]}{new}@{uri_raw[head:]}"
    rest = uri_raw[head + len(old) :]
    if not new:
        if rest.startswith(":"):  # a password: keep "user" empty rather than drop it
            return uri_raw
        return uri_raw[:head] + rest[1:]  # rest starts with "@"
    return uri_raw[:head] + new + rest
