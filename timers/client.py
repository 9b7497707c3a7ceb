"""The worker's end of the timer service: arm, cancel, refresh; fires come back deduplicated.

Rules (docs/timers.md):
1. The client is the source of truth for what its worker armed: it keeps a compact armed set
   ``key -> Armed(deadline, kind, payload, gen, shard)`` and the service holds a copy. Nothing
   is persisted: when a timers process appears, vanishes or is replaced (kill -9 and restart),
   the client re-sends to each key's shard what it holds there, so no timer is lost.
2. A key goes to the live timers process with the highest rendezvous score (``WorkerSet``
   over the ``timers-*.ipc`` files whose pid is alive, scanned every heartbeat). When the set
   changes, keys whose shard changed move: cancel at the old shard if it lives, arm at the
   new one. The move runs in slices across loop iterations, never blocking the worker.
3. ``gen`` is the host-wide CLOCK_MONOTONIC ns of an arm, strictly increasing per client: it
   names one arm, and a newer arm of a key wins at the service whatever order messages arrive
   in. A cancel carries the gen it cancels.
4. Never twice: an own fire is delivered only while its key is armed with that gen, and then
   forgotten; a fire re-sent after a restart or a move finds nothing and is dropped. A fire of
   a timer armed by another worker (the owner changed) is delivered once per (armer, gen),
   remembered in a bounded recent set.
5. Ops leave ``[timers] ops_flush_ms`` after the first of them (0: at the end of the loop
   iteration that made them), in one message per shard; with ``defer`` (the worker's, when
   ``[bus] flush_ms`` batches its hop and ``ops_flush_ms`` is 0) they leave at its next bus flush instead, with its other
   sends (``workers/bus.py`` rule 3). The later op of a key replaces an earlier one still
   waiting. Each message costs a wake-up of the worker's ZeroMQ thread and of the service
   (~50 µs of CPU each, docs/benchmarks.md), and the timers armed here are dialog lifetimes
   of a second or more, so the wait costs their deadlines nothing; a worker that dies before
   its ops leave lost nothing the state plane's mirror does not re-arm. ``close`` sends what
   waits. A shard whose socket will not take its messages queues at most ``MAX_OUTBOX``, past
   which the client drops the queue and re-syncs that shard in full (a new epoch; the service
   drops what was not re-sent).
6. The client announces its worker to each timers process itself, on the socket that carries
   its ops: a heartbeat is the first message on a new shard's socket (and again after a
   re-sync drops the queue), one follows every heartbeat interval, and ``down`` is the last.
   One ZeroMQ pipe keeps order, so a service never holds an arm from a worker it has not
   heard of. (When the worker's bus announced it on a socket of its own, an arm could
   overtake the announcement; a service that knew only the other workers then fired it to a
   worker without the call, and told nobody: the lost BYE of docs/timers.md.)
7. A timer still armed here ``overdue_s`` past its deadline got neither its fire nor a
   ``done``: both went to a pipe the service closed (it took this worker for dead after a
   stall) or to a process that died. It is sent again, same gen, to its shard, which fires
   it if it no longer holds it and ignores it if it does (waiting for a worker, parked).
   Deadlines are filed by the second (``_due``), at most ``DUE_HORIZON_S`` ahead: a key whose
   deadline is further is filed at the horizon and filed again, at its deadline or the next
   horizon, when its slot comes up still armed; a re-arm to a later deadline keeps the slot it
   has (the dialog table's heap does the same, dialogstate/table.py rule 9). So a cancelled
   key leaves the list within the horizon, not at its deadline: filed there, every call's
   key stayed ~105 bytes for its lifetime after it ended (12 h by default: ~4.5 GB at 1 000
   calls/s; docs/benchmarks.md "Sixth sitting").
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import structlog
import zmq

from conf import envelope, sockets
from conf.settings import Settings
from conf.workerset import WorkerSet
from timers import wire

log = structlog.get_logger()

#: entries examined per loop iteration while moving keys between shards (~1 µs each)
REROUTE_SLICE = 20_000
#: messages queued for one shard that will not take them; then a full re-sync (rule 5)
MAX_OUTBOX = 1024
#: foreign fires remembered against duplicates (rule 4): minutes of owner changes
RECENT_MAX = 65_536
#: the width of the overdue check's deadline buckets (rule 7)
DUE_BUCKET_S = 1.0
#: how far ahead a key is filed for the overdue check at most (rule 7): an armed key costs a
#: re-filing per minute; an ended call's key is let go of within a minute
DUE_HORIZON_S = 60.0
#: keys examined per heartbeat by the overdue check (~0.2 µs each)
OVERDUE_SLICE = 20_000
_MOVED = None  # what the key mover yields when it has no slice left: next(..., _MOVED)


#: an armed-set entry: ``(deadline, kind, payload, gen, shard)``, shard "" while there is
#: none. A plain tuple of atomic values, which the garbage collector untracks
#: (timers/schedule.py rule 4): a worker holding a million must not pay for them in every
#: full collection
Armed = tuple[float, str, bytes, int, str]
DEADLINE: Final = 0
KIND: Final = 1
PAYLOAD: Final = 2
GEN: Final = 3
SHARD: Final = 4


@dataclass(frozen=True, slots=True)
class Fired:
    """A timer that expired, handed to the worker. ``armer`` is the worker that armed it:
    another worker's when ownership of the key moved here since."""

    key: str
    kind: str
    deadline: float
    payload: bytes
    armer: str


