"""A batching, bounded PUSH pipe to one peer process; both ends of the ZeroMQ hop use it.

Rules:
1. Messages added during one loop iteration leave in one multipart send (a batch): measured,
   that halves the cost per message. The owner calls ``flush`` once per iteration, or, for
   the hop between ingress and worker, ``[bus] flush_ms`` after the batch's first message
   (``ingress/bus.py`` rule 5, ``workers/bus.py`` rule 3). A batch that reaches
   ``max_batch`` leaves at once, through the owner's ``on_full`` when it set one.
2. A send that raises ``zmq.Again`` keeps its batch, in order, in a backlog of at most
   ``max_backlog`` messages, drained when the socket signals POLLOUT. ``add`` refuses (returns
   False) while the backlog is full: the caller sheds, nothing grows without bound.
3. ZeroMQ's FD is edge-triggered: after registering for it we look once more, since the edge
   may have passed before we registered.
4. Frames go through the Cython socket methods with int flags (``send_frames``,
   ``recv_frames``), not pyzmq's ``send_multipart``/``recv_multipart``: the sugar layer
   type-checks every frame, builds enum flags in Python and wraps each frame in a Python call,
   measured ~4 µs more per 3-frame send and ~2 µs more per receive (bench/hop.py), on every
   batch at both ends of every hop. The semantics are the same: a multipart message is
   all-or-nothing, only its first frame can raise ``zmq.Again``. Whether a frame has another
   after it is the frame's own ``more``, not ``Socket.get(RCVMORE)``, which builds an enum in
   Python per call (~0.9 µs a frame, on every message of the hop).
5. What a pipe reports (``hop``): its backlog depth, the age of the oldest message in the
   backlog and the messages it has sent. A batch is stamped (``loop.time()``) only when it
   joins the backlog, the slow path: a batch ZeroMQ takes at once costs no clock read. What
   ZeroMQ itself holds (up to ``hwm`` batches, and the kernel's socket buffer) is not visible
   to the sender; the receiver's own figure covers it (the worker's ``queue_delay_max_ms``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import structlog
import zmq

from conf import envelope, refused, sockets
from conf.bustcp import MAX_WORKERS
from conf.guard import GUARD
from conf.refused import RefusalLog
from conf.settings import Bus
from conf.workerset import WorkerSet

if TYPE_CHECKING:
    from conf.bustcp import TcpHop

log = structlog.get_logger()

MakeHeader = Callable[[list[Any]], Any]
OnEnvelope = Callable[[envelope.Envelope], None]

#: messages handled per readable callback before yielding to the loop, so timers (heartbeats!)
#: and other sockets get their turn: at ~50 µs a message this is ~25 ms
DRAIN_LIMIT = 512

# The Cython methods under zmq.Socket, and their flags as plain ints (enum arithmetic runs in
# Python): see rule 4.
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
_get = zmq.backend.Socket.get
_NOBLOCK = int(zmq.NOBLOCK)
_MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def send_frames(sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
    """``sock.send_multipart(frames, zmq.NOBLOCK)``, without pyzmq's Python layer.

    Raises:
        zmq.Again: the socket would block; nothing of the message was queued.
    """
    last = len(frames) - 1
    for i in range(last):
        _send(sock, frames[i], _MORE_NOBLOCK)
    _send(sock, frames[last], _NOBLOCK)


def recv_frames(sock: zmq.Socket[bytes]) -> list[bytes]:
    """``sock.recv_multipart(zmq.NOBLOCK)``, without pyzmq's Python layer.

    Each frame is received as a ``zmq.Frame`` whose ``more`` (libzmq's ``zmq_msg_more``)
    says whether another frame of the message follows: ``Socket.get(RCVMORE)`` builds a
    ``SocketOption`` enum in Python on every call (~0.9 µs a frame, against ~0.6 for the
    frame object; rule 4). The bytes are copied out of each frame as ``copy=True`` would.

    Raises:
        zmq.Again: no message is waiting.
    """
    frame = _recv(sock, _NOBLOCK, False)
    frames = [frame.bytes]
    while frame.more:
        frame = _recv(sock, _NOBLOCK, False)
        frames.append(frame.bytes)
    return frames


async def woken(event: asyncio.Event, within_s: float) -> None:
    """Until ``event`` is set (it is cleared first) or ``within_s`` passed: a leaving bus's
    wait for the next ``LEFT`` or its next heartbeat (``ingress/bus.py`` rule 7,
    ``workers/bus.py`` rule 10)."""
    event.clear()
    try:
        async with asyncio.timeout(within_s):
            await event.wait()
    except TimeoutError:
        pass


def drain_pull(
    sock: zmq.Socket[bytes], on_envelope: OnEnvelope, counters: Counter[str]
) -> bool:
    """Receive and hand on envelopes until the socket is empty or the budget is spent.

    ZeroMQ's FD is edge-triggered, so a reader must drain until ``zmq.Again`` or until
    ``EVENTS`` says nothing more is readable; returns True when
    it stopped on the budget instead and must be called again soon. A malformed envelope is
    counted (``drop_bad_envelope``), logged and dropped.
    """
    if sock.closed:
        return False
    budget = DRAIN_LIMIT
    recv = recv_frames
    while budget > 0:
        try:
            frames = recv(sock)
        except zmq.Again:
            return False
        budget -= max(1, len(frames) - 2)
        try:
            env = envelope.unpack(frames)
        except envelope.EnvelopeError as exc:
            counters["drop_bad_envelope"] += 1
            refused.ENVELOPES.note(time.monotonic(), reason=str(exc)[:200])
            continue
        on_envelope(env)
        # ZeroMQ's own readiness (``EVENTS``, the check its docs give for the FD's edge):
        # 1.4 µs, where the receive that finds nothing raises ``zmq.Again`` for 3.8 (pyzmq
        # builds the exception in Python); a drain holds one or two batches at these rates
        if sock.closed or not cast(int, _get(sock, _EVENTS)) & _POLLIN:
            return False
    return True


class PushPipe:
    """Batches to one peer, with a bounded backlog for what ZeroMQ refused (rules 1-2, 5)."""

    __slots__ = (
        "backlog",
        "backlog_at",
        "backlog_msgs",
        "kind",
        "loop",
        "make_header",
        "max_backlog",
        "max_batch",
        "metas",
        "on_full",
        "payloads",
        "peer",
        "sent",
        "sock",
        "waiting",
    )  # fmt: skip

    def __init__(
        self,
        peer: str,
        sock: zmq.Socket[bytes],
        kind: bytes,
        make_header: MakeHeader,
        max_batch: int,
        max_backlog: int,
    ) -> None:
        self.peer = peer
        self.sock = sock
        self.kind = kind
        self.make_header = make_header
        self.max_batch = max_batch
        self.max_backlog = max_backlog
        self.metas: list[Any] = []
        self.payloads: list[bytes] = []
        #: rule 1: what sends a full batch (the owner's flush, so what must leave before the
        #: batch does); None: the pipe sends it alone
        self.on_full: Callable[[PushPipe], None] | None = None
        self.backlog: deque[list[bytes]] = deque()
        #: loop time each backlog batch joined it, in the same order (rule 5)
        self.backlog_at: deque[float] = deque()
        self.backlog_msgs = 0
        self.waiting = False
        self.loop = asyncio.get_running_loop()
        self.sent = 0

    def add(self, meta: Any, payload: bytes, limit: int = 0) -> bool:
        """Add one message to the current batch; False when the backlog holds ``limit``
        messages (default ``max_backlog``)."""
        if self.backlog_msgs >= (limit or self.max_backlog):
            return False
        self.metas.append(meta)
        self.payloads.append(payload)
        if len(self.metas) >= self.max_batch:
            if self.on_full is None:
                self.flush()
            else:
                self.on_full(self)
        return True

    def flush(self) -> None:
        if not self.metas:
            return
        frames = envelope.pack(self.kind, self.make_header(self.metas), self.payloads)
        n = len(self.metas)
        self.metas = []
        self.payloads = []
        self.sent += n
        self._send_or_queue(frames, n)

    def _send_or_queue(self, frames: list[bytes], msgs: int) -> None:
        """Send ``frames`` at once when nothing waits; else, or when the socket would block,
        queue them behind what waits (``msgs`` messages in them) until it takes them."""
        if not self.backlog:
            try:
                send_frames(self.sock, frames)
                return
            except zmq.Again:
                pass
        self.backlog.append(frames)
        self.backlog_at.append(self.loop.time())
        self.backlog_msgs += msgs
        if not self.waiting:
            self.waiting = True
            GUARD.add_reader(self.loop, self.sock.FD, "pipe_backlog", self.drain)

    def drain(self) -> None:
        """Send what the backlog holds, as far as the socket takes it."""
        if self.sock.closed:
            return
        while self.backlog:
            frames = self.backlog[0]
            try:
                send_frames(self.sock, frames)
            except zmq.Again:
                return
            self.backlog.popleft()
            self.backlog_at.popleft()
            self.backlog_msgs -= len(frames) - 2
        if self.waiting:
            self.waiting = False
            self.loop.remove_reader(self.sock.FD)

    def oldest_s(self, now: float) -> float:
        """Seconds the oldest message in the backlog has waited at ``now`` (0 when empty)."""
        return max(0.0, now - self.backlog_at[0]) if self.backlog_at else 0.0

    def hop(self, now: float) -> dict[str, float]:
        """This hop as ``load_stats`` and ``ctl stats`` show it (rule 5): ``queued`` messages
        in the backlog, ``oldest_ms`` the oldest one's wait, ``sent`` messages in total."""
        return {"queued": self.backlog_msgs, "oldest_ms": round(self.oldest_s(now) * 1000, 1),
                "sent": self.sent}  # fmt: skip

    def send_first(self, frames: list[bytes]) -> None:
        """Send a control message ahead of anything added after it: at once, or, when the
        socket would block (a TCP connection still in its handshake), at the head of what
        waits, so it still arrives before the batches that follow."""
        self.flush()
        self._send_or_queue(frames, 0)

    def send_now(self, frames: list[bytes]) -> bool:
        """Send a control message (heartbeat) outside the batch; False if it would block."""
        try:
            send_frames(self.sock, frames)
        except zmq.Again:
            return False
        return True

    def close(self, linger_ms: int = 0) -> int:
        """Close the socket; returns the number of messages that were never sent."""
        lost = self.backlog_msgs + len(self.metas)
        if self.waiting:
            self.loop.remove_reader(self.sock.FD)
            self.waiting = False
        self.sock.close(linger=linger_ms)
        return lost


def hops(pipes: Iterable[PushPipe], now: float) -> dict[str, dict[str, float]]:
    """``{peer: hop}`` of ``pipes`` at ``now`` (loop time; rule 5)."""
    return {p.peer: p.hop(now) for p in pipes}


def oldest_ms(hops: dict[str, dict[str, float]]) -> float:
    """The longest wait of any hop's oldest message, in ms (0 when nothing is queued)."""
    return max((h["oldest_ms"] for h in hops.values()), default=0.0)


class WorkerPipes:
    """A ``PushPipe`` to each live worker, kept in step with the workers' heartbeats: the
    ingress hands calls to workers and the timer service hands them fires the same way.

    ``heartbeat`` connects a pipe when a worker joins and closes it when the worker says
    ``down``; ``expire`` closes the pipes of workers whose heartbeats stopped and drains
    backlogs. What a closed pipe still held is counted as ``drop_worker_gone``. A worker that
    said ``down`` still reads until we let go of it: its pipe first sends the batch not yet
    flushed, then ``farewell()`` (the ingress's ``LEFT``, ``workers/bus.py`` rule 10), so the
    worker knows nothing more of ours follows; a backlog ZeroMQ has not taken yet keeps the
    pipe open (``closing``) until it drained or ``liveness`` heartbeats passed. A heartbeat
    whose endpoint is not the worker's canonical one in ``run_dir`` (``conf.sockets`` rule
    2), or, for one that came over TCP, not one ``tcp.worker_key`` allows (``conf.bustcp``
    rules 3-4), is ignored and counted as ``drop_bad_endpoint``: we never connect where a
    frame says. A new worker past ``bustcp.MAX_WORKERS`` is ignored too
    (``drop_too_many_workers``).
    """

    __slots__ = ("_cfg", "_counters", "_ctx", "_farewell", "_header", "_kind", "_on_close",
                 "_refused", "_run_dir", "closing", "pipes", "remote", "tcp", "workers")  # fmt: skip

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], cfg: Bus, run_dir: str, kind: bytes,
                 make_header: MakeHeader, counters: Counter[str],
                 on_close: Callable[[PushPipe], None] | None = None,
                 farewell: Callable[[], list[bytes]] | None = None) -> None:  # fmt: skip
        self.workers = WorkerSet(cfg.heartbeat_ms / 1000, cfg.liveness)
        self.pipes: dict[str, PushPipe] = {}
        self._ctx, self._cfg, self._kind, self._header = ctx, cfg, kind, make_header
        self._counters, self._on_close, self._run_dir = counters, on_close, run_dir
        self._refused = RefusalLog("heartbeat_refused")
        self._farewell = farewell
        #: pipes of workers that said ``down``, still sending their backlog: by when to close
        self.closing: dict[PushPipe, float] = {}
        #: the hop to other hosts (``conf.bustcp``), once the owner opened it
        self.tcp: TcpHop | None = None
        #: the workers that joined over TCP
        self.remote: set[str] = set()

    def heartbeat(self, ident: str, endpoint: str, state: str, now: float,
                  via_tcp: bool = False) -> str | None:  # fmt: skip
        """Record a worker's heartbeat (``via_tcp``: it came on the TCP socket); ``"joined"``
        or ``"left"`` when the set changed."""
        server_key = None
        bad = None
        if via_tcp:
            server_key = self.tcp.worker_key(ident, endpoint) if self.tcp is not None else None
            if server_key is None:
                bad = "endpoint not at its [[peer]] bus_address"
        elif not sockets.canonical(self._run_dir, "worker", ident, endpoint):
            bad = "endpoint outside the run directory"
        if bad is not None:
            self._counters["drop_bad_endpoint"] += 1
        elif ident not in self.workers and len(self.workers) >= MAX_WORKERS:
            self._counters["drop_too_many_workers"] += 1
            bad = f"more than {MAX_WORKERS} workers"
        if bad is not None:
            self._refused.note(now, reason=bad, worker=ident[:80], endpoint=endpoint[:200])
            return None
        if ident in self.workers and via_tcp != (ident in self.remote):
            return None  # one ident, two ways in: the first holds
        change = self.workers.heartbeat(ident, endpoint, state == "up", now)
        if change == "joined":
            if server_key is not None and self.tcp is not None:
                sock = self.tcp.connect_push(endpoint, server_key, self._cfg.hwm)
                self.remote.add(ident)
            else:
                sock = sockets.connect_push(self._ctx, endpoint, self._cfg.hwm)
            self.pipes[ident] = PushPipe(ident, sock, self._kind, self._header,
                                         self._cfg.max_batch, self._cfg.max_pending)  # fmt: skip
            log.info("worker_joined", worker=ident, workers=len(self.workers))
        elif change == "left":
            self.close(ident, sockets.LINGER_MS, farewell=True)
            log.info("worker_left", worker=ident, workers=len(self.workers))
        return change

    def expire(self, now: float) -> None:
        """Drop workers whose heartbeats stopped; call every heartbeat interval."""
        for w in self.workers.expire(now):
            self.close(w.ident)
            log.warning("worker_lost", worker=w.ident, workers=len(self.workers))
        for pipe in self.pipes.values():
            if pipe.backlog:
                pipe.drain()
        self.settle(now)

    def settle(self, now: float | None = None) -> None:
        """Close the ``closing`` pipes whose backlog drained or whose time is up (all of them
        without ``now``: we stop); what one still held is counted lost."""
        for pipe, deadline in list(self.closing.items()):
            pipe.drain()
            if now is None or not pipe.backlog or now >= deadline:
                del self.closing[pipe]
                lost = pipe.close(sockets.LINGER_MS if now is not None else 0)
                if lost:
                    self._counters["drop_worker_gone"] += lost

    def close(self, ident: str, linger_ms: int = 0, farewell: bool = False) -> None:
        """Close the pipe to ``ident``; what it still held is lost (and counted). A worker
        that said ``down`` still reads until we let go of it (``farewell``): the batch not
        yet flushed goes, then ``LEFT`` behind it. ``linger_ms`` lets what ZeroMQ queued for
        it leave (over TCP a send can sit in the queue for a while), after one more try at
        the backlog."""
        self.remote.discard(ident)
        pipe = self.pipes.pop(ident, None)
        if pipe is None:
            return
        if self._on_close is not None:
            self._on_close(pipe)
        if farewell:
            # the batch was handed to this worker while it was in the ring: dropping it lost
            # calls' messages (a TCP caller has no retransmission to make up for one)
            pipe.flush()
            if self._farewell is not None:
                pipe.send_first(self._farewell())
            pipe.drain()
            if pipe.backlog:  # it drains as the socket takes it; ``settle`` closes it
                timeout_s = self._cfg.heartbeat_ms / 1000 * self._cfg.liveness
                self.closing[pipe] = pipe.loop.time() + timeout_s
                return
        if linger_ms:
            pipe.drain()
        lost = pipe.close(linger_ms)
        if lost:
            self._counters["drop_worker_gone"] += lost
