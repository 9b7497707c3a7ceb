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

Layout: this module reads the file and runs the checks in a fixed order (the first error wins,
so a file with several errors always names the same one). ``conf/checks/schema.py`` turns the
TOML tables into the dataclasses of ``conf/settings.py`` (keys, types, ranges); each section's
other rules are in the ``conf/checks/`` module named like its ``conf/sections/`` module;
``ConfigError`` and how it shows values are in ``conf/checks/errors.py``. The names other code
imports from here (``ConfigError``, ``show``, ``parse_status_codes`` ...) are re-exported.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from conf import rundir
from conf.checks import (
    auth,
    bus,
    dialogs,
    listen,
    node,
    prefix_tables,
    protection,
    registrar,
    routing,
    stateplane,
    tls,
)
from conf.checks.common import MAX_RUN_DIR_BYTES, NODE_NAME_RE, TOKEN_RE, parse_status_codes
from conf.checks.errors import ConfigError, Said, show
from conf.checks.schema import _build
from conf.settings import Settings

__all__ = [
    "DEFAULT_PATH",
    "ENV_CONF",
    "MAX_RUN_DIR_BYTES",
    "NODE_NAME_RE",
    "TOKEN_RE",
    "ConfigError",
    "Said",
    "config_path",
    "from_dict",
    "load",
    "load_or_report",
    "parse_status_codes",
    "show",
]


ENV_CONF = "SIPLINE_CONF"
DEFAULT_PATH = str(Path(__file__).with_name("sipline.toml"))


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


# --- values that need more than a type ----------------------------------------------------


def _check_values(s: Settings) -> None:
    """Rules a type cannot say: addresses parse, names resolve, regexes compile; section by
    section in this order (the first error wins)."""
    f = s.source
    node.check_node(f, s)
    listen.check_listen(f, s)
    listen.check_tcp(f, s)
    routing.check_proxy(f, s)
    sets = routing.check_destination_sets(f, s)
    bus.check_bus(f, s)
    routing.check_routes(f, s, sets)
    routing.check_trusted(f, s)
    prefix_tables.check(f, s)
    registrar.check_registrar(f, s)
    registrar.check_nat(f, s)
    auth.check_auth(f, s)
    dialogs.check_dialogs(f, s)
    stateplane.check_peers(f, s)
    node.check_curve(f, s)
    bus.check_hosts(f, s)
    protection.check_protection(f, s)
    stateplane.check_stateplane(f, s)
    tls.check(f, s)