OnFire = Callable[[list[Fired]], None]


@dataclass(slots=True)
class _Shard:
    ident: str
    sock: zmq.Socket[bytes]
    epoch: int = 1
    arms: dict[str, list[Any]] = field(default_factory=dict)
    cancels: dict[str, int] = field(default_factory=dict)
    outbox: deque[list[bytes]] = field(default_factory=deque)
    syncing: bool = False  # the next flush ends a full re-sync


class TimerClient:
    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], settings: Settings, worker_id: str,
                 on_fire: OnFire) -> None:  # fmt: skip
        self.worker_id = worker_id
        self.counters: Counter[str] = Counter()
        self._ctx, self._on_fire = ctx, on_fire
        self._run_dir = settings.node.run_dir
        self._endpoint = sockets.endpoint(self._run_dir, "worker", worker_id)  # where fires come
        self._hwm = settings.bus.hwm
        self._period_s = settings.bus.heartbeat_ms / 1000
        #: past its deadline by this, an armed timer was lost on its way back (rule 7): two
        #: of the service's liveness windows, so a fire or done in flight gets there first
        self.overdue_s = 2 * settings.bus.liveness * self._period_s
        #: deadline bucket -> keys armed due in it, to check once it is overdue (rule 7)
        self._due: dict[int, list[str]] = {}
        self._due_next = int(time.monotonic() / DUE_BUCKET_S)
        self._horizon = int(DUE_HORIZON_S / DUE_BUCKET_S)
        self._armed: dict[str, Armed] = {}
        self._shards: dict[str, _Shard] = {}
        self._ring = WorkerSet(self._period_s, 1)  # membership from run-dir scans, not beats
        self._recent: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._last_gen = 0
        self._dirty: set[str] = set()
        self._loop = asyncio.get_running_loop()
        #: rule 5: how long ops wait to leave together
        self._flush_s = settings.timers.ops_flush_ms / 1000
        self._flush_handle: asyncio.Handle | None = None
        #: rule 5: asks the owner for a ``flush`` soon; None flushes at the end of the iteration
        self.defer: Callable[[], None] | None = None
        self._moving: Iterator[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick()

    # -- the worker's API ----------------------------------------------------------------

    def arm(self, key: str, deadline: float, kind: str, payload: bytes = b"") -> None:
        """Fire ``key`` at ``deadline`` (a ``time.monotonic()`` value), replacing any timer
        the key had. Raises ValueError for a key, kind or payload over ``timers.wire`` limits."""
        wire.check_timer(key, kind, payload)
        gen = self._next_gen()
        shard = self._ring.owner(key.encode()) or ""
        entry = (deadline, kind, payload, gen, shard)
        old = self._armed.get(key)
        self._armed[key] = entry
        if old is None or deadline < old[DEADLINE]:  # a later one keeps its slot (rule 7)
            self._file_due(key, deadline)
        if shard:
            self._queue_arm(self._shards[shard], key, entry)

    def refresh(self, key: str, deadline: float) -> bool:
        """Move an armed timer's deadline (Session-Expires); False if ``key`` is not armed."""
        entry = self._armed.get(key)
        if entry is None:
            return False
        self.arm(key, deadline, entry[KIND], entry[PAYLOAD])
        return True

    def cancel(self, key: str) -> bool:
        """Disarm ``key``. True if this worker had armed it; False means the cancel went to the
        service for a timer another worker armed (the key's owner moved here), if any."""
        entry = self._armed.pop(key, None)
        if entry is not None:
            if entry[SHARD] in self._shards:
                self._queue_cancel(self._shards[entry[SHARD]], key, entry[GEN])
            return True
        shard = self._ring.owner(key.encode())
        if shard is not None:  # cancel whatever was armed before now, by anyone
            self._queue_cancel(self._shards[shard], key, self._next_gen())
        return False

    def __contains__(self, key: str) -> bool:
        return key in self._armed

    def __len__(self) -> int:
        return len(self._armed)

    def deadline(self, key: str) -> float | None:
        entry = self._armed.get(key)
        return None if entry is None else entry[DEADLINE]

    @property
    def shards(self) -> list[str]:
        return sorted(self._shards)

    # -- fires from the service (the worker's bus hands TIMER envelopes here) ------------

    def receive(self, header: list[Any], payloads: list[bytes]) -> None:
        """Take one TIMER envelope: forget what is done elsewhere, deliver what fired."""
        fired: list[Fired] = []
        for meta, payload in zip(header[1], payloads):
            try:
                op, key, kind, deadline, armer, gen = meta
                if not (type(key) is str and type(kind) is str and type(armer) is str
                        and type(gen) is int and type(deadline) in (int, float)):  # fmt: skip
                    raise TypeError("a timer meta's values")  # the owner would trip on them
                if op == wire.OP_FIRE:
                    f = self._accept(key, kind, deadline, armer, gen, payload)
                    if f is not None:
                        fired.append(f)
                elif op == wire.OP_DONE:
                    self._forget(key, gen)
            except (TypeError, ValueError):
                self.counters["drop_bad_timer"] += 1
        if fired:
            self.counters["fired"] += len(fired)
            self._on_fire(fired)

    def _accept(self, key: str, kind: str, deadline: float, armer: str, gen: int,
                payload: bytes) -> Fired | None:  # fmt: skip
        mine = self._armed.get(key)
        if armer == self.worker_id:
            if mine is None or mine[GEN] != gen:  # cancelled, refreshed, or fired already
                self.counters["fire_duplicate"] += 1
                return None
            del self._armed[key]
        elif (mine is not None and mine[GEN] > gen) or (armer, gen) in self._recent:
            self.counters["fire_duplicate"] += 1
            return None
        else:
            self._recent[(armer, gen)] = None
            if len(self._recent) > RECENT_MAX:
                self._recent.popitem(last=False)
        return Fired(key, kind, deadline, payload, armer)

    def _forget(self, key: str, gen: int) -> None:
        entry = self._armed.get(key)
        if entry is not None and entry[GEN] == gen:
            del self._armed[key]
            self.counters["done_elsewhere"] += 1

    # -- ops out -------------------------------------------------------------------------

    def _next_gen(self) -> int:
        self._last_gen = max(self._last_gen + 1, time.monotonic_ns())
        return self._last_gen

    def _queue_arm(self, shard: _Shard, key: str, e: Armed) -> None:
        shard.cancels.pop(key, None)
        shard.arms[key] = [key, e[DEADLINE], e[KIND], e[PAYLOAD], e[GEN]]
        self._mark(shard)

    def _queue_cancel(self, shard: _Shard, key: str, gen: int) -> None:
        shard.arms.pop(key, None)
        shard.cancels[key] = gen
        self._mark(shard)

    def _mark(self, shard: _Shard) -> None:
        self._dirty.add(shard.ident)
        if self.defer is not None:
            self.defer()
        elif self._flush_handle is None:
            self._flush_handle = (self._loop.call_later(self._flush_s, self.flush)
                                  if self._flush_s > 0 else self._loop.call_soon(self.flush))  # fmt: skip

    def flush(self) -> None:
        """Send the ops that wait, one message per shard (per MAX_OPS_PER_MSG): rule 5."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()  # called early (close, a bus flush): not again when due
            self._flush_handle = None
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for ident in dirty:
            shard = self._shards.get(ident)
            if shard is not None:
                self._send_ops(shard)

    def _send_ops(self, shard: _Shard) -> None:
        arms, cancels = list(shard.arms.values()), list(shard.cancels.items())
        shard.arms, shard.cancels = {}, {}
        n = wire.MAX_OPS_PER_MSG
        steps = max(1, -(-max(len(arms), len(cancels)) // n))
        for i in range(steps):
            last = i == steps - 1
            header = [self.worker_id, shard.epoch, shard.syncing and last,
                      arms[i * n:(i + 1) * n], [list(c) for c in cancels[i * n:(i + 1) * n]]]
            self._send(shard, envelope.pack(envelope.KIND_TOPS, header))  # fmt: skip
        shard.syncing = False

    def _send(self, shard: _Shard, frames: list[bytes]) -> None:
        if not shard.outbox:
            try:
                shard.sock.send_multipart(frames, zmq.NOBLOCK)
                return
            except zmq.Again:
                pass
        shard.outbox.append(frames)
        if len(shard.outbox) > MAX_OUTBOX:
            log.warning("timers_shard_stuck", shard=shard.ident, queued=len(shard.outbox))
            shard.outbox.clear()
            self._resync(shard)

    def _drain(self, shard: _Shard) -> None:
        while shard.outbox:
            try:
                shard.sock.send_multipart(shard.outbox[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            shard.outbox.popleft()

    def _announce(self, shard: _Shard, state: str = "up") -> None:
        """Tell ``shard`` this worker is ``state`` and where it listens (rule 6), in line with
        the ops: queued behind them when the socket will not take it now."""
        self._send(shard, envelope.pack(envelope.KIND_HB, [self.worker_id, self._endpoint, state]))

    def _resync(self, shard: _Shard) -> None:
        """Re-send everything this shard holds of ours under a new epoch (rule 5)."""
        self._announce(shard)  # the dropped queue may have held the only heartbeat (rule 6)
        shard.epoch += 1
        shard.arms, shard.cancels = {}, {}
        for key, e in self._armed.items():
            if e[SHARD] == shard.ident:
                shard.arms[key] = [key, e[DEADLINE], e[KIND], e[PAYLOAD], e[GEN]]
        shard.syncing = True
        self._mark(shard)

    # -- shards --------------------------------------------------------------------------

    def _file_due(self, key: str, deadline: float) -> None:
        b = max(min(int(deadline / DUE_BUCKET_S), self._due_next + self._horizon), self._due_next)
        keys = self._due.get(b)
        if keys is None:
            self._due[b] = [key]
        else:
            keys.append(key)

    def _check_overdue(self, now: float) -> None:
        """Re-send, same gen, what is still armed ``overdue_s`` past its deadline (rule 7);
        at most OVERDUE_SLICE keys per call, the rest on the next heartbeat."""
        last = int((now - self.overdue_s) / DUE_BUCKET_S)  # buckets before it are overdue
        budget = OVERDUE_SLICE
        while self._due_next < last and budget > 0:
            keys = self._due.get(self._due_next)
            if not keys:
                self._due.pop(self._due_next, None)
                self._due_next += 1
                continue
            while keys and budget > 0:
                key = keys.pop()
                budget -= 1
                e = self._armed.get(key)
                if e is None:
                    continue  # fired or cancelled: let go of
                if e[DEADLINE] > now - self.overdue_s:
                    self._file_due(key, e[DEADLINE])  # filed at the horizon, or re-armed later
                    continue
                if e[SHARD] in self._shards:
                    self._queue_arm(self._shards[e[SHARD]], key, e)
                    self.counters["resent_overdue"] += 1
                self._file_due(key, now)  # and again later, if this one is lost too

    def _tick(self) -> None:
        """Every heartbeat: find timers processes, move keys if they changed, drain queues,
        and say we are alive to every shard whose socket takes messages (rule 6; a heartbeat
        queued behind a stuck queue would tell nothing new)."""
        self._tick_handle = self._loop.call_later(self._period_s, self._tick)
        live = sockets.live_endpoints(self._run_dir, "timers")
        if live.keys() != self._shards.keys():
            self._update_shards(live)
        for shard in self._shards.values():
            self._drain(shard)
            if not shard.outbox:
                self._announce(shard)
        self._check_overdue(time.monotonic())

    def _update_shards(self, live: dict[str, str]) -> None:
        now = self._loop.time()
        for ident in [i for i in self._shards if i not in live]:
            self._ring.heartbeat(ident, "", False, now)
            self._shards.pop(ident).sock.close(linger=0)
            log.info("timers_shard_gone", shard=ident)
        for ident, ep in live.items():
            if ident not in self._shards:
                self._ring.heartbeat(ident, ep, True, now)
                shard = self._shards[ident] = _Shard(ident, sockets.connect_push(self._ctx, ep,
                                                                                   self._hwm))
                self._announce(shard)  # before any op (rule 6)
                log.info("timers_shard_found", shard=ident)
        self._moving = self._move_keys()  # a newer change restarts the move from the top
        self._loop.call_soon(self._step_move, self._moving)

    def _step_move(self, moving: Iterator[None]) -> None:
        if moving is not self._moving:
            return  # superseded by a newer shard change
        if next(moving, _MOVED) is _MOVED:
            self._moving = None
            return
        self._loop.call_soon(self._step_move, moving)

    def _move_keys(self) -> Iterator[None]:
        items = list(self._armed.items())
        moved = 0
        for i in range(0, len(items), REROUTE_SLICE):
            for key, e in items[i : i + REROUTE_SLICE]:
                if self._armed.get(key) is e and self._move(key, e):
                    moved += 1
            yield
        log.info("timers_rearmed", moved=moved, armed=len(self._armed), shards=len(self._shards))

    def _move(self, key: str, e: Armed) -> bool:
        new = self._ring.owner(key.encode()) or ""
        if new == e[SHARD]:
            return False
        old = self._shards.get(e[SHARD])
        if old is not None:
            self._queue_cancel(old, key, e[GEN])
        e = self._armed[key] = (e[DEADLINE], e[KIND], e[PAYLOAD], e[GEN], new)
        if new:
            self._queue_arm(self._shards[new], key, e)
        return True

    def close(self) -> None:
        """Send what is queued, then ``down``, and close. Armed timers stay armed at the
        service: they fire to the keys' next owners."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        self._moving = None
        self.flush()
        for shard in self._shards.values():
            self._drain(shard)
            self._announce(shard, "down")  # after our last ops, on their pipe (rule 6)
            self._drain(shard)
            shard.sock.close(linger=sockets.LINGER_MS)
        self._shards.clear()
