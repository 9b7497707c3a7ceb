"""Load-time checks of ``[node]``, ``[curve]`` and ``[[peer]]`` (``conf/sections/node.py``):
a run directory every process finds, key files that load, peers that resolve."""

from __future__ import annotations

import os

from conf import curve, rundir
from conf.checks.common import MAX_RUN_DIR_BYTES, NODE_NAME_RE, _unique
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Settings


def check_node(f: str, s: Settings) -> None:
    """[node]: a name, and a run directory every process of the node finds the same."""
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


def check_curve(f: str, s: Settings) -> None:
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
