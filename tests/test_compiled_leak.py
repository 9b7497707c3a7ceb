"""The compiled hot paths keep no memory per message (docs/benchmarks.md, "The compiled build").

mypyc before 2.2 leaked the left operand of every ``bytes + bytes`` in a compiled module
(mypyc/mypyc#1192, fixed by python/mypy#21469): a few hundred bytes per message on the codec's,
the stateless proxy's and the dialog table's paths, growing without bound in a running
worker. Each path here runs a few thousand times after a warm-up with the same input, so any
cache it has is full before measuring; what is still traced after a collection is what one
call keeps. It runs on whichever build ``./dev test`` made (tests/test_compiled.py checks that
is the compiled one) and passes interpreted too.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections import Counter
from collections.abc import Callable

import pytest
import zmq

from conf import envelope
from conf.pipe import PushPipe, drain_pull
from dialogstate.msgs import build_bye
from dialogstate.record import encode, join_parties
from ingress.sip.message import Request
from ingress.sip.parser import parse_message, salvage
from ingress.sip.scan import scan_message
from ingress.sip.serialize import build_response

from .aio import run as run_async
from .workers.dialog_helpers import Call, table, via_for
from .workers.helpers import inbound, proxy, request

ROUNDS = 3000
#: far below one leaked bytes object per call: the smallest leak seen (join_parties, the From
#: value plus its LF) kept ~90 bytes a call
PER_CALL = 16


def kept(run: Callable[[], object]) -> float:
    """Bytes still allocated per call of ``run`` after ROUNDS calls and a collection."""
    for _ in range(100):  # what is built once (memo tables, interned names) is built here
        run()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(ROUNDS):
            run()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return grown / ROUNDS


RAW = request()
_parsed = parse_message(RAW)
assert isinstance(_parsed, Request)
REQ: Request = _parsed
#: a message cut before its blank line: salvage() appends one
CUT = RAW[: RAW.index(b"\r\n\r\n")]


def _proxy_path() -> Callable[[], object]:
    p, inb = proxy(), inbound()
    return lambda: p.handle(RAW, inb)


def _proxy_reply() -> Callable[[], object]:
    """Max-Forwards 0: the proxy answers 483 itself (build_response, extra headers)."""
    p, inb, raw = proxy(), inbound(), request(max_forwards=0)
    return lambda: p.handle(raw, inb)


def _dialog() -> Callable[[], object]:
    t, call = table(), Call()
    call.confirmed(t)
    found = t.match(call.in_dialog("BYE", 2))
    assert found is not None
    dlg = found[0]

    def run() -> object:
        dlg.to_hdr = dlg.to_hdr  # rejoins Dialog.parties (join_parties)
        return (
            t.build_byes(dlg, via_for),
            build_bye(dlg, "caller", b"SIP/2.0/UDP h", "z9"),
            join_parties(dlg.from_hdr, dlg.to_hdr),
            encode(dlg, 1000.0, 1.7e9),
        )

    return run


#: what the ingress sends a worker for each message, and what a worker sends back
IN_META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 1.5]
OUT_META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060]


def _envelope(kind: bytes, header: list[object]) -> Callable[[], object]:
    """A batch of four messages packed and unpacked, the metas checked value by value."""
    return lambda: envelope.unpack(envelope.pack(kind, header, [RAW] * 4))


PATHS: dict[str, Callable[[], Callable[[], object]]] = {
    "parse": lambda: lambda: parse_message(RAW),
    "scan": lambda: lambda: scan_message(RAW),
    "salvage": lambda: lambda: salvage(CUT),
    "build_response": lambda: lambda: build_response(REQ, 486, "Busy Here"),
    "build_response_tag": lambda: (
        lambda: build_response(REQ, 200, "OK", to_tag="t1", extra_headers=(b"X: y",))
    ),
    "proxy_forward": _proxy_path,
    "proxy_reply": _proxy_reply,
    "dialog": _dialog,
    "envelope_in": lambda: _envelope(envelope.KIND_IN, ["ingress.1-1", [IN_META] * 4]),
    "envelope_out": lambda: _envelope(envelope.KIND_OUT, [[OUT_META] * 4]),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_no_memory_kept_per_call(path: str) -> None:
    """Each hot path, called ROUNDS times on the same input, keeps (nearly) nothing."""
    per_call = kept(PATHS[path]())
    assert per_call < PER_CALL, f"{path}: {per_call:.0f} bytes kept per call"


def test_no_memory_kept_per_batch_of_the_hop() -> None:
    """A batch through ``PushPipe``, ZeroMQ and ``drain_pull`` (both ends of every hop
    between ingress and worker) keeps (nearly) nothing."""

    async def body() -> float:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.bind("inproc://leak")
        push = ctx.socket(zmq.PUSH)
        push.connect("inproc://leak")
        pipe = PushPipe("w", push, envelope.KIND_IN, lambda metas: ["ingress.1-1", metas],
                        256, 1000)  # fmt: skip
        got: list[envelope.Envelope] = []
        counters: Counter[str] = Counter()

        def batch() -> object:
            pipe.add(list(IN_META), RAW)
            pipe.add(list(IN_META), RAW)
            pipe.flush()
            drain_pull(pull, got.append, counters)
            assert len(got) == 1 and not counters
            return got.pop()

        try:
            return kept(batch)
        finally:
            pipe.close()
            pull.close(linger=0)
            ctx.term()

    per_call = run_async(body)
    assert per_call < PER_CALL, f"hop: {per_call:.0f} bytes kept per batch"
