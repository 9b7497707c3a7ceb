"""Both ends of the ZeroMQ hop in one loop, over real ipc:// sockets in a temp run directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
import zmq

import workers.bus
from conf import envelope, sockets
from conf.loadstats import LoadMeter
from conf.settings import Bus
from ingress.bus import FULL, WorkerBus
from ingress.shedding import ADMIT
from tests.pipeline.helpers import run, until
from workers.bus import IngressBus

IN_META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 0.0]
OUT_META = ["udp", "127.0.0.1", 5080, 0, "127.0.0.1", 5060]


class Hop:
    """An ingress bus and a worker bus wired together, recording what each receives."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: Path, cfg: Bus | None = None) -> None:
        cfg = cfg or Bus()
        self.to_worker: list[tuple[str, list[Any], bytes]] = []
        self.to_ingress: list[tuple[list[Any], bytes]] = []
        self.ingress = WorkerBus(ctx, cfg, str(run_dir), "ingress.1-1", self._on_out, LoadMeter(0))
        self.worker = IngressBus(ctx, cfg, str(run_dir), "worker.1-2", self._on_batch, LoadMeter(0))

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        self.to_ingress.extend(zip(metas, payloads))

    def _on_batch(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        self.to_worker.extend((ingress, m, p) for m, p in zip(metas, payloads))

    async def joined(self) -> None:
        """Heartbeat until the ingress has the worker (the first may go before the pipe is up)."""
        await until(lambda: bool(self.worker.heartbeat()) or len(self.ingress.workers) == 1)

    def close(self) -> None:
        self.worker.close()
        self.ingress.close()


def test_worker_joins_by_heartbeat(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A worker finds the ingress in the run directory and joins its ring by heartbeat."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        assert hop.ingress.submit(b"call-1", IN_META, b"x") == FULL  # nobody alive yet
        await hop.joined()
        assert hop.ingress.workers.idents == ["worker.1-2"]
        hop.close()

    run(body)


def test_messages_both_ways_in_order(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Submitted messages reach the worker in order with their metadata; its output comes back."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        await hop.joined()
        sent = [b"msg-%d" % i for i in range(1000)]
        for raw in sent:
            assert hop.ingress.submit(b"same-call", IN_META, raw) == ADMIT
        await until(lambda: len(hop.to_worker) == len(sent))
        assert [p for _, _, p in hop.to_worker] == sent
        assert {i for i, _, _ in hop.to_worker} == {"ingress.1-1"}
        assert hop.to_worker[0][1] == IN_META
        for raw in sent:
            hop.worker.send("ingress.1-1", OUT_META, raw)
        hop.worker.flush()
        await until(lambda: len(hop.to_ingress) == len(sent))
        assert [p for _, p in hop.to_ingress] == sent
        hop.close()

    run(body)


def test_worker_leaving_says_so(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A worker that closes says 'down' and leaves the ring at once; its socket file is gone."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        await hop.joined()
        hop.worker.close()
        await until(lambda: len(hop.ingress.workers) == 0)
        assert not list(tmp_path.glob("worker-*.ipc"))
        hop.ingress.close()
        assert not list(tmp_path.glob("*.ipc"))

    run(body)


def test_bad_envelope_is_dropped(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Garbage on the ingress socket is counted and dropped; the bus keeps working."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        rogue = ctx.socket(zmq.PUSH)
        rogue.linger = 0
        rogue.connect(hop.ingress.endpoint)
        rogue.send_multipart([b"junk", b"\xc1"])
        meter = hop.ingress._meter
        await until(lambda: meter.counters["drop_bad_envelope"] == 1)
        await hop.joined()
        rogue.close()
        hop.close()

    run(body)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_worker_never_connects_to_an_unannounced_ingress(ctx: zmq.Context[Any],
                                                         tmp_path: Path) -> None:  # fmt: skip
    """Output for ingress ids that no process announced (ids read from packets) is dropped
    and counted; no socket is opened for them, however many there are. An ingress that
    announces itself (its socket file in the run directory) gets a pipe at the heartbeat."""

    async def body() -> None:
        meter = LoadMeter(0)
        worker = IngressBus(ctx, Bus(), str(tmp_path), "worker.1-2", lambda *a: None, meter)
        worker.heartbeat()
        before = _fds()
        for i in range(2000):
            assert not worker.send(f"ingress.{i}-{i}", OUT_META, b"x")
        worker.flush()
        assert meter.counters["drop_unknown_ingress"] == 2000
        assert list(worker.ingresses) == [] and _fds() == before
        received: list[tuple[list[Any], bytes]] = []
        ingress = WorkerBus(ctx, Bus(), str(tmp_path), "ingress.1-1",
                            lambda m, p: received.extend(zip(m, p)), LoadMeter(0))  # fmt: skip
        assert not worker.send("ingress.1-1", OUT_META, b"early")  # not announced yet
        worker.heartbeat()
        assert list(worker.ingresses) == ["ingress.1-1"]
        assert worker.send("ingress.1-1", OUT_META, b"late")
        worker.flush()
        await until(lambda: len(received) == 1)
        assert received[0][1] == b"late"
        worker.close()
        ingress.close()

    run(body)


def test_output_before_the_first_heartbeat_finds_the_ingress(ctx: zmq.Context[Any],
                                                              tmp_path: Path) -> None:  # fmt: skip
    """A worker just started has output (an answer to a FWD another worker passed it, which
    saw its socket file) before its first heartbeat: it looks for ingresses then and there,
    and the answer reaches the ingress instead of being dropped as for an unknown one."""

    async def body() -> None:
        received: list[tuple[list[Any], bytes]] = []
        ingress = WorkerBus(ctx, Bus(), str(tmp_path), "ingress.1-1",
                            lambda m, p: received.extend(zip(m, p)), LoadMeter(0))  # fmt: skip
        meter = LoadMeter(0)
        worker = IngressBus(ctx, Bus(), str(tmp_path), "worker.1-2", lambda *a: None, meter)
        try:
            assert worker.send("ingress.1-1", OUT_META, b"answer")
            worker.flush()
            await until(lambda: len(received) == 1)
            assert received[0][1] == b"answer" and meter.counters["drop_unknown_ingress"] == 0
        finally:
            worker.close()
            ingress.close()

    run(body)


def test_udp_for_a_departed_ingress_leaves_through_a_live_one(ctx: zmq.Context[Any],
                                                               tmp_path: Path) -> None:  # fmt: skip
    """UDP output addressed to an ingress that left (replaced) goes out through a live one,
    which binds the same listeners; TCP output for it is dropped: the connection left with
    it."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        await hop.joined()
        tcp_meta = ["tcp", *OUT_META[1:]]
        assert hop.worker.send("ingress.9-9", OUT_META, b"rerouted")
        assert not hop.worker.send("ingress.9-9", tcp_meta, b"dropped")
        hop.worker.flush()
        await until(lambda: len(hop.to_ingress) == 1)
        assert hop.to_ingress[0][1] == b"rerouted"
        counters = hop.worker._meter.counters
        assert (counters["udp_rerouted"], counters["drop_unknown_ingress"]) == (1, 1)
        hop.close()

    run(body)


class Echo(Hop):
    """A hop whose worker answers each message at once, as ``Worker._on_batch`` does, with
    no flush of its own: the bus sends the answers (``[bus] flush_ms``)."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: Path, cfg: Bus) -> None:
        super().__init__(ctx, run_dir, cfg)
        self.in_batches: list[int] = []
        self.out_batches: list[int] = []

    def _on_batch(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        super()._on_batch(ingress, metas, payloads)
        self.in_batches.append(len(payloads))
        for p in payloads:
            self.worker.send(ingress, OUT_META, p)

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        super()._on_out(metas, payloads)
        self.out_batches.append(len(payloads))


def test_messages_of_a_flush_interval_leave_in_one_batch(ctx: zmq.Context[Any],
                                                         tmp_path: Path) -> None:  # fmt: skip
    """With ``flush_ms``, what the ingress takes in several loop iterations leaves as one
    batch, once the delay is over: never before it; the worker's answers come back without a
    flush of its own."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        hop = Echo(ctx, tmp_path, Bus(flush_ms=50))
        await hop.joined()
        t0 = loop.time()
        for i in range(3):
            assert hop.ingress.submit(b"call", IN_META, b"m%d" % i) == ADMIT
            await asyncio.sleep(0)  # another loop iteration: without the delay, a batch each
        pipe = hop.ingress._pipes["worker.1-2"]
        if loop.time() - t0 < 0.045:  # a box that stalled 45 ms may rightly have sent
            assert pipe.sent == 0 and len(pipe.metas) == 3
        await until(lambda: len(hop.to_ingress) == 3)
        assert loop.time() - t0 >= 0.049  # the delay, never less (timers never fire early)
        assert [p for _, p in hop.to_ingress] == [b"m0", b"m1", b"m2"]
        if loop.time() - t0 < 0.045 + 0.05:  # both legs on time: one batch each way
            assert hop.in_batches == [3] and hop.out_batches == [3]
        hop.close()

    run(body)


def test_a_full_batch_leaves_at_once(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """``max_batch`` messages leave when the last of them is queued, whatever ``flush_ms``."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path, Bus(flush_ms=50, max_batch=4))
        await hop.joined()
        for i in range(4):
            assert hop.ingress.submit(b"call", IN_META, b"m%d" % i) == ADMIT
        assert hop.ingress._pipes["worker.1-2"].sent == 4  # before any loop iteration
        await until(lambda: len(hop.to_worker) == 4)
        hop.close()

    run(body)


def test_a_batch_that_fills_lets_what_goes_first_leave_first(ctx: zmq.Context[Any],
                                                             tmp_path: Path) -> None:  # fmt: skip
    """A worker's output batch that reaches ``max_batch`` mid-iteration runs ``on_full`` (the
    stateful worker writes its CDRs and queues its deltas there) and ``before_flush`` (the
    deltas leave) before the batch is sent; without ``on_full`` the batch leaves alone."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path, Bus(flush_ms=50, max_batch=2))
        await hop.joined()
        hop.worker.send("ingress.1-1", OUT_META, b"a0")  # the worker's pipe opens with it
        pipe = hop.worker._pipes["ingress.1-1"]
        order: list[tuple[str, int]] = []
        hop.worker.before_flush = lambda: order.append(("before_flush", pipe.sent))
        hop.worker.send("ingress.1-1", OUT_META, b"a1")
        assert pipe.sent == 2 and order == []  # no on_full: the full batch left alone
        hop.worker.on_full = lambda: order.append(("on_full", pipe.sent))
        hop.worker.send("ingress.1-1", OUT_META, b"b0")
        assert order == []
        hop.worker.send("ingress.1-1", OUT_META, b"b1")
        assert order == [("on_full", 2), ("before_flush", 2)] and pipe.sent == 4
        await until(lambda: len(hop.to_ingress) == 4)
        assert [p for _, p in hop.to_ingress] == [b"a0", b"a1", b"b0", b"b1"]
        hop.close()

    run(body)


def test_without_a_flush_delay_each_iteration_sends(ctx: zmq.Context[Any],
                                                    tmp_path: Path) -> None:  # fmt: skip
    """``flush_ms = 0``: a batch leaves at the end of the loop iteration that gathered it."""

    async def body() -> None:
        hop = Echo(ctx, tmp_path, Bus(flush_ms=0))
        await hop.joined()
        pipe = hop.ingress._pipes["worker.1-2"]
        assert hop.ingress.submit(b"call", IN_META, b"m0") == ADMIT
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert pipe.sent == 1 and not pipe.metas
        await until(lambda: len(hop.to_ingress) == 1)
        hop.close()

    run(body)


def test_a_pipe_closed_before_its_flush_is_due_is_not_flushed(ctx: zmq.Context[Any],
                                                              tmp_path: Path) -> None:  # fmt: skip
    """A pipe that filled ``max_batch`` and took more within one flush interval is listed
    twice for the flush; once its worker is gone, the due flush touches it no more (no send
    on a closed socket), and what it held is counted lost."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: errors.append(context))
        hop = Hop(ctx, tmp_path, Bus(flush_ms=20, max_batch=2))
        await hop.joined()
        for i in range(3):  # two leave at once, the third waits for the flush
            assert hop.ingress.submit(b"call", IN_META, b"m%d" % i) == ADMIT
        hop.ingress._peers.close("worker.1-2")
        t0 = loop.time()
        await until(lambda: loop.time() - t0 > 0.1)  # past the flush that was due
        assert errors == []
        assert hop.ingress._meter.counters["drop_worker_gone"] == 1
        hop.close()

    run(body)


def test_a_leaving_worker_waits_for_the_ingress_to_let_go(ctx: zmq.Context[Any],
                                                          tmp_path: Path) -> None:  # fmt: skip
    """A leaving worker reads on until the ingress says ``LEFT`` (workers/bus.py rule 10),
    which comes at once once it read the ``down``; an ingress that is gone (its file
    vanished) lets go of it too, without a word."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        hop = Hop(ctx, tmp_path)
        await hop.joined()
        t0 = loop.time()
        assert await hop.worker.leave()  # it said LEFT: nothing of its follows
        assert loop.time() - t0 < 1.0  # the ingress's LEFT, long before LEAVE_S
        assert len(hop.ingress.workers) == 0
        hop.close()

        hop = Hop(ctx, tmp_path)
        await hop.joined()
        hop.ingress.close()  # gone before it could say LEFT
        t0 = loop.time()
        assert not await hop.worker.leave()  # what it sent last is no promise
        assert loop.time() - t0 < 1.0
        hop.worker.close()

    run(body)


def test_a_leaving_worker_is_released_by_the_left_itself(ctx: zmq.Context[Any],
                                                         tmp_path: Path) -> None:  # fmt: skip
    """The ingress's ``LEFT`` wakes the leaving worker at once: ``leave`` is done within a
    few loop iterations of reading it, not at a later polling step or heartbeat (a 10 ms
    poll before; heartbeats 10 s apart here)."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path, Bus(heartbeat_ms=10_000))
        await hop.joined()
        leaving = asyncio.create_task(hop.worker.leave())
        await until(lambda: "ingress.1-1" in hop.worker._left_at, step_s=0)
        for _ in range(5):
            await asyncio.sleep(0)
        assert leaving.done() and leaving.result()
        hop.close()

    run(body)


OLD = f"ingress.9-{os.getpid()}"


class OldIngress:
    """An ingress of the previous release: its socket file, and calls sent to the worker
    with no hello first; it never says ``LEFT``."""

    def __init__(self, ctx: zmq.Context[Any], run_dir: Path) -> None:
        self.ident = OLD  # a live pid: the worker skips the files of dead ones
        self.pull = sockets.bind_pull(ctx, sockets.endpoint(str(run_dir), "ingress", OLD), 1000)
        self.push = sockets.connect_push(ctx, sockets.endpoint(str(run_dir), "worker", "worker.1-2"),
                                         1000)  # fmt: skip

    def send_call(self) -> None:
        self.push.send_multipart(envelope.pack(envelope.KIND_IN, [self.ident, [IN_META]], [b"c"]))

    def close(self) -> None:
        self.pull.close(linger=0)
        self.push.close(linger=0)


def test_a_leaving_worker_waits_for_an_ingress_that_said_hello_and_sent_calls(
        ctx: zmq.Context[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An ingress of this release says hello as it joins (ingress/bus.py rule 8), before its
    calls: the leaving worker waits for its ``LEFT`` (``leave`` is True), where an ingress
    that sent calls without a hello (the previous release) is not waited for, whatever
    ``LEAVE_S`` (an hour here): ``leave`` is False and returns at once."""
    monkeypatch.setattr(workers.bus, "LEAVE_S", 3600.0)

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        old = OldIngress(ctx, tmp_path)
        await hop.joined()
        assert hop.ingress.submit(b"call-1", IN_META, b"new") == ADMIT
        hop.ingress.flush()
        await until(lambda: bool(hop.worker.heartbeat()) or OLD in hop.worker.ingresses)
        old.send_call()
        await until(lambda: len(hop.to_worker) == 2)
        assert not await hop.worker.leave()  # the old one: no promise, read a quiet spell
        assert hop.worker._left_at.keys() == {"ingress.1-1"}  # the new one's LEFT came
        assert len(hop.ingress.workers) == 0
        old.close()
        hop.close()

    run(body)


def test_an_idle_ingress_that_never_said_hello_is_not_waited_for(
        ctx: zmq.Context[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An ingress found ``HELLO_S`` ago (0 here) that never said hello nor sent a call is of
    the previous release: not waited for (``LEAVE_S`` an hour); one that said hello is."""
    monkeypatch.setattr(workers.bus, "LEAVE_S", 3600.0)
    monkeypatch.setattr(workers.bus, "HELLO_S", 0.0)

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        old = OldIngress(ctx, tmp_path)
        await hop.joined()
        await until(lambda: bool(hop.worker.heartbeat()) or (
            OLD in hop.worker.ingresses and hop.worker._local["ingress.1-1"].hello))
        assert hop.worker._mute() == {OLD}
        assert not await hop.worker.leave()
        assert hop.worker._left_at.keys() == {"ingress.1-1"}
        old.close()
        hop.close()

    run(body)


def test_an_ingress_found_just_before_the_leave_is_waited_for_until_hello_s(
        ctx: zmq.Context[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An ingress found just now that has said no hello yet is waited for, but only until
    ``HELLO_S`` after it was found (0.5 s here; ``LEAVE_S`` an hour): one of this release
    would have said it by then."""
    monkeypatch.setattr(workers.bus, "LEAVE_S", 3600.0)
    monkeypatch.setattr(workers.bus, "HELLO_S", 0.5)

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        old = OldIngress(ctx, tmp_path)
        await hop.joined()
        await until(lambda: bool(hop.worker.heartbeat()) or OLD in hop.worker.ingresses)
        hop.worker._local[OLD].found_at = asyncio.get_running_loop().time()  # found now
        assert OLD not in hop.worker._mute()
        assert not await hop.worker.leave()
        assert hop.worker._left_at.keys() == {"ingress.1-1"}
        old.close()
        hop.close()

    run(body)


def test_a_leaving_ingress_is_released_by_the_left_itself(ctx: zmq.Context[Any],
                                                          tmp_path: Path) -> None:  # fmt: skip
    """The worker's answering ``LEFT`` wakes the leaving ingress at once (ingress/bus.py rule
    7): ``leave`` is done within a few loop iterations of reading it, not at a later polling
    step or heartbeat (a 10 ms poll before; heartbeats 10 s apart here)."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path, Bus(heartbeat_ms=10_000))
        await hop.joined()
        leaving = asyncio.create_task(hop.ingress.leave(within_s=60.0))
        # the worker answered and forgot us, and we read its answer
        await until(lambda: "ingress.1-1" not in hop.worker.ingresses and not hop.ingress._holding,
                    step_s=0)  # fmt: skip
        for _ in range(5):
            await asyncio.sleep(0)
        assert leaving.done()
        hop.close()

    run(body)


def test_a_worker_leaving_gets_the_backlog_its_pipe_held(ctx: zmq.Context[Any],
                                                         tmp_path: Path) -> None:  # fmt: skip
    """A worker that says ``down`` while the ingress holds a backlog for it (it was not
    reading, its socket full) gets that backlog, then ``LEFT``: the ingress keeps the pipe
    open until the backlog drained (conf/pipe.py ``closing``) instead of dropping it."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        hop = Hop(ctx, tmp_path, Bus(hwm=1, max_batch=1))
        await hop.joined()
        reader = hop.worker._reader
        reader.remove()  # the worker reads nothing for a while: its socket fills
        sent = [b"%04d" % i + b"x" * 2000 for i in range(600)]
        for raw in sent:
            assert hop.ingress.submit(b"call", IN_META, raw) == ADMIT
        hop.ingress.flush()
        assert hop.ingress.queued > 0  # what ZeroMQ did not take waits in the backlog
        leaving = asyncio.create_task(hop.worker.leave())
        await until(lambda: len(hop.ingress.workers) == 0)  # "left": the pipe is closing
        loop.add_reader(hop.worker._pull.FD, reader)
        reader()
        await leaving
        assert [p for _, _, p in hop.to_worker] == sent
        hop.ingress.expire()  # the drained pipe is closed now
        assert not hop.ingress._peers.closing
        assert not hop.ingress._meter.counters["drop_worker_gone"]
        hop.close()

    run(body)


def test_a_leaving_ingress_reads_until_each_worker_answered(ctx: zmq.Context[Any],
                                                            tmp_path: Path) -> None:  # fmt: skip
    """An ingress leaving says ``LEFT`` and reads on until the worker answers ``LEFT``
    (ingress/bus.py rule 7, workers/bus.py rule 11): answers of a worker that was busy for
    longer than the old wait (two heartbeats, then at most 1 s of quiet) all arrive; the
    worker then sends UDP for that ingress through another live one (rule 4)."""

    async def body() -> None:
        cfg = Bus()
        hop = Echo(ctx, tmp_path, cfg)
        other = WorkerBus(ctx, cfg, str(tmp_path), "ingress.2-3", lambda m, p: None, LoadMeter(0))
        await until(lambda: bool(hop.worker.heartbeat()) or len(other.workers) == 1)
        await hop.joined()
        reader = hop.worker._reader
        reader.remove()  # the worker reads nothing for a while: busy, or descheduled
        sent = [b"call-%d" % i for i in range(50)]
        for raw in sent:
            assert hop.ingress.submit(raw, IN_META, raw) == ADMIT
        leaving = asyncio.create_task(hop.ingress.leave(within_s=60.0))
        await asyncio.sleep(2 * cfg.heartbeat_ms / 1000 + 1.0)  # the busy spell, not a sync
        assert not leaving.done()
        hop.worker._loop.add_reader(hop.worker._pull.FD, reader)
        reader()
        await leaving  # the worker's LEFT, long before within_s (run's bound)
        assert sorted(p for _, p in hop.to_ingress) == sorted(sent)
        assert "ingress.1-1" not in hop.worker.ingresses
        counters = hop.worker._meter.counters
        assert counters["drop_ingress_gone"] == 0
        assert hop.worker.send("ingress.1-1", OUT_META, b"late")
        assert counters["udp_rerouted"] == 1
        other.close()
        hop.close()

    run(body, 60)


def test_an_ingress_gone_without_a_word_still_gets_the_batch_held_for_it(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """An ingress whose file vanished (one that does not say ``LEFT``, workers/bus.py rule
    11) may be reading still: the worker's heartbeat sends the batch it held for it before
    closing the pipe, instead of dropping it."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        await hop.joined()
        assert hop.worker.send("ingress.1-1", OUT_META, b"held")  # in the batch, not flushed
        hop.ingress.withdraw()
        hop.worker.heartbeat()
        assert "ingress.1-1" not in hop.worker.ingresses
        await until(lambda: len(hop.to_ingress) == 1)
        assert hop.worker._meter.counters["drop_ingress_gone"] == 0
        hop.close()

    run(body)
