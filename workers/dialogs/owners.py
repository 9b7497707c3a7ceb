"""Which worker owns each Call-ID as this worker sees it, and the dialogs that move when
that changes: the worker's end of docs/dialogs.md "Dialogs follow their Call-ID" (what is
held while they travel: ``handover.py``; the state plane's end: ``stateplane/handover.py``).

Rules:
1. The node's workers are re-read from the run directory every heartbeat, when a live
   ingress's ring changes, and at most every ``PEERS_RECHECK_S`` when a message needs a
   dialog we lack (an ingress may know of a change before our heartbeat). A worker gone
   (killed, or stopping: it removed its socket file first) means its dialogs come to their
   new owners from the state plane: a hand-over is expected from it (``handover.py`` rule 1).
   One back in the view before that hand-over was not gone (another host's worker whose
   heartbeats reached the edge late: it left the edge's ring for a second and came back
   with its dialogs): the wait for it ends at once. Before, every message needing a dialog
   we lack was held 15 s, as its host's state plane never says ``HANDED`` for a live worker.
2. Workers joined take the dialogs whose Call-IDs they own: those leave us silently (the
   state plane's mirror holds them), and a ``y`` marker each tells the state plane it may
   hand them over (``workers/dialogs/deltas.py`` rule 4); what still reaches us for them is
   passed on (rule 3). The requests we forwarded for those Call-IDs and that are still
   waiting for a final are given up quietly, dialogs or not (``StatefulProxy`` rule 12):
   their answers go to the joiner, and our Timer C would CANCEL a call answered meanwhile.
   Those still waiting on a job (a lookup, a resolution) go to the joiner when it answers
   (``pass_on``, rule 3).
3. A message needing a dialog we do not hold (``StatefulProxy`` rule 10) goes to the
   Call-ID's owner if that is another worker now (``FWD``, never passed on again), and waits
   here while a hand-over is expected (``handover.py`` rules 2-4). A request that would start
   a call (an INVITE outside a dialog) goes to the owner too, dialogs or not (``claim``), and
   is never held: an ingress routes by its own ring, which hears of a joined worker up to a
   heartbeat after we read it in the run directory, and a dialog started here after our ``y``
   marker for a Call-ID the joiner owns was in neither the hand-over nor the joiner: its BYE
   reached the joiner and went on statelessly, and the call ended with no CDR. Without
   dialogs the call's answers reached the joiner, and our Timer C sent a CANCEL and a 408
   (or a caller's retransmission met our given-up attempt's branch: a 482). A request a job
   held that answers after the Call-ID moved goes the same way (``pass_on``,
   ``StatefulProxy`` rule 13), even one that came forwarded: every hop goes to a worker
   that ranks higher for the Call-ID, so none comes back. The claim costs one rendezvous
   hash per initial INVITE (docs/dialogs.md).
4. With workers on several hosts (``dialogstate/hosts.py``) owners are decided over every
   host's workers: ours from the run directory, the others' from the edge's ring. Our state
   plane hears the other hosts' workers (a ``ring`` delta) before any ``y`` marker that
   follows from them, and only once a ring was heard: an empty list would take every other
   host's workers out of its view. What a worker host sends on our TCP socket
   (``workers/bus.py`` rule 8) is checked by ``dialogstate/hosts.py`` rule 3 before anything
   moves; a refusal is counted and logged aggregated.
5. ``ADOPT``: dialogs our state plane took over from a failed peer (docs/failover.md),
   restored from disk, or handed to us become ours, less those whose CDR is already written
   (``cdrfile.py``); their BYEs leave through one of our ingresses, TCP on a new connection.
   ``RELEASE``: a failback's dialogs, and after a lost split brain the keys the peer owns
   too, are let go so their lifetimes and CDRs happen once, there.
6. An ``ADOPT`` from another host that names a fifth element, a worker of ours, is a copy of
   what that host handed that worker: checked as if it were ours to take (rule 4), it goes
   to our state plane to keep (``workers/dialogs/deltas.py`` rule 7), never into our table.
   A worker of ours that left our view since (``LEFT_KEEP_S`` at most: the sender's view
   may still have it) is judged as the view was with it: our state plane hands what it
   keeps for it with its dialogs, or at once if those went already.
7. Out of the edge's ring and back (``back``, ``workers/bus.py`` rule 12): while the edge
   had dropped us the other hosts' workers, who see us only through its ring (rule 4),
   started the calls of our Call-IDs themselves; at our return they let go of them and
   their state planes hand them to us as to a joiner (``stateplane/handover.py`` rule 2),
   then say ``HANDED`` as ``stateplane@<host>``, dialogs or none. So from then we expect
   that from each other host in our view (``BACK_WAIT_S`` at most) and hold what needs a
   dialog we lack, as a joiner does: a BYE that reached us before its dialog went on
   statelessly, and that call's CDR came at its lifetime's end (cause ``expired``). Our
   own host's workers never saw us go: they read us in the run directory, where we stayed
   (rule 1), and ignore the ring's entries for our host.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from conf import envelope as env
from conf import sockets
from conf.guard import Throttle
from conf.settings import Settings
from conf.workerset import WorkerSet
from dialogstate.hosts import RING_SOURCE, HostView, ring_pairs
from dialogstate.sources import STATEPLANE, vanished_source
from workers.dialogs.handover import BACK_WAIT_S, Forward, HoldGate, Withheld

if TYPE_CHECKING:
    from ingress.sip.message import Request
    from workers.bus import IngressBus, OnBatch
    from workers.dialogs.cdrfile import CdrFile
    from workers.dialogs.deltas import DeltaLink
    from workers.dialogs.limits import SharedLimits
    from workers.proxy import Inbound
    from workers.stateful import StatefulProxy

#: a message that needs a dialog we lack re-reads the node's workers at most this often
PEERS_RECHECK_S = 0.02
#: rule 6: a worker of ours that left is remembered this long (as long as our state plane
#: keeps copies for one, ``stateplane/handover.py`` KEEP_S), at most ``MAX_LEFT`` of them
LEFT_KEEP_S = 30.0
MAX_LEFT = 1024

log = structlog.get_logger()

#: a held message: the ingress it came from, its meta, its bytes, whether it came forwarded
Held = tuple[str, list[Any], bytes, bool]


class Owners:
    """One worker's view of the workers (rules 1, 2, 4), what it holds or passes on (rule 3)
    and what the state plane or another host hands it (rules 4, 5). ``serve`` handles a batch
    as the worker does; ``after_core`` takes the core's events; ``share_probes`` is called
    when this host's workers changed (``host_workers``)."""

    def __init__(self, settings: Settings, worker_id: str, loop: asyncio.AbstractEventLoop,
                 counters: Counter[str], core: StatefulProxy | None, deltas: DeltaLink | None,
                 serve: OnBatch, after_core: Callable[[], None], share_probes: Callable[[], None],
                 cdrs: CdrFile | None = None, limits: SharedLimits | None = None) -> None:  # fmt: skip
        self.settings, self.worker_id, self.loop, self.counters = settings, worker_id, loop, counters
        self.core, self.deltas, self.cdrs, self.limits = core, deltas, cdrs, limits
        self._serve, self._after_core, self._share_probes = serve, after_core, share_probes
        #: set by the worker once its bus exists (the bus calls back into us)
        self.bus: IngressBus
        #: the node's workers as this one sees them in the run directory (or every host's)
        self.peers = WorkerSet.fixed({})
        #: this host's workers among them: probes are shared out among these (bustcp rule 6)
        self.host_workers: list[str] = []
        #: dialogs moving between workers (workers/dialogs/handover.py): what we wait for and hold
        self.gate = HoldGate()
        self._peers_read_at = -1.0
        #: the message in hand came forwarded (never again) / is served as it is (no holding)
        self._forwarded = self._unheld = False
        #: a state plane has told us HANDED (before that, a resync of ours says "fresh")
        self._plane_heard = False
        #: with workers on several hosts whose dialogs move (rule 4): every host's workers,
        #: ours from the run directory and the others' from the edge's ring
        self.hostview: HostView | None = None
        #: the first ring was heard (what a joiner expects from each host follows from it)
        self._ring_heard = False
        self._ring_told: dict[str, str] | None = None
        #: rule 6: workers of this host that left our view, and when
        self._left: dict[str, float] = {}
        self._drop_log = Throttle()
        if core is not None:  # rule 3: new calls go to their owner, dialogs or not
            core.claim, core.pass_on = self.claim, self.pass_on
        if core is not None and core.dialogs is not None:
            core.screen = self.screen
            if deltas is not None:  # restored or adopted dialogs come from the state plane
                self.gate.expect(STATEPLANE, loop.time())
                deltas.fresh = lambda: not self._plane_heard
                if settings.bus.address and settings.bus.ingresses:
                    self.hostview = HostView(settings.node.name, worker_id)
                    self.gate.expect(RING_SOURCE, loop.time())

    def heartbeat(self) -> None:
        self.refresh_peers()
        expired = self.gate.expire(self.loop.time())
        if expired:
            log.warning("handover_wait_expired", sources=expired, held=len(self.gate))
        self._release_held()

    def back(self) -> None:
        """Rule 7: an edge ingress may have dropped us from its ring and taken us back."""
        hv = self.hostview
        if hv is None or not self._ring_heard:
            return  # one host, or the first ring's own expectations cover it
        now = self.loop.time()
        sources = hv.first_ring()
        for source in sources:
            self.gate.expect(source, now, BACK_WAIT_S)
        self.counters["ring_back"] += 1
        log.warning("ring_back", waiting=self.gate.expected, held=len(self.gate))

    def stats(self) -> dict[str, Any]:
        out = self.gate.stats()
        if self.hostview is not None:
            out["hosts"] = {"workers": len(self.hostview.view()), **self.hostview.counters}
        return out

    def refresh_peers(self) -> None:
        """Rule 1: re-read the node's workers and share probing out among them; a worker
        gone means its dialogs come to their new owners from the state plane
        (workers/dialogs/handover.py rule 1)."""
        now = self.loop.time()
        self._peers_read_at = now
        found = sockets.live_endpoints(self.settings.node.run_dir, "worker")
        found.setdefault(self.worker_id, "")
        view = found if self.hostview is None else self._host_view(found, now)
        if set(view) == set(self.peers.idents):
            return
        known = set(self.peers.idents)
        moving = self.deltas is not None and self.core is not None and (
            self.core.dialogs is not None)  # fmt: skip
        for ident in known - set(view) - {self.worker_id}:
            if moving:
                self.gate.expect(vanished_source(ident), now)
            self.bus.forget_worker(ident)
            if self.hostview is not None and ident in self.host_workers:
                self._note_left(ident, now)
        self.peers = WorkerSet.fixed(view)
        joined = set(view) - known - {self.worker_id}
        for ident in joined:
            if self.gate.cancel(vanished_source(ident)):
                log.info("handover_wait_cancelled", worker=ident, waiting=self.gate.expected)
        if joined and self.core is not None:
            self._let_calls_go(joined, now)
        if moving and joined:
            self._let_joiners_take(joined)
        # probes are shared out among this host's workers (conf/bustcp.py rule 6)
        self.host_workers = sorted(found)
        self._share_probes()

    def _note_left(self, ident: str, now: float) -> None:
        """Rule 6: ``ident``, a worker of this host, left our view at ``now``."""
        for old in [i for i, at in self._left.items() if now - at > LEFT_KEEP_S]:
            del self._left[old]
        if len(self._left) >= MAX_LEFT:
            del self._left[min(self._left, key=self._left.__getitem__)]
        self._left[ident] = now

    def _host_view(self, found: dict[str, str], now: float) -> dict[str, str]:
        """Every host's workers (dialogstate/hosts.py rule 1); on the first ring heard, the
        hosts whose state planes owe us the dialogs we take (rule 2 there); our state plane
        hears the other hosts' workers before any ``y`` marker that follows from them."""
        hv = self.hostview
        assert hv is not None and self.deltas is not None
        hv.set_local(found)
        if self.bus.ring() is None:
            # no ring heard yet (or none live): tell the state plane nothing, since an empty
            # list would take every other host's workers out of its view and send the
            # dialogs it hands meanwhile to ours alone
            return hv.view()
        hv.set_ring(self.bus.ring_endpoints(), now)
        if not self._ring_heard:
            self._ring_heard = True
            for source in hv.first_ring():
                self.gate.expect(source, now)
            self.gate.handed(RING_SOURCE, now)
        remote = hv.remote()
        if remote != self._ring_told:
            self._ring_told = remote
            self.deltas.ring(ring_pairs(remote))
        return hv.view()

    def _let_calls_go(self, joined: set[str], now: float) -> None:
        """Rule 2: the requests in progress whose Call-IDs the joined workers own are given up
        quietly (``StatefulProxy`` rule 12): their answers, CANCEL and ACK go there now."""
        assert self.core is not None
        owner = self.peers.owner

        def moved(call_id: str) -> bool:
            return owner(call_id.encode("utf-8", "surrogateescape")) in joined

        n = self.core.let_calls_go(moved, now)
        if n:
            log.info("calls_let_go", joined=sorted(joined), calls=n)

    def _let_joiners_take(self, joined: set[str]) -> None:
        """Rule 2: the dialogs whose Call-IDs the joined workers own leave us silently."""
        assert self.core is not None and self.core.dialogs is not None
        assert self.deltas is not None
        table, owner = self.core.dialogs, self.peers.owner
        keys = [k for k in table.keys()  # noqa: SIM118 (a DialogTable is not iterable)
                if owner(k.partition("\0")[0].encode("utf-8", "surrogateescape")) in joined]  # fmt: skip
        n = table.let_go(keys)
        for ident in sorted(joined):
            self.deltas.yielded(ident)
        if n:
            log.info("dialogs_let_go", joined=sorted(joined), dialogs=n)

    def screen(self, call_id: str) -> None:
        """``StatefulProxy`` rule 10, our rule 3: raises ``Forward`` or ``Withheld``."""
        if self._unheld:
            return
        if self.loop.time() - self._peers_read_at > PEERS_RECHECK_S:
            self.refresh_peers()  # an ingress may know of a change before our heartbeat
        if not self._forwarded:
            owner = self._owner_elsewhere(call_id)  # the view is fresh: no second re-read
            if owner is not None:
                raise Forward(owner)
        if self.gate.pending():
            raise Withheld

    def claim(self, call_id: str) -> None:
        """``StatefulProxy`` rule 10, our rule 3: raises ``Forward`` when a request that would
        start a call here belongs to another worker."""
        if self._forwarded or self._unheld:
            return
        owner = self._owner_elsewhere(call_id)
        if owner is not None:
            raise Forward(owner)

    def pass_on(self, req: Request, inb: Inbound) -> bool:
        """``StatefulProxy`` rule 13, our rule 3: a request a job held (a lookup, a resolution,
        an HA1 read) goes to its Call-ID's owner as a ``FWD`` if that is another worker now;
        False when it is ours or the ``FWD`` could not leave. A request that came forwarded
        may go on again: each hop is to a worker that ranks higher for the Call-ID (rendezvous
        hashing orders the workers per key, ``conf/workerset.py``), so it never comes back."""
        owner = self._owner_elsewhere(req.call_id)
        if owner is None:
            return False
        meta = [inb.transport, inb.src_ip, inb.src_port, inb.conn, inb.local_ip, inb.local_port,
                time.monotonic()]  # fmt: skip
        return self.forward(owner, inb.ingress, meta, req.raw)

    def _owner_elsewhere(self, call_id: str) -> str | None:
        """The worker other than us that owns ``call_id`` in our view, or None. A joiner is in
        our view from before its hand-over (our ``y`` marker followed from it); the view is
        re-read only before passing a request on (one that stopped may have left it), not
        for every new call."""
        key = call_id.encode("utf-8", "surrogateescape")
        owner = self.peers.owner(key)
        if owner is None or owner == self.worker_id:
            return None
        if self.loop.time() - self._peers_read_at > PEERS_RECHECK_S:
            self.refresh_peers()
            owner = self.peers.owner(key)
        return owner if owner is not None and owner != self.worker_id else None

    def hold(self, ingress: str, meta: list[Any], raw: bytes) -> None:
        """A message ``screen`` withheld: its dialog is on its way here."""
        oldest = self.gate.hold((ingress, meta, raw, self._forwarded))
        if oldest is not None:
            self._serve_held(oldest, unheld=True)

    def forward(self, owner: str, ingress: str, meta: list[Any], raw: bytes) -> bool:
        """Pass one message on to the worker that owns its Call-ID (``FWD``, never again);
        False (counted) when it could not leave."""
        try:
            ep = self.peers.endpoint(owner)
        except KeyError:
            self.counters["drop_forward_gone"] += 1
            return False
        return self.bus.forward(owner, ep, ingress, meta, raw)

    def on_forward(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        self._forwarded = True
        try:
            self._serve(ingress, metas, payloads)
        finally:
            self._forwarded = False

    def on_host(self, peer: str, e: env.Envelope) -> None:
        """Rule 4: what a worker host sent on our TCP socket, from ``peer`` as its CURVE key
        says."""
        hv, counters, now = self.hostview, self.counters, self.loop.time()
        if hv is None:
            counters["drop_host_unknown"] += 1
            return
        if e.kind == env.KIND_HANDED:
            if e.header[1] != self.worker_id or not hv.check_handed(peer, e.header[0], now):
                counters["drop_host_handed"] += 1
                self._host_refused(peer, "handed", e.header[0])
                return
            self.refresh_peers()  # a vanished worker's mark (hosts.py rule 4) changes the view
            self.on_handed(e.header)
        elif e.kind == env.KIND_ADOPT:
            if len(e.header) > 4:
                self.refresh_peers()  # rule 6: the owner may have joined since our heartbeat
            left = e.header[4] if len(e.header) > 4 else ""
            gone = left if now - self._left.get(left, -LEFT_KEEP_S - 1) <= LEFT_KEEP_S else ""
            records = hv.check_adopt(peer, e.header, now, gone)
            if len(records) < len(e.header[1]):
                counters["drop_host_records"] += len(e.header[1]) - len(records)
                self._host_refused(peer, "adopt", e.header[3] if len(e.header) > 3 else None)
            if len(e.header) > 4:  # rule 6: to keep for another worker of ours
                if records and self.deltas is not None:
                    self.deltas.keep(e.header[4], records)
                return
            self.refresh_peers()
            if records:
                self.on_adopt([peer, records, True])
        elif e.header[0] not in self.bus.ingresses:  # a FWD names an ingress we serve
            counters["drop_host_forward"] += 1
            self._host_refused(peer, "forward", e.header[0])
        else:
            self.on_forward(e.header[0], e.header[1], e.payloads)

    def _host_refused(self, peer: str, what: str, source: object) -> None:
        since = self._drop_log.hit("host_" + what)
        if since is not None:
            log.warning("host_handover_refused", peer=peer, kind=what, source=str(source)[:120],
                        since_last_log=since + 1, counts=dict(self.hostview.counters)
                        if self.hostview is not None else {})  # fmt: skip

    def on_handed(self, header: list[Any]) -> None:
        """A source sent every dialog it owed us (workers/dialogs/handover.py rule 1)."""
        source, to = header
        if to != self.worker_id:
            self.counters["drop_handed_not_ours"] += 1
            return
        self.gate.handed(source, self.loop.time())
        self._plane_heard = self._plane_heard or source == STATEPLANE
        log.info("handover_received", source=source, waiting=self.gate.expected,
                 held=len(self.gate))  # fmt: skip
        self._release_held()

    def _release_held(self) -> None:
        """handover.py rule 4: once nothing is expected, serve what was held, by the
        Call-ID's owner now."""
        for item in self.gate.take_released():
            self._serve_held(item)

    def _serve_held(self, item: Held, unheld: bool = False) -> None:
        ingress, meta, raw, forwarded = item
        self._forwarded, self._unheld = forwarded, unheld
        try:
            self._serve(ingress, [meta], [raw])
        finally:
            self._forwarded = self._unheld = False

    def on_adopt(self, header: list[Any]) -> None:
        """Rule 5: dialogs our state plane took over from a failed peer (docs/failover.md),
        restored from disk after a restart, or handed to us: they become ours; their BYEs
        leave through one of our ingresses, TCP on a new connection (the old connection ids
        mean nothing now)."""
        core = self.core
        if core is None or core.dialogs is None or len(header) > 4:  # a copy to keep: TCP only
            self.counters["drop_adopt"] += len(header[1])
            return
        ingress = self.bus.any_ingress()

        def place(side: Any) -> Any:
            meta = list(side[1])
            meta[env.OUT_CONN] = 0
            return (ingress or side[0], tuple(meta))

        records = header[1]
        if len(header) > 2 and header[2]:
            # a hand-over between live workers: a dialog held here already is the newer
            # copy (a kept copy handed on late, stateplane/handover.py rule 6), never replaced
            dialogs = core.dialogs
            records = [r for r in records if not (
                isinstance(r, list) and len(r) > 1 and isinstance(r[0], str)
                and isinstance(r[1], str) and r[0] + "\0" + r[1] in dialogs)]  # fmt: skip
            self.counters["adopt_held"] += len(header[1]) - len(records)
        if self.cdrs is not None:
            records = self.cdrs.already_written(records, core.dialogs, self.counters)
        n = core.dialogs.adopt(records, self.loop.time(), time.time(), place)
        if self.limits is not None and not (len(header) > 2 and header[2]):
            # a dead node's counts are ours now, never twice; a live one handing calls back
            # keeps its others, and its next update takes the handed ones off its counts
            self.limits.forget_node(header[0])
        log.info("dialogs_adopted", peer=header[0], dialogs=n)
        self._after_core()

    def on_release(self, header: list[Any]) -> None:
        """Rule 5: dialogs to let go (docs/failover.md): a failback's, reached on these
        addresses (the peer adopts them from its replica of us), and after a lost split brain
        the keys the peer owns too (so their lifetimes and CDRs happen once, there)."""
        core = self.core
        if core is None or core.dialogs is None:
            return
        wall = time.time()
        n = sum(core.dialogs.release(addr, wall) for addr in header[1])
        n += core.dialogs.release_keys(header[2], wall, "peer_owns")
        log.info("dialogs_handed_back", addresses=header[1], keys=len(header[2]), dialogs=n)
        self._after_core()
