"""Call-limit counts shared between workers: of one node always, of peer nodes on request.
Sans-IO (time is an argument); the worker sends and receives the messages.

A profile's limit is a promise about the node (or, with ``[dialogs] profiles_cluster``, the
cluster), while each worker counts only its own dialogs. So every worker tells the others its
counts of the limited profiles, and admits a call against its own count plus theirs.

Rules:
1. Only profiles with a ``limit`` are shared: nothing else is checked against another
   process's count. Keys are ``(profile, value)``; value "" for a profile without values.
2. A worker sends, after each loop iteration that changed a shared count, the new counts of
   the keys that changed (an update), and every heartbeat all its non-zero counts (a full
   state, which also proves it alive). Over ipc on one host an update arrives in well under
   a millisecond, so two workers admitting the last place of a limit at the same moment is
   the only way past it; the full state heals a lost update within a heartbeat.
3. ``remote[key]`` is the sum over the live senders, kept up to date on every receive, so
   ``Profiles.check`` reads one dict entry per membership.
4. A sender silent for ``timeout_s`` is forgotten (its counts leave ``remote``): a worker that
   died took its dialogs with it. After a takeover the worker forgets the dead node's senders
   at once (``forget_node``): their dialogs are counted as ours from then on, never twice.
5. At most ``MAX_SENDERS`` senders are kept (a peer node could name any number of them):
   past it a new sender's counts are refused (``refused``) until one is forgotten.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dialogstate.profiles import Profiles

Key = tuple[str, str]
#: entries per message (each ~30 bytes packed) so a full state of many values stays small
CHUNK = 10_000
#: senders kept at most: every worker of every node of a large cluster, with room (rule 5)
MAX_SENDERS = 4096


@dataclass(slots=True)
class _Sender:
    node: str
    seen: float
    counts: dict[Key, int] = field(default_factory=dict)


class ProfileShare:
    def __init__(self, profiles: Profiles, *, timeout_s: float) -> None:
        self.profiles = profiles
        self.timeout_s = timeout_s
        self.limited = frozenset(n for n, p in profiles.defs.items() if p.limit)
        self.senders: dict[str, _Sender] = {}
        self.refused = 0
        self.remote: dict[Key, int] = profiles.remote  # rule 3: the dict Profiles.check reads
        profiles.track = self.limited

    def update(self) -> list[list[object]]:
        """Rule 2: ``[name, value, count]`` of every shared key changed since the last call."""
        p = self.profiles
        keys, p.changed = p.changed, set()
        return [[n, v, p.size(n, v if p.defs[n].with_value else None)] for n, v in keys]

    def full(self) -> list[list[object]]:
        """Rule 2: every non-zero count of the shared profiles."""
        out: list[list[object]] = []
        for name, size in self.profiles.view().items():
            if name not in self.limited:
                continue
            if isinstance(size, dict):
                out += [[name, v, c] for v, c in size.items()]
            elif size:
                out.append([name, "", size])
        return out

    def receive(self, sender: str, node: str, full: bool, entries: Iterable[list[object]],
                now: float) -> None:  # fmt: skip
        s = self.senders.get(sender)
        if s is None:
            if len(self.senders) >= MAX_SENDERS:  # rule 5
                self.refused += 1
                return
            s = self.senders[sender] = _Sender(node, now)
        s.seen = now
        if full:
            for key, n in s.counts.items():
                self._add(key, -n)
            s.counts.clear()
        for name, value, count in entries:
            if not isinstance(name, str) or name not in self.limited or not isinstance(
                    value, str) or not isinstance(count, int) or count < 0:  # fmt: skip
                continue
            key = (name, value)
            self._add(key, count - s.counts.get(key, 0))
            if count:
                s.counts[key] = count
            else:
                s.counts.pop(key, None)

    def expire(self, now: float) -> list[str]:
        """Rule 4: forget senders silent for ``timeout_s``; returns them."""
        gone = [i for i, s in self.senders.items() if now - s.seen > self.timeout_s]
        for ident in gone:
            self._drop(ident)
        return gone

    def forget_node(self, node: str) -> int:
        """Rule 4, after a takeover of ``node``'s dialogs; returns the senders forgotten."""
        gone = [i for i, s in self.senders.items() if s.node == node]
        for ident in gone:
            self._drop(ident)
        return len(gone)

    def _drop(self, ident: str) -> None:
        for key, n in self.senders.pop(ident).counts.items():
            self._add(key, -n)

    def _add(self, key: Key, delta: int) -> None:
        n = self.remote.get(key, 0) + delta
        if n > 0:
            self.remote[key] = n
        else:
            self.remote.pop(key, None)
