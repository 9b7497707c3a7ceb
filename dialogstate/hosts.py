"""Dialogs that move between hosts: who owns a Call-ID among every host's workers, and what a
peer host may hand over (``docs/dialogs.md`` "Across hosts"). Sans-IO: time is an argument.
Used by a worker host's workers and its state plane alike, so both decide with one view.

Rules:
1. The view is this host's live workers, read from its run directory (the only truth about
   our own processes), plus the workers of other hosts in the edge's ring (``conf/bustcp.py``
   rule 6) with the TCP endpoint each one names in its heartbeats, less the workers their
   own host said are gone (rule 4). An ident names its host (``<node>.<process>-<pid>``), so
   the ring's entries for our node are ignored. A Call-ID's owner is the ingresses'
   rendezvous hash over the view (``conf/workerset.py``).
2. Sources (the names in ``HANDED`` and in an ``ADOPT``'s fourth element): a host's state
   plane hands a worker of another host that joined the dialogs it takes as
   ``stateplane@<host>`` (``host_source``); a vanished worker's dialogs come, to every host,
   as ``stateplane:<ident>`` (``sources.vanished_source``) from the host the ident names. A
   worker joining on the hop expects ``stateplane@h`` from each other host ``h`` with workers
   in the first ring it hears (``first_ring``).
3. A peer host ``P`` (the node name its CURVE key authenticated, never a name a frame
   carries) may send a ``HANDED`` of ``stateplane@P``, or of ``stateplane:V`` for ``V`` an
   ident of ``P``; an ``ADOPT`` with such a source, naming node ``P``, whose records this
   worker owns in the view (without ``V``), and whose Call-IDs the view gave, before, to a
   worker of ``P`` (to ``V`` itself for a vanished one): a host hands over only dialogs of
   its own workers, and only to the worker the ring says owns each now. The rest is refused
   and counted; a record refused is never applied.
4. ``stateplane:V`` from ``V``'s host marks ``V`` gone at once: its host saw the process end,
   while the edge drops it only after missed heartbeats, and the records that host hands are
   ours in the view without ``V``. Marks are bounded (``MAX_GONE``) and forgotten once ``V``
   has left the ring, or after ``GONE_S``.
5. A peer that hands records to a worker ``W`` of ours also sends them to keep
   (``stateplane/handover.py`` rule 6), to another worker of ours or to our state plane
   itself: the same checks as rule 3 with ``W`` in place of the receiver, ``W`` being a
   worker of this host. A state plane's view (no ``me``) takes only such copies.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from conf.workerset import WorkerSet
from dialogstate.sources import STATEPLANE, vanished_source

#: every host's workers the view holds at most (``conf.bustcp.MAX_WORKERS``)
MAX_WORKERS = 1024
#: workers marked gone at most (rule 4); older marks go first
MAX_GONE = 1024
#: a gone mark is kept this long at most: long past the edge's own liveness timeout
GONE_S = 60.0
#: what a worker expects until it has heard its first ring (it knows no host before)
RING_SOURCE = "ring"


def host_source(node: str) -> str:
    """Rule 2: the source of what host ``node``'s state plane hands a joiner of another host."""
    return f"{STATEPLANE}@{node}"


def host_of(ident: str) -> str:
    """The node name an ident on the hop starts with (rule 1), or "" for one without."""
    head, dot, _ = ident.partition(".")
    return head if dot else ""


def _cid(call_id: object) -> bytes:
    return str(call_id).encode("utf-8", "surrogateescape")


