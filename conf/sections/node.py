"""``[node]``, ``[curve]`` and ``[[peer]]``: what this node is called and where its processes
meet, its CURVE key pair, and the other nodes it trusts by name and key. Checked beyond their
types in ``conf/checks/node.py``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """``[node]``: what this node is called and where its processes meet."""

    name: str = "sipline"
    """Node name: in every log line, and the key of this node's state for its peers. Letters,
    digits, ``.``, ``_`` and ``-``."""
    run_dir: str = ""
    """Directory of the node's ZeroMQ ipc:// sockets and of its key (``node.key``, created
    0600 on first use); processes of one node share it, and whoever can open it can command
    the node, so it must be private (``docs/security.md``, "Local users"): a process creates
    it 0700 (0750 with ``run_group``) and refuses to start when it is a symbolic link, not
    owned by the process's user, or open to others. Empty (the default):
    ``$XDG_RUNTIME_DIR/sipline-<name>`` when that is set and the user's, else
    ``/run/sipline/<name>`` for root, else ``/tmp/sipline-<uid>-<name>``. An absolute path of
    at most 76 bytes (a Unix socket path is at most 107)."""
    run_group: str = ""
    """A group (name or number) whose members may also use the node's sockets (``sipline
    ctl`` run by an operator who is not the node's user): the run directory is then 0750 and
    the group's, its sockets 0660. Empty (the default): the node's user only (0700, 0600)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """``[curve]``: this node's ZeroMQ CURVE key pair, which authenticates and encrypts the
    TCP channels between nodes (``docs/security.md``): the state plane's ``bind`` and its
    ``tcp://`` peers, the cluster meshes it relays and ``ctl --cluster``. ipc channels stay
    without keys."""

    secret_key_file: str = ""
    """The secret key file ``sipline keygen`` wrote for this node (``<name>.key_secret``,
    mode 0600, holding both keys). Set: the state plane's TCP endpoints admit only the
    ``[[peer]]`` public keys, and each ``tcp://`` peer is reached by its key. Empty: no
    CURVE."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Peer:
    """``[[peer]]``: another node this node trusts, by name and key (``docs/security.md``).
    Repeat the table per node."""

    name: str
    """That node's ``[node] name``: the name its updates and heartbeats must carry, and the
    ZAP identity of its key. Required."""
    stateplane: str = ""
    """Which entry of ``[stateplane] peers`` is this node (its run directory or
    ``tcp://host:port``), written the same way. Empty: the node is only trusted by key."""
    public_key: str = ""
    """Its CURVE public key: 40 Z85 characters (``sipline keygen`` prints it)."""
    public_key_file: str = ""
    """Or its public key file (the ``<name>.key`` that ``sipline keygen`` wrote on it)."""
    virtual: list[str] = field(default_factory=list)
    """With ``[stateplane] role = "member"``: that node's own virtual addresses, which this
    node holds only after taking its calls over (each one a ``[[listen]]`` with ``virtual``
    and ``standby`` here)."""
    bus_address: str = ""
    """That host's ``[bus] address``, when its ingresses or workers join ours over TCP: its
    key is then let in on our bus sockets, and what we connect to at this address must
    present it. Empty: the peer has no part in the bus."""
