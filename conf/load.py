"""Load and validate a TOML configuration into ``Settings``.

Rules:

- Validation is total: an unknown key, a wrong type, a value out of range or a reference to
  something undefined raises ``ConfigError`` naming the file, the key path (``listen[0].port``),
  what was expected and what was found. Processes print it and exit 2 before opening any socket.
- Types are strict, as TOML is typed: ``"5060"`` is not a port, ``true`` is not an integer and
  ``1`` is not a boolean. The one widening is an integer where a float is expected (``5`` for
  ``5.0`` seconds).
- The first error wins; the message reads as one line an operator can act on, e.g.
  ``conf/sipline.toml: listen[0].port: expected a number from 1 to 65535, found 70000``.
- Where the file comes from: ``--conf``, else ``$SIPLINE_CONF``, else the ``sipline.toml``
  installed beside this module (the shipped default), whatever the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import sys
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from conf import bustcp, cluster_url, credfile, curve, rundir
from conf.settings import (
    RATELIMIT_SHARE_INTERVAL_S,
    RATELIMIT_SHARE_MIN_INTERVALS,
    DestinationSet,
    Route,
    Settings,
)

ENV_CONF = "SIPLINE_CONF"
DEFAULT_PATH = str(Path(__file__).with_name("sipline.toml"))

#: an ipc:// endpoint is a Unix socket path, at most 107 bytes (sun_path), and sockets.py
#: adds ``/<role>-<proc>-<pid>.ipc``: 31 bytes for ``/ingress-ingress.99-4194304.ipc``
MAX_RUN_DIR_BYTES = 107 - 31

#: fields that are not TOML keys: (dataclass, field name)
_NOT_KEYS = frozenset({(Settings, "source")})

#: RFC 3261 §25.1 token: methods and option tags are tokens
TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*")
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_\-]+")  # TOML v1.0 bare keys

T = TypeVar("T")


class Said(str):
    """A ``found`` that is already prose (``"nothing"``), printed as is rather than as a value."""

    __slots__ = ()


class ConfigError(Exception):
    """A configuration file that cannot be used; ``str()`` is the operator's message.

    ``found`` is the offending value (shown the way TOML writes it) or a ``Said`` phrase.
    """

    def __init__(self, file: str, key: str, expected: str, found: object) -> None:
        self.file, self.key, self.expected, self.found = file, key, expected, found
        super().__init__(f"{file}: {key}: expected {expected}, found {show(found)}")


def config_path(cli_path: str | None = None) -> str:
    """``--conf`` wins, then ``$SIPLINE_CONF``, then the shipped ``conf/sipline.toml``."""
    return cli_path or os.environ.get(ENV_CONF) or DEFAULT_PATH


def load_or_report(cli_path: str | None, who: str = "") -> Settings | None:
    """The settings of ``config_path(cli_path)``, or None once the error (file, key, expected,
    found) is on stderr, ``who`` first: what every process and command starts with."""
    try:
        return load(config_path(cli_path))
    except ConfigError as exc:
        print(f"{who}configuration error: {exc}", file=sys.stderr)
        return None


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate ``path``.

    Raises:
        ConfigError: the file is missing or unreadable, not TOML, or any value is wrong.
    """
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "an existing TOML file", Said("no such file")) from None
    except IsADirectoryError:
        raise ConfigError(file, "(file)", "a TOML file", Said("a directory")) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            file, "(syntax)", "UTF-8 text", Said(f"invalid UTF-8 at byte {exc.start}")
        ) from None
    except OSError as exc:
        raise ConfigError(
            file, "(file)", "a readable TOML file", Said(exc.strerror or str(exc))
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries "(at line L, column C)"
        raise ConfigError(file, "(syntax)", "valid TOML", Said(str(exc))) from None
    return from_dict(data, file)


def from_dict(data: dict[str, Any], file: str = "<dict>") -> Settings:
    """Validate an already-parsed mapping (what ``load`` does after reading TOML)."""
    settings = _build(Settings, data, file, "")
    settings = dataclasses.replace(settings, source=file)
    settings = _with_run_dir(settings)
    _check_values(settings)
    return settings


def _with_run_dir(s: Settings) -> Settings:
    """``[node] run_dir`` as every process must agree on it: the default location when empty
    (``conf.rundir`` rule 1), written without a trailing ``/`` or ``//``, so that an endpoint
    a process announces compares equal to the one we compute (``conf.sockets`` rule 2)."""
    run_dir = s.node.run_dir or rundir.default_run_dir(s.node.name)
    if os.path.isabs(run_dir):
        run_dir = os.path.normpath(run_dir)
    return dataclasses.replace(s, node=dataclasses.replace(s.node, run_dir=run_dir))


# --- showing values the way the operator wrote them ---------------------------------------

_SHOW_MAX = 60


def show(value: object) -> str:
    """``value`` written as TOML would write it, shortened; ``Said`` phrases as they are."""
    if isinstance(value, Said):
        return str(value)
    text = _toml(value)
    return text if len(text) <= _SHOW_MAX else text[: _SHOW_MAX - 3] + "..."


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_ESCAPES.get(c) or _escape(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def _key(name: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted."""
    return name if BARE_KEY_RE.fullmatch(name) else _toml(name)


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(c: str) -> str:
    """Control characters as TOML escapes, so a message stays on one line."""
    return f"\\u{ord(c):04X}" if ord(c) < 32 or ord(c) == 0x7F else c


def _kind(value: object) -> str:
    """What TOML calls ``value``'s type, with an article."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _found(value: object) -> Said:
    """``value`` with its type, for type mismatches: ``"5060" (a string)``."""
    if isinstance(value, dict):
        return Said("a table")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return Said("an array of tables")
    return Said(f"{show(value)} ({_kind(value)})")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


# --- structure and types ---------------------------------------------------------------------


def _keys(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if (cls, f.name) not in _NOT_KEYS}


def _section(key: str) -> str:
    """How a TOML file names the table at ``key``: ``[tcp]``, ``[[listen]]``, ``[route]``."""
    return f"[[{key.split('[')[0]}]]" if key.endswith("]") else f"[{key}]"


def _build(cls: type[T], data: object, file: str, key: str) -> T:
    if not isinstance(data, dict):
        raise ConfigError(file, key or "(top)", f"a table ({_section(key)})", _found(data))
    hints = typing.get_type_hints(cls)
    fields = _keys(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        # a quoted TOML key ("a.b", "") stays quoted, so the path reads as one line
        sub = f"{key}.{_key(name)}" if key else _key(name)
        if name not in fields:
            where = f"a key of {_section(key)}" if key else "a section"
            hint = difflib.get_close_matches(name, fields, n=1)
            found = "an unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
            raise ConfigError(file, sub, f"{where} ({', '.join(fields)})", Said(found))
        f = fields[name]
        kwargs[name] = _convert(hints[name], value, file, sub)
        lo: float | None = f.metadata.get("min")
        hi: float = f.metadata.get("max", lo)
        # written so that NaN is out of every range
        if lo is not None and not (lo <= kwargs[name] <= hi):
            raise ConfigError(file, sub, f"a number from {_num(lo)} to {_num(hi)}", value)
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in kwargs:
            sub = f"{key}.{name}" if key else name
            expected = f"{_expected(hints[name], sub)} (this key is required)"
            raise ConfigError(file, sub, expected, Said("nothing"))
    return cls(**kwargs)


def _expected(hint: Any, key: str) -> str:
    """What a value of type ``hint`` is called in a message."""
    if dataclasses.is_dataclass(hint):
        return f"a table ({_section(key)})"
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if dataclasses.is_dataclass(item):
            return f"an array of tables ([[{key}]])"
        return f"an array of {_PLURAL.get(item, str(item))}"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(_toml(c) for c in get_args(hint))
    if get_origin(hint) in (typing.Union, types.UnionType):
        return ", or ".join(_NAMES[a] for a in get_args(hint))
    return _NAMES.get(hint, str(hint))


_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}


def _convert(hint: Any, value: object, file: str, key: str) -> Any:
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, file, key)  # type: ignore[arg-type]
    if origin is list:
        if not isinstance(value, list):
            found = _found(value)
            if isinstance(value, dict) and dataclasses.is_dataclass(get_args(hint)[0]):
                found = Said(f"a single table ([{key}])")
            raise ConfigError(file, key, _expected(hint, key), found)
        (item,) = get_args(hint)
        return [_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        choices = get_args(hint)
        if not isinstance(value, str):
            raise ConfigError(file, key, _expected(hint, key), _found(value))
        if value not in choices:
            raise ConfigError(file, key, _expected(hint, key), value)
        return value
    if origin in (typing.Union, types.UnionType):
        # only unions of scalars (``bool | str``): TOML says which one a value is
        if not all(a in _NAMES for a in get_args(hint)):
            raise TypeError(f"unsupported union in settings: {hint}")  # a bug in settings.py
        if type(value) in get_args(hint):
            return value
        raise ConfigError(file, key, _expected(hint, key), _found(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and type(value) is hint:
        return value
    raise ConfigError(file, key, _expected(hint, key), _found(value))


# --- values that need more than a type ----------------------------------------------------


def _check_values(s: Settings) -> None:
    """Rules a type cannot say: addresses parse, names resolve, regexes compile."""
    f = s.source
    if not NODE_NAME_RE.fullmatch(s.node.name):
        raise ConfigError(f, "node.name", "a name of letters, digits, '.', '_' or '-'", s.node.name)
    run_dir = s.node.run_dir
    if any(ord(c) < 32 or c == "\x7f" for c in run_dir):
        raise ConfigError(f, "node.run_dir", "a path without control characters", run_dir)
    if not os.path.isabs(run_dir):
        # every process of a node must find the same sockets, wherever it was started
        raise ConfigError(f, "node.run_dir", "an absolute directory path", run_dir)
    if len(os.fsencode(run_dir)) > MAX_RUN_DIR_BYTES:
        expected = f"a path of at most {MAX_RUN_DIR_BYTES} bytes (ipc socket paths are short)"
        raise ConfigError(f, "node.run_dir", expected, run_dir)
    try:
        rundir.group_id(s.node.run_group)
    except KeyError:
        raise ConfigError(f, "node.run_group", "the name or number of an existing group",
                          s.node.run_group) from None

    if not s.listen:
        raise ConfigError(f, "listen", "at least one [[listen]] table", Said("none"))
    seen: dict[tuple[str, str, int], int] = {}
    for i, lst in enumerate(s.listen):
        _ip(f, f"listen[{i}].address", lst.address)
        ip = ipaddress.ip_address(lst.address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            expected = "an address without a %zone (it goes into Via and Record-Route)"
            raise ConfigError(f, f"listen[{i}].address", expected, lst.address)
        if ip.is_unspecified:
            # workers write the listener's address into Via and Record-Route; a wildcard
            # there sends responses and in-dialog requests nowhere
            expected = "a specific address (it goes into Via and Record-Route)"
            raise ConfigError(f, f"listen[{i}].address", expected, lst.address)
        k = (lst.transport, str(ip), lst.port)
        if k in seen:
            found = Said(f"{lst.transport} {lst.address}:{lst.port} again (listen[{seen[k]}])")
            raise ConfigError(f, f"listen[{i}]", "each listener once", found)
        seen[k] = i

    if s.tcp.max_connections_per_ip > s.tcp.max_connections:
        expected = f"at most tcp.max_connections ({s.tcp.max_connections})"
        raise ConfigError(f, "tcp.max_connections_per_ip", expected, s.tcp.max_connections_per_ip)

    for i, tag in enumerate(s.proxy.proxy_require_supported):
        if not TOKEN_RE.fullmatch(tag):
            raise ConfigError(
                f, f"proxy.proxy_require_supported[{i}]", "an option tag (a SIP token)", tag
            )

    sets: dict[str, int] = {}
    for i, ds in enumerate(s.destination_set):
        key = f"destination_set[{i}]"
        if not ds.name:
            raise ConfigError(f, f"{key}.name", "a non-empty name", ds.name)
        _unique(f, "destination_set", i, ds.name, sets)
        if not ds.destinations:
            raise ConfigError(f, f"{key}.destinations", "at least one SIP URI", ds.destinations)
        for j, uri in enumerate(ds.destinations):
            _destination(f, f"{key}.destinations[{j}]", uri, s)
        if ds.weights and ds.algorithm != "weighted":
            expected = 'no weights unless algorithm = "weighted"'
            raise ConfigError(f, f"{key}.weights", expected, ds.weights)
        if ds.weights and len(ds.weights) != len(ds.destinations):
            expected = f"one weight per destination ({len(ds.destinations)})"
            raise ConfigError(f, f"{key}.weights", expected, ds.weights)
        for j, w in enumerate(ds.weights):
            if not 1 <= w <= 1_000_000:
                raise ConfigError(f, f"{key}.weights[{j}]", "a number from 1 to 1000000", w)
        _check_probing(f, key, ds)
        named = [u for u in ds.destinations if _is_host_name(u)]
        if named and ds.probe_interval_s > 0:
            raise ConfigError(f, f"{key}.probe_interval_s",
                              "0 (probes go to addresses; this set names hosts)", ds.probe_interval_s)

    if s.bus.shed_invite_fill < s.bus.shed_start_fill:
        expected = f"at least bus.shed_start_fill ({_num(s.bus.shed_start_fill)})"
        raise ConfigError(f, "bus.shed_invite_fill", expected, s.bus.shed_invite_fill)
    from conf import routing  # it imports this module's ConfigError

    named_sets = {ds.name for ds in s.destination_set
                  if any(_is_host_name(u) for u in ds.destinations)}  # fmt: skip
    names: dict[str, int] = {}
    for i, r in enumerate(s.route):
        key = f"route[{i}]"
        if r.to in named_sets and (r.mode or s.proxy.mode) != "stateful":
            expected = ('"stateful" (here or in [proxy]): destination set '
                        f"{show(r.to)} names hosts, and only the stateful proxy resolves them")
            raise ConfigError(f, f"{key}.mode", expected, r.mode or s.proxy.mode)
        if not r.name:
            raise ConfigError(f, f"{key}.name", "a non-empty name", r.name)
        _unique(f, "route", i, r.name, names)
        _check_action(f, key, r, sets)
        _methods(f, key, r.methods)
        for field_name in ("ruri_user", "ruri_host"):
            pattern = getattr(r, field_name)
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                found = Said(f"{show(pattern)} ({exc})")
                raise ConfigError(f, f"{key}.{field_name}", "a regular expression", found) from None
        if r.source:
            try:
                ipaddress.ip_network(r.source, strict=False)
            except ValueError:
                expected = "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32"
                raise ConfigError(f, f"{key}.source", expected, r.source) from None
        routing.check_route(f, key, r, s)

    _check_trusted(f, s)
    from conf import prefix_tables  # it imports this module's ConfigError

    prefix_tables.check(f, s)
    _check_registrar(f, s)
    _check_nat(f, s)
    _check_auth(f, s)
    _check_dialogs(f, s)
    _check_peers(f, s)
    _check_curve(f, s)
    try:
        bustcp.check(s)  # [bus] address and [[peer]] bus_address: the hop between hosts
    except bustcp.BusConfigError as exc:
        said = isinstance(exc.found, str) and " again " in exc.found
        raise ConfigError(f, exc.key, exc.expected, Said(exc.found) if said else exc.found) from None
    _check_protection(f, s)
    _check_stateplane(f, s)
    from conf import tlscheck  # it imports this module's ConfigError

    tlscheck.check(f, s)


def _check_action(f: str, key: str, r: Route, sets: dict[str, int]) -> None:
    """A route does one thing: ``to`` a set, ``to_request_uri`` or ``reject``; or, with
    ``continue_routing``, none of them (its rewrites and edits, then the next rules)."""
    actions = [name for name, on in (("to", r.to != ""), ("to_request_uri", r.to_request_uri),
                                     ("reject", r.reject != 0),
                                     ("prefix_table", r.prefix_table != "")) if on]  # fmt: skip
    known = ", ".join(sets) if sets else "none is defined"
    if r.continue_routing:
        if actions:
            expected = "no to, to_request_uri, reject or prefix_table with continue_routing = true"
            raise ConfigError(f, f"{key}.{actions[0]}", expected, getattr(r, actions[0]))
        if not (r.strip_user or r.prefix_user or r.user_regex or r.header_edit):
            expected = "a rewrite (strip_user, prefix_user, user_regex) or a header_edit"
            raise ConfigError(f, f"{key}.continue_routing", expected, Said("none"))
        return
    if not actions:
        expected = (f"an action: the name of a [[destination_set]] ({known}), "
                    "to_request_uri = true or reject (a status)")  # fmt: skip
        raise ConfigError(f, f"{key}.to", expected, Said("nothing"))
    if len(actions) > 1:
        expected = f"one action per route (this one has {actions[0]} already)"
        raise ConfigError(f, f"{key}.{actions[1]}", expected, getattr(r, actions[1]))
    if r.to and r.to not in sets:
        expected = f"the name of a [[destination_set]] ({known})"
        raise ConfigError(f, f"{key}.to", expected, r.to)
    if r.reject and r.reject < 400:
        raise ConfigError(f, f"{key}.reject", "a status from 400 to 699 (or 0)", r.reject)
    if r.reason and not r.reject:
        raise ConfigError(f, f"{key}.reason", 'nothing unless reject is set ("")', r.reason)
    if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in r.reason):
        # it goes into the status line as it is (RFC 3261 §25.1 Reason-Phrase)
        raise ConfigError(f, f"{key}.reason", "a reason phrase without control characters",
                          r.reason)  # fmt: skip


def _check_trusted(f: str, s: Settings) -> None:
    """[[trusted]] tables and the routes' ``trusted`` conditions (docs/security.md)."""
    tags: set[str] = set()
    transports = {lst.transport for lst in s.listen}
    for i, t in enumerate(s.trusted):
        key = f"trusted[{i}]"
        try:
            ipaddress.ip_network(t.cidr, strict=False)
        except ValueError:
            raise ConfigError(f, f"{key}.cidr", _CIDR_HELP, t.cidr) from None
        if t.transport and t.transport not in transports:
            expected = f"a transport some [[listen]] uses ({', '.join(sorted(transports))})"
            raise ConfigError(f, f"{key}.transport", expected, t.transport)
        if t.tag and not NODE_NAME_RE.fullmatch(t.tag):
            raise ConfigError(f, f"{key}.tag", "a tag of letters, digits, '.', '_' or '-'", t.tag)
        tags.add(t.tag)
    tags.discard("")
    for i, r in enumerate(s.route):
        if r.trusted is False or r.trusted in tags or (r.trusted is True and s.trusted):
            continue
        if r.trusted is True:
            expected = "false when no [[trusted]] table is defined (it would never match)"
        else:
            known = ", ".join(sorted(tags)) if tags else "no [[trusted]] table has one"
            expected = f"true, false or the tag of a [[trusted]] table ({known})"
        raise ConfigError(f, f"route[{i}].trusted", expected, r.trusted)


def _check_peers(f: str, s: Settings) -> None:
    """[stateplane] peers: run directories of other nodes (replication, pike, ratelimit and
    call-limit sharing connect to the ipc sockets in them) or tcp://host:port (replication)."""
    seen: dict[str, int] = {}
    for i, peer in enumerate(s.stateplane.peers):
        key = f"stateplane.peers[{i}]"
        if peer.startswith("tcp://"):
            _hostport(f, key, peer.removeprefix("tcp://"))
            norm = peer
        elif any(ord(c) < 32 or c == "\x7f" for c in peer) or not os.path.isabs(peer):
            expected = "an absolute directory path (another node's run_dir), or tcp://host:port"
            raise ConfigError(f, key, expected, peer)
        elif len(os.fsencode(peer)) > MAX_RUN_DIR_BYTES:
            expected = f"a path of at most {MAX_RUN_DIR_BYTES} bytes (ipc socket paths are short)"
            raise ConfigError(f, key, expected, peer)
        else:
            norm = os.path.normpath(peer)
        if norm == os.path.normpath(s.node.run_dir):
            raise ConfigError(f, key, "another node's run directory, not this node's own", peer)
        if norm in seen:
            raise ConfigError(f, key, "each peer once", Said(f"{show(peer)} again "
                                                           f"(stateplane.peers[{seen[norm]}])"))
        seen[norm] = i


def _bind_is_wildcard(bind: str) -> bool:
    host = bind.rpartition(":")[0].strip("[]")
    try:
        return host == "*" or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_curve(f: str, s: Settings) -> None:
    """[curve] and [[peer]]: key files that load, names that resolve (docs/security.md)."""
    keyed = bool(s.curve.secret_key_file)
    if keyed:
        path = s.curve.secret_key_file
        if not os.path.isabs(path):
            raise ConfigError(f, "curve.secret_key_file", "an absolute file path", path)
        try:
            curve.load_secret(path)
        except curve.CurveKeyError as exc:
            expected = "this node's secret key file from sipline keygen, mode 0600"
            raise ConfigError(f, "curve.secret_key_file", expected, Said(f"{show(path)}: {exc}")) from None
    endpoints = {os.path.normpath(p) if not p.startswith("tcp://") else p: p
                 for p in s.stateplane.peers}  # fmt: skip
    names: dict[str, int] = {}
    described: dict[str, int] = {}
    for i, peer in enumerate(s.peer):
        key = f"peer[{i}]"
        if not NODE_NAME_RE.fullmatch(peer.name):
            raise ConfigError(f, f"{key}.name", "a node name of letters, digits, '.', '_' or '-'",
                              peer.name)  # fmt: skip
        if peer.name == s.node.name:
            raise ConfigError(f, f"{key}.name", "another node's name, not this node's own", peer.name)
        _unique(f, "peer", i, peer.name, names)
        if peer.stateplane:
            sp = peer.stateplane
            norm = sp if sp.startswith("tcp://") else os.path.normpath(sp)
            if norm not in endpoints:
                known = ", ".join(s.stateplane.peers) or "it is empty"
                raise ConfigError(f, f"{key}.stateplane", f"an entry of [stateplane] peers ({known})", sp)
            if norm in described:
                found = Said(f"{show(sp)} again (peer[{described[norm]}])")
                raise ConfigError(f, f"{key}.stateplane", "each [stateplane] peers entry once", found)
            described[norm] = i
        _check_peer_key(f, key, peer.public_key, peer.public_key_file, keyed)
    if keyed:
        for i, p in enumerate(s.stateplane.peers):
            j = described.get(p)
            if p.startswith("tcp://") and (j is None or not (s.peer[j].public_key
                                                           or s.peer[j].public_key_file)):
                expected = "a [[peer]] with this stateplane and its public key (CURVE is on)"
                raise ConfigError(f, f"stateplane.peers[{i}]", expected, p)


def _check_peer_key(f: str, key: str, inline: str, file: str, keyed: bool) -> None:
    if inline and file:
        raise ConfigError(f, f"{key}.public_key_file", '"" when public_key is given (one key)', file)
    if (inline or file) and not keyed:
        expected = '"" unless [curve] secret_key_file is set (a key is used with our own only)'
        raise ConfigError(f, f"{key}.public_key" + ("" if inline else "_file"), expected,
                          inline or file)  # fmt: skip
    if file and not os.path.isabs(file):
        raise ConfigError(f, f"{key}.public_key_file", "an absolute file path", file)
    try:
        curve.peer_key(inline, file)
    except curve.CurveKeyError as exc:
        if inline:
            raise ConfigError(f, f"{key}.public_key", "40 Z85 characters (sipline keygen)",
                              inline) from None  # fmt: skip
        raise ConfigError(f, f"{key}.public_key_file", "a public key file from sipline keygen",
                          Said(f"{show(file)}: {exc}")) from None  # fmt: skip


#: a status code list item: ``"503"``, ``"5xx"`` or ``"500-599"``
STATUS_SPEC_RE = re.compile(r"([1-6])xx|([1-6][0-9][0-9])(?:-([1-6][0-9][0-9]))?")
#: probes more often than this flood a destination for no gain in detection time
MIN_PROBE_INTERVAL_S = 0.1


def parse_status_codes(specs: list[str]) -> frozenset[int]:
    """The statuses ``specs`` names: codes (``"408"``), classes (``"5xx"``), ranges.

    Raises:
        ValueError: an item is none of these, or a range runs backwards; ``args[0]`` is its
            index.
    """
    codes: set[int] = set()
    for i, spec in enumerate(specs):
        m = STATUS_SPEC_RE.fullmatch(spec)
        if m is None:
            raise ValueError(i)
        if m.group(1):
            lo = int(m.group(1)) * 100
            hi = lo + 99
        else:
            lo = int(m.group(2))
            hi = int(m.group(3) or lo)
        if hi < lo:
            raise ValueError(i)
        codes.update(range(lo, hi + 1))
    return frozenset(codes)


def _codes(file: str, key: str, specs: list[str], lo: int, hi: int) -> None:
    expected = f'status codes from {lo} to {hi} like "408", "5xx" or "500-599"'
    try:
        codes = parse_status_codes(specs)
    except ValueError as exc:
        i = exc.args[0]
        raise ConfigError(file, f"{key}[{i}]", expected, specs[i]) from None
    for i, spec in enumerate(specs):
        if not parse_status_codes([spec]) <= set(range(lo, hi + 1)):
            raise ConfigError(file, f"{key}[{i}]", expected, spec)
    if not codes:
        raise ConfigError(file, key, "at least one status code", specs)


def _check_probing(file: str, key: str, ds: DestinationSet) -> None:
    interval = ds.probe_interval_s
    if 0 < interval < MIN_PROBE_INTERVAL_S:
        expected = f"0 (no probing) or at least {_num(MIN_PROBE_INTERVAL_S)}"
        raise ConfigError(file, f"{key}.probe_interval_s", expected, interval)
    if interval and ds.probe_timeout_s > interval:
        # one probe in flight per destination: the next is due when this one times out
        expected = f"at most probe_interval_s ({_num(interval)})"
        raise ConfigError(file, f"{key}.probe_timeout_s", expected, ds.probe_timeout_s)
    if ds.probe_from and not PROBE_FROM_RE.fullmatch(ds.probe_from):
        expected = "a sip: URI like sip:probe@192.0.2.10"
        raise ConfigError(file, f"{key}.probe_from", expected, ds.probe_from)
    # alive: finals only (a probe waits past provisionals); failover: never a 2xx, which
    # ends the transaction, nor a 6xx, which ends the search (RFC 3261 §16.7 step 5)
    _codes(file, f"{key}.alive_codes", ds.alive_codes, 200, 699)
    _codes(file, f"{key}.failover_codes", ds.failover_codes, 300, 599)


#: what goes into a From header as is: a SIP URI without spaces, angle brackets or controls
PROBE_FROM_RE = re.compile(r"(?i:sip):[^\s<>\x00-\x1f\x7f\"]+")


#: statuses a request for one of our users may get when no binding is found (docs/registrar.md)
REGISTRAR_MISS_STATUSES = (404, 410, 480, 604)
#: cacheDB URL schemes (workers/cachedb/factory.py; conf/ imports nothing of ours)
CACHEDB_SCHEMES = ("local", "redis", "rediss", "redis-cluster", "memcached")
#: a domain is a host name or an address; IPv6 with or without brackets
DOMAIN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-._]*|\[?[0-9A-Fa-f:.]+\]?")


#: statuses a call over a profile limit may get (OpenSIPS scripts answer 486 or 503)
OVER_LIMIT_STATUSES = (486, 503)


def _check_cdr(f: str, s: Settings) -> None:
    """cdr_group and cdr_peer_files: only with a cdr_file, a group that exists, absolute paths,
    each once."""
    d = s.dialogs
    if d.cdr_group:
        if not d.cdr_file:
            raise ConfigError(f, "dialogs.cdr_group", "empty unless cdr_file is set", d.cdr_group)
        try:
            rundir.group_id(d.cdr_group)
        except KeyError:
            raise ConfigError(f, "dialogs.cdr_group", "the name or number of an existing group",
                              d.cdr_group) from None  # fmt: skip
    seen: set[str] = set()
    for i, path in enumerate(d.cdr_peer_files):
        key = f"dialogs.cdr_peer_files[{i}]"
        if not d.cdr_file:
            raise ConfigError(f, key, "no peer files unless cdr_file is set", path)
        if any(ord(c) < 32 or c == "\x7f" for c in path) or not os.path.isabs(path):
            raise ConfigError(f, key, "an absolute path without control characters", path)
        norm = os.path.normpath(path)  # our own file may be listed: a pair shares one list
        if norm in seen:
            raise ConfigError(f, key, "each file once", path)
        seen.add(norm)


def _check_dialogs(f: str, s: Settings) -> None:
    """[dialogs], [[dialog_profile]] and the routes' dialog_lifetime_s (docs/dialogs.md)."""
    d = s.dialogs
    if d.enabled and not s.proxy.record_route:
        # without our Record-Route, BYEs and re-INVITEs bypass us: the dialog would never end
        raise ConfigError(f, "proxy.record_route", "true when [dialogs] enabled = true", False)
    if d.enabled and d.early_lifetime_s <= s.transactions.timer_c_s:
        expected = f"more than transactions.timer_c_s ({_num(s.transactions.timer_c_s)})"
        raise ConfigError(f, "dialogs.early_lifetime_s", expected, d.early_lifetime_s)
    if d.profiles_cluster and not s.stateplane.peers:
        expected = "false unless [stateplane] peers names the other nodes"
        raise ConfigError(f, "dialogs.profiles_cluster", expected, True)
    if any(ord(c) < 32 or c == "\x7f" for c in d.cdr_file):
        raise ConfigError(f, "dialogs.cdr_file", "a path without control characters", d.cdr_file)
    _check_cdr(f, s)
    for i, r in enumerate(s.route):
        if not r.dialog_lifetime_s:
            continue
        key = f"route[{i}].dialog_lifetime_s"
        if not d.enabled:
            raise ConfigError(f, key, "0 unless [dialogs] enabled = true", r.dialog_lifetime_s)
        if (r.mode or s.proxy.mode) != "stateful":
            expected = "0 on a stateless route (dialogs are tracked on stateful ones)"
            raise ConfigError(f, key, expected, r.dialog_lifetime_s)
    routes = {r.name for r in s.route}
    names: dict[str, int] = {}
    for i, p in enumerate(s.dialog_profile):
        key = f"dialog_profile[{i}]"
        if not d.enabled:
            raise ConfigError(f, key, "no [[dialog_profile]] unless [dialogs] enabled = true",
                              Said("a profile"))  # fmt: skip
        if not TOKEN_RE.fullmatch(p.name):
            raise ConfigError(f, f"{key}.name", "a name of letters, digits, '-', '_' or '.'",
                              p.name)  # fmt: skip
        _unique(f, "dialog_profile", i, p.name, names)
        if p.with_value and not p.value_from:
            expected = "one of ruri_user, from_user, to_user, source_ip, route (with_value = true)"
            raise ConfigError(f, f"{key}.value_from", expected, p.value_from)
        if p.value_from and not p.with_value:
            raise ConfigError(f, f"{key}.value_from", '"" unless with_value = true', p.value_from)
        if p.over_limit_status not in OVER_LIMIT_STATUSES:
            raise ConfigError(f, f"{key}.over_limit_status", "486 or 503", p.over_limit_status)
        for j, name in enumerate(p.routes):
            if name not in routes:
                known = ", ".join(sorted(routes)) if routes else "none is defined"
                expected = f"the name of a [[route]] ({known})"
                raise ConfigError(f, f"{key}.routes[{j}]", expected, name)


def _hostport(f: str, key: str, text: str) -> None:
    """``ip:port`` or ``[ipv6]:port``, port 1-65534 (the next one is used too)."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        ok = 1 <= int(port) <= 65534 and (":" in host) == text.startswith("[")
    except ValueError:
        ok = False
    if not ok:
        expected = "an IP address and a port from 1 to 65534, like 192.0.2.1:7400 or [2001:db8::1]:7400"
        raise ConfigError(f, key, expected, text)


def _check_stateplane(f: str, s: Settings) -> None:
    """[stateplane] and the virtual listeners of a failover pair (docs/failover.md)."""
    sp = s.stateplane
    if sp.replicate and not s.dialogs.enabled:
        # kept from before the mirror followed [dialogs] enabled alone (docs/stateplane.md)
        raise ConfigError(f, "stateplane.replicate", "false unless [dialogs] enabled = true",
                          True)  # fmt: skip
    if sp.bind:
        wildcard = _bind_is_wildcard(sp.bind)
        if not sp.bind.startswith("*:"):
            _hostport(f, "stateplane.bind", sp.bind)
        elif not sp.bind[2:].isdigit() or not 1 <= int(sp.bind[2:]) <= 65534:
            _hostport(f, "stateplane.bind", sp.bind)  # raises, naming the port
        if wildcard and not s.curve.secret_key_file:
            # every interface: anyone who reaches it would read every call (docs/security.md)
            expected = ("a specific address unless [curve] secret_key_file is set (a wildcard "
                        "bind serves every interface)")
            raise ConfigError(f, "stateplane.bind", expected, sp.bind)
    _check_relay(f, s)
    if sp.persist_dir and not os.path.isabs(sp.persist_dir):
        raise ConfigError(f, "stateplane.persist_dir", "an absolute directory path",
                          sp.persist_dir)  # fmt: skip
    if sp.role:
        if not s.dialogs.enabled:
            # the pair's nodes swap roles: each must publish the dialogs it serves
            raise ConfigError(f, "dialogs.enabled", f'true when [stateplane] role = "{sp.role}"',
                              False)  # fmt: skip
        if sp.role == "member":
            _check_members(f, s)
        elif len(sp.peers) != 1:
            expected = f'exactly one entry, the other node of the pair (role = "{sp.role}")'
            raise ConfigError(f, "stateplane.peers", expected, Said(f"{len(sp.peers)} entries"))
    elif sp.members:
        raise ConfigError(f, "stateplane.members", 'empty unless role = "member"', sp.members)
    standby: dict[str, bool] = {}
    for i, lst in enumerate(s.listen):
        if lst.standby and not lst.virtual:
            raise ConfigError(f, f"listen[{i}].standby", "false unless virtual = true", True)
        if lst.virtual and standby.setdefault(lst.address, lst.standby) != lst.standby:
            expected = f"the same standby as the other listeners on {lst.address}"
            raise ConfigError(f, f"listen[{i}].standby", expected, lst.standby)
        if lst.virtual and not sp.role:
            expected = 'false unless [stateplane] role is "primary", "backup" or "member"'
            raise ConfigError(f, f"listen[{i}].virtual", expected, True)
    if sp.role and not any(lst.virtual and not lst.standby for lst in s.listen):
        expected = "a [[listen]] with virtual = true and not standby (this node's own address)"
        raise ConfigError(f, "listen", expected, Said("none"))


def _check_members(f: str, s: Settings) -> None:
    """role = "member" (docs/failover.md "Three nodes or more"): the cluster's names, each
    other one a [[peer]] with its state plane, and every standby address some member's."""
    sp, names = s.stateplane, s.stateplane.members
    if not 3 <= len(names) <= 32 or len(set(names)) != len(names):
        raise ConfigError(f, "stateplane.members", "3 to 32 distinct node names", names)
    if s.node.name not in names:
        raise ConfigError(f, "stateplane.members", f"a list naming this node ({s.node.name})", names)
    peers = {p.name: p for p in s.peer}
    for name in names:
        if name != s.node.name and (name not in peers or not peers[name].stateplane):
            expected = f"a [[peer]] named {name} with its stateplane entry (a member)"
            raise ConfigError(f, "peer", expected, Said("none"))
    if len(sp.peers) != len(names) - 1:
        expected = f"one entry per other member ({len(names) - 1})"
        raise ConfigError(f, "stateplane.peers", expected, Said(f"{len(sp.peers)} entries"))
    owner: dict[str, str] = {}
    for name in names:
        for addr in peers[name].virtual if name in peers else []:
            if owner.setdefault(addr, name) != name:
                raise ConfigError(f, f"peer.{name}.virtual", "addresses of one member each", addr)
    for i, lst in enumerate(s.listen):
        if lst.standby and lst.address not in owner:
            expected = "an address in some member's [[peer]] virtual list"
            raise ConfigError(f, f"listen[{i}].address", expected, lst.address)


def _check_relay(f: str, s: Settings) -> None:
    """The cluster meshes and ``ctl --cluster`` across hosts (stateplane/meshcross.py): CURVE
    only, served on ``bind`` port + 2 and + 3."""
    sp = s.stateplane
    tcp_peer = any(p.startswith("tcp://") for p in sp.peers)
    shared = (("pike.cluster", s.pike.cluster), ("dialogs.profiles_cluster", s.dialogs.profiles_cluster),
              ("ratelimit", any(rl.shared for rl in s.ratelimit)))  # fmt: skip
    uses = [(key, 2) for key, on in shared if on and tcp_peer]
    if sp.cluster_ctl:
        uses.append(("stateplane.cluster_ctl", 3))
    for key, offset in uses:
        if not s.curve.secret_key_file:
            # a peer on another host is reached only by a key it proves (docs/security.md)
            expected = "false unless [curve] secret_key_file is set" + (
                " (shared with a tcp:// peer)" if offset == 2 else "")  # fmt: skip
            raise ConfigError(f, key, expected, True if key != "ratelimit" else Said("a shared pipe"))
        if not sp.bind:
            expected = f"host:port where the peers reach this node (port + {offset} serves {key})"
            raise ConfigError(f, "stateplane.bind", expected, "")
        if int(sp.bind.rpartition(":")[2]) + offset > 65535:
            expected = f"a port of at most {65535 - offset} (port + {offset} serves {key})"
            raise ConfigError(f, "stateplane.bind", expected, sp.bind)


_CIDR_HELP = "an address or CIDR like 10.0.0.0/8 or 2001:db8::/32"


def _check_protection(f: str, s: Settings) -> None:
    """[pike] and [[ratelimit]] (docs/protection.md)."""
    for i, w in enumerate(s.pike.whitelist):
        try:
            ipaddress.ip_network(w, strict=False)
        except ValueError:
            raise ConfigError(f, f"pike.whitelist[{i}]", _CIDR_HELP, w) from None
    if s.pike.cluster and not s.pike.enabled:
        raise ConfigError(f, "pike.cluster", "false unless [pike] enabled = true", True)
    if s.pike.cluster and not s.stateplane.peers:
        expected = ("false when [stateplane] peers is empty (blocks are shared with the nodes "
                    "it lists; [dialogs] is not needed)")
        raise ConfigError(f, "pike.cluster", expected, True)
    routes = {r.name for r in s.route}
    names: dict[str, int] = {}
    for i, rl in enumerate(s.ratelimit):
        key = f"ratelimit[{i}]"
        if not TOKEN_RE.fullmatch(rl.name):
            raise ConfigError(f, f"{key}.name", "a name of letters, digits, '-', '_' or '.'",
                              rl.name)  # fmt: skip
        _unique(f, "ratelimit", i, rl.name, names)
        if rl.limit_per_s * rl.window_s < 1:
            # a window that cannot hold one request refuses everything
            expected = f"at least 1 / limit_per_s ({_num(1 / rl.limit_per_s)})"
            raise ConfigError(f, f"{key}.window_s", expected, rl.window_s)
        min_window = RATELIMIT_SHARE_INTERVAL_S * RATELIMIT_SHARE_MIN_INTERVALS
        if rl.shared and rl.window_s < min_window:
            expected = (f"at least {_num(min_window)} on a shared pipe (counts are exchanged "
                        f"every {_num(RATELIMIT_SHARE_INTERVAL_S)} s)")
            raise ConfigError(f, f"{key}.window_s", expected, rl.window_s)
        _methods(f, key, rl.methods)
        if rl.source:
            try:
                ipaddress.ip_network(rl.source, strict=False)
            except ValueError:
                raise ConfigError(f, f"{key}.source", _CIDR_HELP, rl.source) from None
        if rl.route and rl.route not in routes:
            known = ", ".join(sorted(routes)) if routes else "none is defined"
            raise ConfigError(f, f"{key}.route", f"the name of a [[route]] ({known})", rl.route)


def _check_registrar(f: str, s: Settings) -> None:
    r = s.registrar
    for i, domain in enumerate(r.domains):
        if not DOMAIN_RE.fullmatch(domain):
            raise ConfigError(f, f"registrar.domains[{i}]", "a host name or an address", domain)
    scheme = r.cachedb_url.partition("://")[0]
    if "://" not in r.cachedb_url or scheme not in CACHEDB_SCHEMES:
        expected = ("a cacheDB URL: local://, redis://host:port/db, "
                    "redis-cluster://host:port[,host:port...]/ or memcached://host:port")  # fmt: skip
        raise ConfigError(f, "registrar.cachedb_url", expected, r.cachedb_url)
    if scheme == cluster_url.SCHEME:
        try:
            cluster_url.parse(r.cachedb_url)
        except ValueError as exc:
            raise ConfigError(f, "registrar.cachedb_url", str(exc), r.cachedb_url) from None
    if r.min_expires_s > r.max_expires_s:
        expected = f"at most registrar.max_expires_s ({r.max_expires_s})"
        raise ConfigError(f, "registrar.min_expires_s", expected, r.min_expires_s)
    if not r.min_expires_s <= r.default_expires_s <= r.max_expires_s:
        expected = f"from min_expires_s ({r.min_expires_s}) to max_expires_s ({r.max_expires_s})"
        raise ConfigError(f, "registrar.default_expires_s", expected, r.default_expires_s)
    for name in ("unknown_aor_status", "no_binding_status"):
        status = getattr(r, name)
        if status not in REGISTRAR_MISS_STATUSES:
            expected = "one of " + ", ".join(map(str, REGISTRAR_MISS_STATUSES))
            raise ConfigError(f, f"registrar.{name}", expected, status)


#: the tests of ``[nat] detect`` (workers/nat.py)
NAT_TESTS = ("private_contact", "private_via", "contact_not_source", "via_not_source", "rport")


def _check_nat(f: str, s: Settings) -> None:
    n = s.nat
    for i, name in enumerate(n.detect):
        if name not in NAT_TESTS:
            raise ConfigError(f, f"nat.detect[{i}]", "one of " + ", ".join(NAT_TESTS), name)
    if n.ping_method not in ("options", "crlf"):
        raise ConfigError(f, "nat.ping_method", "options or crlf", n.ping_method)
    if n.ping_interval_s > 0 and not s.registrar.enabled:
        raise ConfigError(f, "nat.ping_interval_s", "0 unless [registrar] enabled = true",
                          n.ping_interval_s)  # fmt: skip
    if 0 < n.ping_interval_s < 1:
        raise ConfigError(f, "nat.ping_interval_s", "0 (off) or at least 1", n.ping_interval_s)
    if n.ping_drop_after > 0 and n.ping_method != "options":
        raise ConfigError(f, "nat.ping_drop_after", "0 unless ping_method = \"options\"",
                          n.ping_drop_after)  # fmt: skip


#: a realm is quoted in challenges and is part of cacheDB keys: keep it plain
REALM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-_@:]{0,127}")


def _check_auth(f: str, s: Settings) -> None:
    """[auth] and [[auth_realm]] (docs/auth.md): files that load, realms that can be quoted."""
    a = s.auth
    for i, algorithm in enumerate(a.algorithms):
        if algorithm not in credfile.HEX_LEN or a.algorithms.index(algorithm) != i:
            expected = "each of " + ", ".join(credfile.HEX_LEN) + " at most once"
            raise ConfigError(f, f"auth.algorithms[{i}]", expected, algorithm)
    _methods(f, "auth", a.methods)
    names: dict[str, int] = {}
    for i, r in enumerate(s.auth_realm):
        key = f"auth_realm[{i}]"
        if not REALM_RE.fullmatch(r.realm):
            raise ConfigError(f, f"{key}.realm", "letters, digits and .-_@: (at most 128)", r.realm)
        if r.realm in names:
            found = Said(f"{show(r.realm)} again (auth_realm[{names[r.realm]}])")
            raise ConfigError(f, f"{key}.realm", "a realm of its own", found)
        names[r.realm] = i
        for j, domain in enumerate(r.domains):
            if not DOMAIN_RE.fullmatch(domain):
                raise ConfigError(f, f"{key}.domains[{j}]", "a host name or an address", domain)
        if r.credentials_file:
            if not os.path.isabs(r.credentials_file):
                raise ConfigError(f, f"{key}.credentials_file", "an absolute file path",
                                  r.credentials_file)  # fmt: skip
            try:
                credfile.load_file(r.credentials_file)
            except credfile.CredentialsFileError as exc:
                raise ConfigError(f, f"{key}.credentials_file", "lines of 'username algorithm ha1'",
                                  Said(str(exc))) from None  # fmt: skip
        if r.cachedb_url:
            scheme = r.cachedb_url.partition("://")[0]
            if "://" not in r.cachedb_url or scheme not in CACHEDB_SCHEMES:
                raise ConfigError(f, f"{key}.cachedb_url", "a cacheDB URL (docs/cachedb.md)",
                                  r.cachedb_url)  # fmt: skip
        if not r.credentials_file and not r.cachedb_url:
            raise ConfigError(f, f"{key}.credentials_file", "a file (or a cachedb_url)", Said("nothing"))
    if not a.enabled:
        return
    if not s.auth_realm:
        raise ConfigError(f, "auth_realm", "at least one [[auth_realm]] with [auth] enabled",
                          Said("nothing"))  # fmt: skip
    if not a.algorithms:
        raise ConfigError(f, "auth.algorithms", "at least one algorithm when enabled", [])
    path = a.nonce_secret_file
    if not path or not os.path.isabs(path):
        raise ConfigError(f, "auth.nonce_secret_file", "an absolute file path (required when enabled)",
                          path)  # fmt: skip
    try:
        credfile.load_secret(path)
    except ValueError as exc:
        raise ConfigError(f, "auth.nonce_secret_file", "a readable secret of 16 bytes or more",
                          Said(f"{show(path)}: {exc}")) from None  # fmt: skip


def _ip(file: str, key: str, text: str) -> None:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(file, key, "an IPv4 or IPv6 address", text) from None


# conf/ imports nothing of ours, so destinations are checked with their own small grammar
# (RFC 3261 §25.1 SIP-URI without userinfo: host, port, uri-parameters; the scheme is
# case-insensitive, §19.1.4).
DESTINATION_RE = re.compile(
    r"(?i:sips?):(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?((?:;[A-Za-z0-9\-_.!~*'%]+(?:=[^;]*)?)*)"
)
_URI_HELP = "a SIP URI like sip:192.0.2.1:5060;transport=tcp (or sips:)"


def _unique(f: str, table: str, i: int, name: str, seen: dict[str, int]) -> None:
    """``table[i].name`` must not repeat an earlier entry's; ``seen`` maps names to indexes."""
    if name in seen:
        found = Said(f"{show(name)} again ({table}[{seen[name]}])")
        raise ConfigError(f, f"{table}[{i}].name", "a unique name", found)
    seen[name] = i


def _methods(f: str, key: str, methods: list[str]) -> None:
    for j, method in enumerate(methods):
        if not TOKEN_RE.fullmatch(method) or method != method.upper():
            raise ConfigError(f, f"{key}.methods[{j}]", "a method in upper case, like INVITE",
                              method)  # fmt: skip


#: RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens
HOSTNAME_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _is_host_name(uri: str) -> bool:
    m = DESTINATION_RE.fullmatch(uri)
    if m is None:
        return False
    host = m.group(1)
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return True
    return False


def _host_destination(file: str, key: str, uri: str, host: str, port: str | None) -> None:
    """A host name destination is resolved by RFC 3263 when a request is forwarded."""
    if host.rstrip(".").rsplit(".", 1)[-1].isdigit():  # RFC 1123 §2.1: not a dotted quad
        raise ConfigError(file, key, _URI_HELP + " (an IP address)", uri)
    if not HOSTNAME_RE.fullmatch(host) or len(host) > 253:
        raise ConfigError(file, key, _URI_HELP + " (an IP address or a host name)", uri)
    if port and not 0 < int(port) < 65536:
        raise ConfigError(file, key, _URI_HELP + " (port from 1 to 65535)", uri)


def _destination(file: str, key: str, uri: str, s: Settings) -> None:
    m = DESTINATION_RE.fullmatch(uri)
    if m is None:
        raise ConfigError(file, key, _URI_HELP, uri)
    host = m.group(1)
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    try:
        ip = ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        _host_destination(file, key, uri, host, m.group(2))
    if ip is not None and host.startswith("[") != (ip.version == 6):
        raise ConfigError(file, key, _URI_HELP + " (IPv6 in brackets)", uri)
    if m.group(2) and not 0 < int(m.group(2)) < 65536:
        raise ConfigError(file, key, _URI_HELP + " (port from 1 to 65535)", uri)
    param = re.search(r";transport=([^;]*)", m.group(3) or "", re.IGNORECASE)
    transport = param.group(1).lower() if param else None
    if transport not in (None, "udp", "tcp", "tls"):
        raise ConfigError(file, key, "transport=udp, transport=tcp or transport=tls", uri)
    if uri[:5].lower() == "sips:":
        transport = "tls"  # RFC 3261 §26.2.1: whatever the transport parameter says
    if ip is None:
        return  # a host name: its addresses are checked against the listeners when resolved
    # a worker sends from a listener of the same transport and address family
    family = f"IPv{ip.version}"
    usable = [
        lst for lst in s.listen
        if ipaddress.ip_address(lst.address).version == ip.version
        and transport in (None, lst.transport)
    ]  # fmt: skip
    if not usable:
        wanted = f"{transport} {family}" if transport else family
        expected = f"a destination some [[listen]] can send to (there is no {wanted} listener)"
        raise ConfigError(file, key, expected, uri)