class HostView:
    """Rules 1 and 4 for one process of host ``node``; ``me`` is the worker's own ident (a
    state plane has none). ``counters``: what rule 3 refused, by reason."""

    __slots__ = ("_gone", "_local", "_remote", "_ring", "counters", "me", "node")

    def __init__(self, node: str, me: str = "") -> None:
        self.node, self.me = node, me
        self._local: dict[str, str] = {}
        self._remote: dict[str, str] = {}
        self._gone: dict[str, float] = {}
        self._ring: WorkerSet | None = None
        self.counters: Counter[str] = Counter()

    # -- the view (rule 1) ------------------------------------------------------------------

    def set_local(self, live: dict[str, str]) -> bool:
        """This host's live workers ``{ident: ipc endpoint}``; True when the view changed."""
        if live == self._local:
            return False
        self._local = dict(live)
        self._ring = None
        return True

    def set_ring(self, ring: dict[str, str], now: float) -> bool:
        """The edge's ring ``{ident: tcp endpoint}`` (entries already checked against the
        ``[[peer]]`` tables by the caller); True when the view changed. Gone marks of workers
        no longer in it are forgotten (rule 4)."""
        remote = {i: ep for i, ep in ring.items() if host_of(i) != self.node and ep}
        if len(remote) > MAX_WORKERS:
            remote = dict(sorted(remote.items())[:MAX_WORKERS])
        for ident in [g for g in self._gone if g not in remote or now - self._gone[g] > GONE_S]:
            del self._gone[ident]
        if remote == self._remote:
            return False
        self._remote = remote
        self._ring = None
        return True

    def mark_gone(self, ident: str, now: float) -> bool:
        """Rule 4; True when the view changed."""
        if ident in self._gone or ident not in self._remote:
            return False
        if len(self._gone) >= MAX_GONE:
            del self._gone[min(self._gone, key=self._gone.__getitem__)]
        self._gone[ident] = now
        self._ring = None
        return True

    def view(self) -> dict[str, str]:
        """Every host's workers ``{ident: endpoint}``: ipc for ours, tcp for the others'."""
        out = {i: ep for i, ep in self._remote.items() if i not in self._gone}
        out.update(self._local)
        return out

    def remote(self) -> dict[str, str]:
        """The other hosts' workers in the view (what a worker tells its state plane)."""
        return {i: ep for i, ep in self._remote.items() if i not in self._gone}

    def ring(self) -> WorkerSet:
        if self._ring is None:
            self._ring = WorkerSet.fixed(self.view())
        return self._ring

    def owner(self, call_id: str) -> str | None:
        return self.ring().owner(_cid(call_id))

    def is_local(self, ident: str) -> bool:
        return host_of(ident) == self.node or ident in self._local

    def hosts(self) -> set[str]:
        """The other hosts with workers in the view (rule 2's sources for a joiner)."""
        return {host_of(i) for i in self.remote()}

    def first_ring(self) -> list[str]:
        """Rule 2: the sources a worker joining on the hop expects, once it heard a ring."""
        return sorted(host_source(h) for h in self.hosts())

    # -- what a peer host sends (rule 3) -----------------------------------------------------

    def _vanished(self, peer: str, source: str) -> str | None:
        """``V`` of a ``stateplane:V`` source ``peer`` may send, else None."""
        prefix = vanished_source("")
        if not source.startswith(prefix):
            return None
        ident = source[len(prefix) :]
        return ident if host_of(ident) == peer and peer != self.node else None

    def check_handed(self, peer: str, source: object, now: float) -> bool:
        """A ``HANDED`` of ``source`` from host ``peer`` (rule 3); marks a vanished worker
        gone (rule 4). False: refused (counted)."""
        if not isinstance(source, str) or not peer:
            self.counters["handed_refused"] += 1
            return False
        if source == host_source(peer) and peer != self.node:
            return True
        vanished = self._vanished(peer, source)
        if vanished is None:
            self.counters["handed_refused"] += 1
            return False
        self.mark_gone(vanished, now)
        return True

    def check_adopt(self, peer: str, header: list[Any], now: float,
                    gone: str = "") -> list[list[Any]]:  # fmt: skip
        """The records of ``ADOPT`` ``header`` (``[node, records, handed_back, source]``)
        from host ``peer`` that rule 3 lets this worker take; the rest are counted. With a
        fifth element, a worker of ours, the records are to be kept for it (rule 5): they
        must be that worker's in the view, as they would have to be ours (a state plane's
        view takes nothing else). ``gone``: a worker of ours that the caller itself saw
        vanish (a state plane), judged as if it were still in the view."""
        records = header[1]
        source = header[3] if len(header) > 3 else None
        target = header[4] if len(header) > 4 else self.me
        if not (peer and header[0] == peer and isinstance(source, str)):
            self.counters["adopt_refused_source"] += len(records)
            return []
        was_ours = bool(gone) and target == gone and host_of(gone) == self.node
        if not target or (target != self.me and target not in self._local and not was_ours):
            self.counters["adopt_refused_owner"] += len(records)
            return []
        vanished = None
        if source != host_source(peer) or peer == self.node:
            vanished = self._vanished(peer, source)
            if vanished is None:
                self.counters["adopt_refused_source"] += len(records)
                return []
            self.mark_gone(vanished, now)
        view = self.view()
        if was_ours and target not in view:
            view[target] = ""
        now_ring = WorkerSet.fixed(view) if was_ours else self.ring()
        before = WorkerSet.fixed({**view, vanished: ""} if vanished else
                                 {i: ep for i, ep in view.items() if i != target})  # fmt: skip
        out = []
        for rec in records:
            if not rec or now_ring.owner(_cid(rec[0])) != target:
                self.counters["adopt_refused_owner"] += 1
                continue
            was = before.owner(_cid(rec[0]))
            if was is None or (was != vanished if vanished else host_of(was) != peer):
                self.counters["adopt_refused_origin"] += 1
                continue
            out.append(rec)
        return out


def ring_pairs(view: dict[str, str]) -> list[list[str]]:
    """``[[ident, endpoint], ...]``: a view's remote part as a worker sends it to its state
    plane (a ``["ring", worker, pairs]`` delta), sorted so equal views send equal lists."""
    return [[i, ep] for i, ep in sorted(view.items())]


def pairs_ring(pairs: object, limit: int = MAX_WORKERS) -> dict[str, str] | None:
    """The inverse of ``ring_pairs`` for what a worker sent, or None when it is not a list
    of at most ``limit`` ``[ident, endpoint]`` string pairs."""
    if not isinstance(pairs, list) or len(pairs) > limit:
        return None
    out: dict[str, str] = {}
    for p in pairs:
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)):
            return None
        out[p[0]] = p[1]
    return out
