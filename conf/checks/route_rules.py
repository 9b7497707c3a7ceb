"""What a ``[[route]]`` may say beyond where it sends: conditions on headers, the listener and
the transport, rewrites of the Request-URI user, header edits and failure routing
(``docs/routing.md``). Checked here once at load; ``workers/routing/rules.py`` compiles them.

Rules:
1. Everything a rule writes into a message is checked at load: a header name is a token the
   proxy does not own (``OWNED``), a value has no control character (so no CRLF can split a
   header: RFC 3261 §7.3), a user prefix or replacement holds only user characters (§25.1),
   and a template names only the fields in ``FIELDS``.
2. The fields a template takes from the request come out of URIs and the source address,
   which the parser's grammar already confined to characters without CR, LF or NUL.
3. Failure routing needs transactions (something must see the final response): on a
   stateless rule it is refused, with the reason, rather than ignored.
"""

from __future__ import annotations

import re
import string

from conf.checks.common import TOKEN_RE, _codes
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Route, Settings

#: headers the proxy reads or writes itself (transactions, dialogs, routing, framing): an
#: edit of one would break the proxy's own state or the message's length
OWNED = frozenset({"via", "v", "route", "record-route", "max-forwards", "from", "f", "to", "t",
                   "call-id", "i", "cseq", "contact", "m", "content-length", "l",
                   "content-type", "c", "content-encoding", "e"})  # fmt: skip

#: what a header template may name: the request's, as the forwarded copy has it
FIELDS = frozenset({"from_user", "from_host", "to_user", "to_host", "ruri_user", "ruri_host",
                    "source_ip"})  # fmt: skip

#: RFC 3261 §25.1 user = 1*( unreserved / escaped / user-unreserved ), plus "#" as the
#: parser (``ingress/sip/grammar.py``) accepts it
USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/#]*")
#: a group reference in a replacement (``re.sub`` template syntax)
GROUP_REF_RE = re.compile(r"\\(?:([0-9]{1,2})|g<([^>]*)>)")
#: printable text, tab and non-ASCII: no CR, LF, NUL or other control character
VALUE_RE = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def parse_template(text: str) -> list[tuple[str, str]]:
    """``text`` as (literal, field) pairs; field is "" after the last literal.

    Raises:
        ValueError: a brace that is neither ``{{``, ``}}`` nor a ``FIELDS`` name; a format
            spec or conversion. ``args[0]`` says which.
    """
    parts: list[tuple[str, str]] = []
    for literal, name, spec, conv in string.Formatter().parse(text):
        if name is not None and (name not in FIELDS or spec or conv):
            raise ValueError(f"{{{name}}}" if name else "an empty {}")
        parts.append((literal, name or ""))
    return parts


def user_replacement_error(pattern: re.Pattern[str], repl: str) -> str | None:
    """Why ``repl`` cannot replace ``pattern`` in a user, or None when it can (rule 1)."""
    for m in GROUP_REF_RE.finditer(repl):
        num, name = m.groups()
        if num is not None and int(num) > pattern.groups:
            return f"group {num} (the regex has {pattern.groups})"
        if name is not None and not (name.isdigit() and int(name) <= pattern.groups
                                     or name in pattern.groupindex):  # fmt: skip
            return f"group {name!r} (not in the regex)"
    if not USER_RE.fullmatch(GROUP_REF_RE.sub("", repl)):
        return "characters that may not stand in a URI user"
    return None


def check_route(f: str, key: str, r: Route, s: Settings) -> None:
    """The parts of ``r`` this module owns (rules 1 and 3).

    Raises:
        ConfigError: naming the file, the key, what was expected and what was found.
    """
    _check_conditions(f, key, r, s)
    _check_user_rewrite(f, key, r)
    for j, e in enumerate(r.header_edit):
        sub = f"{key}.header_edit[{j}]"
        _header_name(f, f"{sub}.name", e.name, edit=True)
        if e.action == "remove":
            if e.value:
                raise ConfigError(f, f"{sub}.value", 'nothing with action = "remove"', e.value)
            continue
        if not VALUE_RE.fullmatch(e.value) or e.value != e.value.strip(" \t"):
            expected = "a value without control characters or edge blanks"
            raise ConfigError(f, f"{sub}.value", expected, e.value)
        try:
            parse_template(e.value)
        except ValueError as exc:
            fields = ", ".join("{" + n + "}" for n in sorted(FIELDS))
            expected = f"a value whose braces name one of {fields} (or are doubled)"
            raise ConfigError(f, f"{sub}.value", expected, Said(f"{show(e.value)} ({exc})")) from None
    _check_failure(f, key, r, s)


