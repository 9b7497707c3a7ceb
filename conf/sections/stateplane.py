"""``[stateplane]``: dialog replication between nodes, persistence and failover roles. Checked
beyond its types in ``conf/checks/stateplane.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from conf.sections.fields import _range


@dataclass(frozen=True, slots=True, kw_only=True)
class StatePlane:
    """``[stateplane]``: dialog replication between nodes (``docs/stateplane.md``). With
    ``[dialogs] enabled`` the workers hand every dialog change to the node's state plane,
    whose mirror moves dialogs between workers when the worker set changes
    (``docs/dialogs.md`` "Dialogs follow their Call-ID") and which publishes them to the
    state planes of the nodes that list this one in their ``peers``; it keeps a replica of
    the nodes this one lists."""

    replicate: bool = False
    """No longer needed: with ``[dialogs] enabled`` the workers always hand their dialog
    deltas to the state plane, which mirrors them and publishes them on
    ``stateplane-pub.ipc`` (snapshots on ``stateplane-snap.ipc``) in the run directory, and
    on ``bind`` if set; without a mirror a change of the worker set would lose CDRs, so there
    is no opt-out and ``false`` changes nothing. Kept so older files load: ``true`` still
    needs ``[dialogs] enabled``."""
    peers: list[str] = field(default_factory=list)
    """The other nodes whose dialogs this node replicates, and with which ``[pike] cluster``,
    ``[dialogs] profiles_cluster`` and ``shared`` ratelimit pipes share: each a run directory
    of a node on this host (it subscribes to the ``stateplane-pub.ipc`` and snapshots from
    the ``stateplane-snap.ipc`` in it; absolute, each once, never this node's own) or
    ``tcp://host:port`` of a node on another host (that node's ``bind``; sharing with it
    needs ``[curve]`` and its ``[[peer]]`` key, ``docs/security.md``). Default: none."""
    heartbeat_ms: int = field(default=250, metadata=_range(10, 10_000))
    """Interval of the heartbeats (``HUGZ``) the state plane publishes, updates or not; a
    replica reports its peer silent after two of them without a word."""
    backlog: int = field(default=16_384, metadata=_range(16, 10_000_000))
    """Updates kept for replay: a replica that missed fewer than this gets them again instead
    of a whole snapshot."""
    bind: str = ""
    """``host:port`` (an IP address, ``[v6]:port`` for IPv6) where the state plane also
    publishes (PUB on the port) and serves snapshots (ROUTER on the next port) over TCP, for
    peers on other hosts, which name it ``tcp://host:port`` in their ``peers``; with ``[pike]
    cluster``, ``[dialogs] profiles_cluster`` or a ``shared`` pipe and a ``tcp://`` peer it
    relays them on port + 2, and with ``cluster_ctl`` serves ``ctl --cluster`` on port + 3.
    With ``[bus] ingress_port`` it also announces this host's ingresses there to worker hosts
    with ``[bus] discover``.
    Empty: ipc only. With ``[curve] secret_key_file`` only the ``[[peer]]`` keys get in and
    the channel is encrypted; without it, bind a private interface (a wildcard address is
    refused)."""
    persist_dir: str = ""
    """Directory where the state plane keeps on disk the ``local://`` store's keys (a
    snapshot plus a journal of every write's result, ``docs/cachedb.md`` "Persistence"), and
    with ``[dialogs] enabled`` the node's dialogs (``docs/stateplane.md`` "Persistence"), so a state
    plane or a node restarted comes back with its registrations and calls. Empty: nothing on
    disk."""
    snapshot_every: int = field(default=100_000, metadata=_range(100, 100_000_000))
    """Journal entries after which a new snapshot is written and the journal started again."""
    cluster_ctl: bool = False
    """Answer the read-only views of ``sipline ctl ... --cluster`` (stats, destinations,
    dialogs, pike, ratelimit) asked by the ``[[peer]]`` nodes, on ``bind`` port + 3 over
    CURVE (``docs/monitoring.md``). Needs ``bind`` and ``[curve]``."""
    role: Literal["", "primary", "backup", "member"] = ""
    """This node's place in an active/backup pair (Binary Star, ``docs/failover.md``): the
    primary is active when both start, the backup takes over the virtual listeners and the
    replicated calls when the primary's heartbeats stop for two intervals. Needs
    ``[dialogs] enabled`` and exactly one entry in ``peers`` (the other node of the pair).
    ``"member"``: one node of a cluster of three or more (``members``), where a majority
    decides who takes a dead node's calls (``docs/failover.md`` "Three nodes or more").
    Empty: no failover; the node serves on its own."""
    members: list[str] = field(default_factory=list)
    """With ``role = "member"``: every node of the cluster by ``[node] name``, this one
    included, in the same order on every node (a dead node's calls go to the first live one
    after it). 3 to 32 names; each other one is a ``[[peer]]`` with ``stateplane`` set."""
