"""Load-time checks of ``[stateplane]`` (``conf/sections/stateplane.py``): its peers, its TCP
``bind`` and what is served beside it, and the roles and virtual listeners of failover."""

from __future__ import annotations

import ipaddress
import os

from conf.checks.common import MAX_RUN_DIR_BYTES, _hostport
from conf.checks.errors import ConfigError, Said, show
from conf.settings import Settings


def check_peers(f: str, s: Settings) -> None:
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


def check_stateplane(f: str, s: Settings) -> None:
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
