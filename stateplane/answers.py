"""The snapshot ROUTER's answers (``replication.py`` rule 2): each ``ICANHAZ`` admitted gets
``snapshot.serve``'s answer, sent one message per answer per loop turn so heartbeats and deltas
keep flowing during a big sync. Who may ask, how often, and when an asker that stops reading
loses its answer: ``asks.py``.

Rules:
1. The ROUTER is mandatory-routing: a full pipe to the asker keeps that answer's message for
   later instead of dropping a chunk silently (the asker would otherwise wait for its sync
   timeout), and holds up no other answer; an asker gone (EHOSTUNREACH) loses its answer.
2. Every bulk step (building or packing a message) runs with the cyclic collector paused
   (``snapshot.collector_paused``); the first message, which reads the ``(epoch, seq)`` and
   the key list, is built when the ask is admitted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import structlog
import zmq

from dialogstate.table import DialogTable
from stateplane import updates as up
from stateplane.asks import AskGate, idle, stalled
from stateplane.replica import Publisher
from stateplane.snapshot import collector_paused, serve

log = structlog.get_logger()

#: an ICANHAZ is a few numbers and a node name
MAX_ASK_BYTES = 1 << 10
#: retry of answers whose askers' pipes are all full
ANSWER_RETRY_S = 0.005


@dataclass(slots=True)
class _Answer:
    """A snapshot answer in progress: who asked, the rest of it, a message not sent yet, and
    when the asker's pipe last took one."""

    ident: bytes
    rest: Iterator[up.Update | up.Chunk | up.Kthxbai]
    frames: list[bytes] | None
    sent_at: float


class Answers:
    """The answers in progress on ``snap`` (a ROUTER with ``ROUTER_MANDATORY``), from the
    owner's ``mirror`` as ``publisher`` has numbered it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, snap: zmq.Socket[bytes],
                 publisher: Publisher, mirror: DialogTable, counters: Counter[str]) -> None:  # fmt: skip
        self.loop, self.snap, self.publisher, self.mirror = loop, snap, publisher, mirror
        self.counters = counters
        self._answers: dict[bytes, _Answer] = {}
        self._asks = AskGate(loop.time())
        self._answering: asyncio.Handle | None = None

    def __len__(self) -> int:
        return len(self._answers)

    def on_ask(self, frames: list[zmq.Frame]) -> None:
        if len(frames) != 3:
            self.counters["bad_ask"] += 1
            return
        try:
            ask = up.unpack([f.bytes for f in frames[1:]])
        except up.UpdateError:
            self.counters["bad_ask"] += 1
            return
        if not isinstance(ask, up.Icanhaz) or ask.node != self.publisher.node:
            self.counters["bad_ask"] += 1
            return
        ident, now = frames[0].bytes, self.loop.time()
        asker = _asker(frames[1], ident)
        if len(self._answers) >= self._asks.max_answers and asker not in self._answers:
            self._drop_idle(now)
        refused = self._asks.admit(now, len(self._answers), asker in self._answers)
        if refused:
            self.counters[f"ask_refused_{refused}"] += 1
            return
        if self._answers.pop(asker, None) is not None:
            self.counters["ask_replaced"] += 1
        answer = serve(ask, self.publisher, self.mirror, now, time.time())
        with collector_paused():
            first = up.pack(next(answer))  # (epoch, seq) and key list read now (serve's rule)
        self._answers[asker] = _Answer(ident, answer, first, now)
        self.counters["snapshots"] += 1
        if self._answering is None:
            self._answering = self.loop.call_soon(self._send_answers)

    def _drop_idle(self, now: float) -> None:
        """``asks.py`` rule 3: the answer whose pipe has been full longest gives its place."""
        asker, a = min(self._answers.items(), key=lambda kv: kv[1].sent_at)
        if idle(a.sent_at, now):
            del self._answers[asker]
            self.counters["asker_idle"] += 1

    def _send_answers(self) -> None:
        """One message of each answer in progress per loop turn; a full pipe holds up only
        its own answer (rule 1), and past ``asks.STALL_S`` loses it."""
        self._answering = None
        now, moved = self.loop.time(), False
        for asker, a in list(self._answers.items()):
            if a.frames is None:
                with collector_paused():
                    msg = next(a.rest, None)
                    a.frames = None if msg is None else up.pack(msg)
                if a.frames is None:
                    del self._answers[asker]  # answered to the end
                    continue
            try:
                self.snap.send_multipart([a.ident, *a.frames], zmq.NOBLOCK)
            except zmq.Again:  # the asker's pipe is full: keep the message for later
                if stalled(a.sent_at, now):
                    del self._answers[asker]
                    self.counters["asker_stalled"] += 1
                    log.warning("snapshot_asker_stalled", asker=asker.hex()[:32])
                continue
            except zmq.ZMQError:  # the asker is gone (EHOSTUNREACH): drop its answer
                del self._answers[asker]
                self.counters["asker_gone"] += 1
                continue
            a.frames, a.sent_at, moved = None, now, True
        if self._answers:
            self._answering = (self.loop.call_soon(self._send_answers) if moved else
                               self.loop.call_later(ANSWER_RETRY_S, self._send_answers))  # fmt: skip


def _asker(frame: zmq.Frame, ident: bytes) -> bytes:
    """``asks.py`` rule 1: the node a CURVE key authenticated, else the connection."""
    try:
        user = frame.get("User-Id")
    except zmq.ZMQError:  # no ZAP handler judged this connection (ipc)
        return b"r:" + ident
    return b"u:" + str(user).encode() if user else b"r:" + ident