def _check_conditions(f: str, key: str, r: Route, s: Settings) -> None:
    if r.listener:
        names = [listener_name(lst.address, lst.port) for lst in s.listen]
        if r.listener not in names:
            expected = f"the address:port of a [[listen]] ({', '.join(dict.fromkeys(names))})"
            raise ConfigError(f, f"{key}.listener", expected, r.listener)
    if r.transport and r.transport not in {lst.transport for lst in s.listen}:
        raise ConfigError(f, f"{key}.transport", "a transport some [[listen]] uses", r.transport)
    if r.untrusted is not False:
        tags = {t.tag for t in s.trusted} - {""}
        if not s.trusted or (r.untrusted is not True and r.untrusted not in tags):
            known = ", ".join(sorted(tags)) or "none"
            expected = f"false, true with a [[trusted]] table, or a [[trusted]] tag ({known})"
            raise ConfigError(f, f"{key}.untrusted", expected, r.untrusted)
    for j, h in enumerate(r.header):
        sub = f"{key}.header[{j}]"
        _header_name(f, f"{sub}.name", h.name, edit=False)
        if h.regex and not h.present:
            raise ConfigError(f, f"{sub}.regex", '"" when present = false', h.regex)
        _regex(f, f"{sub}.regex", h.regex, as_bytes=True)


def _check_user_rewrite(f: str, key: str, r: Route) -> None:
    if not USER_RE.fullmatch(r.prefix_user):
        raise ConfigError(f, f"{key}.prefix_user", "URI user characters (RFC 3261 §25.1)",
                          r.prefix_user)  # fmt: skip
    if r.user_replace and not r.user_regex:
        raise ConfigError(f, f"{key}.user_regex", "a regular expression with user_replace",
                          Said("nothing"))  # fmt: skip
    if not r.user_regex:
        return
    pattern = _regex(f, f"{key}.user_regex", r.user_regex, as_bytes=False)
    why = user_replacement_error(pattern, r.user_replace)
    if why is not None:
        expected = "URI user characters and group references like \\1"
        raise ConfigError(f, f"{key}.user_replace", expected,
                          Said(f"{show(r.user_replace)} ({why})"))  # fmt: skip


def _check_failure(f: str, key: str, r: Route, s: Settings) -> None:
    sets = {ds.name for ds in s.destination_set}
    for j, name in enumerate(r.failure_sets):
        if name not in sets:
            known = ", ".join(sorted(sets)) or "none is defined"
            raise ConfigError(f, f"{key}.failure_sets[{j}]",
                              f"the name of a [[destination_set]] ({known})", name)  # fmt: skip
    _codes(f, f"{key}.failure_codes", r.failure_codes, 300, 599)
    if not r.failure_sets:
        return
    if not r.to and not r.prefix_table:
        expected = "[] unless the rule has a to (a set) or a prefix_table"
        raise ConfigError(f, f"{key}.failure_sets", expected, r.failure_sets)
    if (r.mode or s.proxy.mode) != "stateful":
        expected = ('"stateful" (here or in [proxy]): failure routing needs transactions to '
                    "see the final response (a stateless proxy forwards it and forgets)")
        raise ConfigError(f, f"{key}.mode", expected, r.mode or s.proxy.mode)


def _header_name(f: str, key: str, name: str, *, edit: bool) -> None:
    if not TOKEN_RE.fullmatch(name):
        raise ConfigError(f, key, "a header name (an RFC 3261 token)", name)
    if edit and name.lower() in OWNED:
        owned = ", ".join(sorted(n for n in OWNED if len(n) > 1))
        raise ConfigError(f, key, f"a header the proxy does not own (not {owned})", name)


def _regex(f: str, key: str, pattern: str, *, as_bytes: bool) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern)
        if as_bytes:  # header values are matched as bytes (rules.py): it must compile so too
            re.compile(pattern.encode())
    except (re.error, OverflowError, RecursionError) as exc:
        raise ConfigError(f, key, "a regular expression", Said(f"{show(pattern)} ({exc})")) from None
    return compiled


def listener_name(address: str, port: int) -> str:
    """How ``listener`` names the ``[[listen]]`` at ``address``, ``port``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
