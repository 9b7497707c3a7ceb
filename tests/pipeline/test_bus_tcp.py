"""Both ends of the ZeroMQ hop on two "hosts" (127.0.0.2, the edge, and 127.0.0.3) over real
TCP sockets with CURVE, each with a context and run directory of its own (conf/bustcp.py,
ingress/bus.py rule 4, workers/bus.py rule 7). A client holding a listed key still gets
only what crosses hosts, and no endpoint it names is connected to."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import zmq

import workers.bus
from conf import bustcp, curve, envelope
from conf.load import from_dict
from conf.loadstats import LoadMeter
from conf.settings import Settings
from ingress.bus import WorkerBus
from ingress.shedding import ADMIT
from tests.e2e.node import free_run
from tests.pipeline.helpers import run, until
from workers.bus import IngressBus

EDGE, WORK = "127.0.0.2", "127.0.0.3"
IN_META = ["udp", "127.0.0.1", 5070, 0, "127.0.0.1", 5060, 0.0]
OUT_META = ["udp", "127.0.0.1", 5080, 0, "127.0.0.1", 5060]


def free_port(host: str) -> int:
    return free_run(host, 1)  # from below the ephemeral range (tests/e2e/node.py)


def two_hosts(tmp: Path, edge_hwm: int = 1) -> tuple[Settings, Settings]:
    keys = {n: curve.keygen(str(tmp / n)) for n in ("edge", "work")}
    port = free_port(EDGE)
    edge = from_dict({"node": {"name": "edge", "run_dir": str(tmp / "run-edge")},
                      "curve": {"secret_key_file": str(keys["edge"][0])},
                      # hwm 1, as test_shedding's: a CURVE server must still receive
                      "bus": {"address": EDGE, "ingress_port": port, "hwm": edge_hwm},
                      "peer": [{"name": "work", "bus_address": WORK,
                                "public_key_file": str(keys["work"][1])}]})  # fmt: skip
    work = from_dict({"node": {"name": "work", "run_dir": str(tmp / "run-work")},
                      "curve": {"secret_key_file": str(keys["work"][0])},
                      "bus": {"address": WORK, "ingresses": [f"tcp://{EDGE}:{port}"]},
                      "peer": [{"name": "edge", "bus_address": EDGE,
                                "public_key_file": str(keys["edge"][1])}]})  # fmt: skip
    for s in (edge, work):
        Path(s.node.run_dir).mkdir(mode=0o700)
    return edge, work


class Hosts:
    """An edge ingress bus and a worker bus on another host, recording what each receives."""

    def __init__(self, tmp: Path, edge_hwm: int = 1) -> None:
        loop = asyncio.get_running_loop()
        self.edge_s, self.work_s = two_hosts(tmp, edge_hwm)
        self.ctxs: list[zmq.Context[Any]] = [zmq.Context(), zmq.Context()]
        self.to_worker: list[tuple[str, list[Any], bytes]] = []
        self.to_ingress: list[tuple[list[Any], bytes]] = []
        self.edge_meter, self.work_meter = LoadMeter(0), LoadMeter(0)
        self.edge_hop = bustcp.TcpHop(self.ctxs[0], loop, self.edge_s, self.edge_meter.counters)
        self.work_hop = bustcp.TcpHop(self.ctxs[1], loop, self.work_s, self.work_meter.counters)
        self.ingress = WorkerBus(self.ctxs[0], self.edge_s.bus, self.edge_s.node.run_dir,
                                 "edge.ingress.1-1", self._on_out, self.edge_meter)  # fmt: skip
        ep = self.edge_hop.ingress_endpoint()
        assert ep is not None
        self.ingress.open_tcp(self.edge_hop, ep)
        self.worker = IngressBus(self.ctxs[1], self.work_s.bus, self.work_s.node.run_dir,
                                 "work.worker.1-2", self._on_batch, self.work_meter)  # fmt: skip
        self.worker.open_tcp(self.work_hop)

    def _on_out(self, metas: list[list[Any]], payloads: list[bytes]) -> None:
        self.to_ingress.extend(zip(metas, payloads))

    def _on_batch(self, ingress: str, metas: list[list[Any]], payloads: list[bytes]) -> None:
        self.to_worker.extend((ingress, m, p) for m, p in zip(metas, payloads))

    async def joined(self) -> None:
        """Heartbeat until each side knows the other (the first beats go before CURVE is up)."""
        await until(lambda: bool(self.worker.heartbeat()) or (
            len(self.ingress.workers) == 1 and "edge.ingress.1-1" in self.worker.ingresses),
            step_s=0.02)  # fmt: skip

    def client(self, to: str, as_host: Settings) -> zmq.Socket[bytes]:
        """A CURVE PUSH holding ``as_host``'s listed key, to ``to`` (``"edge"`` or ``"work"``)."""
        keys = curve.node_keys(as_host)
        assert keys is not None
        server = curve.node_keys(self.edge_s if to == "edge" else self.work_s)
        assert server is not None
        sock: zmq.Socket[bytes] = self.ctxs[0 if as_host is self.edge_s else 1].socket(zmq.PUSH)
        sock.linger = 0
        curve.connect_curve(sock, keys, server.public)
        sock.connect(self.ingress.tcp_endpoint if to == "edge" else self.worker.tcp_endpoint)
        return sock

    def close(self) -> None:
        self.worker.close()
        self.ingress.close()
        self.edge_hop.close()
        self.work_hop.close()
        for c in self.ctxs:
            c.destroy(linger=0)


def test_a_worker_on_another_host_joins_and_messages_cross_both_ways(tmp_path: Path) -> None:
    """The worker's heartbeat reaches the edge over CURVE, the edge connects back and says
    who it is; messages go both ways, in order, each side a run directory of its own."""

    async def body() -> None:
        h = Hosts(tmp_path)
        try:
            await h.joined()
            assert h.ingress.workers.idents == ["work.worker.1-2"]
            assert h.ingress.workers.endpoint("work.worker.1-2") == h.worker.tcp_endpoint
            assert h.worker.tcp_endpoint.startswith(f"tcp://{WORK}:")
            sent = [b"msg-%d" % i for i in range(500)]
            for raw in sent:
                assert h.ingress.submit(b"same-call", IN_META, raw) == ADMIT
            await until(lambda: len(h.to_worker) == len(sent))
            assert [p for _, _, p in h.to_worker] == sent
            assert {i for i, _, _ in h.to_worker} == {"edge.ingress.1-1"}
            for raw in sent:
                assert h.worker.send("edge.ingress.1-1", OUT_META, raw)
            h.worker.flush()
            await until(lambda: len(h.to_ingress) == len(sent))
            assert [p for _, p in h.to_ingress] == sent
            assert not any(k.startswith("drop") for k in h.edge_meter.counters), (
                h.edge_meter.counters
            )
            h.worker.heartbeat("down")  # leaving: the edge takes it out of the ring at once
            await until(lambda: len(h.ingress.workers) == 0)
        finally:
            h.close()

    run(body)


def test_a_listed_key_gets_only_what_crosses_hosts(tmp_path: Path) -> None:
    """Holding a listed key, a client still cannot make the edge connect to an address that
    is not its host's, claim another host's ident, or send a kind that stays on a host; the
    worker takes no ingress heartbeat from an endpoint it was not given, and no ADOPT."""

    async def body() -> None:
        h = Hosts(tmp_path)
        try:
            await h.joined()
            edge = h.client("edge", h.work_s)
            for header in (
                ["work.worker.9-9", "tcp://127.0.0.9:4000", "up"],  # not a peer
                ["edge.worker.9-9", f"tcp://{WORK}:4000", "up"],  # another's name
                ["work.worker.9-9", "ipc:///tmp/x/worker-work.worker.9-9.ipc", "up"],
                # an ingress's shape (with a ring): read as a heartbeat all the same
                ["work.worker.9-9", "tcp://127.0.0.9:4000", "up", ["work.w-1"]],
            ):
                edge.send_multipart(envelope.pack(envelope.KIND_HB, header))
            edge.send_multipart(envelope.pack(envelope.KIND_IN, ["x", [IN_META]], [b"x"]))
            c = h.edge_meter.counters
            await until(lambda: c["drop_bad_endpoint"] == 4 and c["drop_tcp_kind"] == 1)
            assert h.ingress.workers.idents == ["work.worker.1-2"]  # no one else joined

            work = h.client("work", h.edge_s)
            work.send_multipart(
                envelope.pack(envelope.KIND_HB, ["edge.ingress.9-9", "tcp://127.0.0.2:1", "up"])
            )
            work.send_multipart(envelope.pack(envelope.KIND_ADOPT, ["edge", []]))
            work.send_multipart(envelope.pack(envelope.KIND_TIMER, ["t", []]))
            w = h.work_meter.counters
            # an ADOPT goes only to a bus that checks it against its sender (workers/bus.py
            # rule 8; this one has none); a TIMER never crosses hosts
            await until(lambda: w["drop_bad_ingress_hb"] == 1 and w["drop_tcp_kind"] == 1
                        and w["drop_host_unknown"] == 1)  # fmt: skip
            assert list(h.worker.ingresses) == ["edge.ingress.1-1"]
            edge.close(linger=0)
            work.close(linger=0)
        finally:
            h.close()

    run(body)


def test_the_worker_knows_the_edges_ring_and_refuses_a_malformed_one(tmp_path: Path) -> None:
    """The edge's heartbeat names its ring (conf/bustcp.py rule 6): the worker's view is that
    ring while the edge is live; a ring that is not a list of valid idents (or too long, which
    the envelope check refuses first) is counted and changes nothing, and a ring from an ingress the worker does not hear at that endpoint is
    ignored."""

    async def body() -> None:
        h = Hosts(tmp_path)
        try:
            assert h.worker.ring() is None  # no ingress of another host yet
            await h.joined()
            await until(lambda: bool(h.worker.heartbeat()) or h.worker.ring() is not None,
                        step_s=0.02)  # fmt: skip
            assert h.worker.ring() == {"work.worker.1-2"}
            ep = h.edge_hop.ingress_endpoint()
            edge = h.client("work", h.edge_s)
            for ring in (["../../etc/x"], ["w"] * (bustcp.MAX_WORKERS + 1)):
                edge.send_multipart(envelope.pack(envelope.KIND_HB,
                                                  ["edge.ingress.1-1", ep, "up", ring]))  # fmt: skip
            # the worker hears ingress.1 at that endpoint, not ingress.7: a ring it ignores
            edge.send_multipart(envelope.pack(envelope.KIND_HB,
                                              ["edge.ingress.7-7", "tcp://127.0.0.2:1", "up", ["x"]]))  # fmt: skip
            w = h.work_meter.counters
            await until(lambda: w["drop_bad_ring"] == 1 and w["drop_bad_envelope"] == 1
                        and w["drop_bad_ingress_hb"] == 1)  # fmt: skip
            assert h.worker.ring() == {"work.worker.1-2"}
            edge.close(linger=0)
        finally:
            h.close()

    run(body)


def test_a_leaving_worker_gets_what_the_edge_handed_it_before_letting_go(tmp_path: Path) -> None:
    """The edge reads the worker's ``down`` 0.3 s late (its loop busy elsewhere) and hands it
    calls meanwhile, the last batch not yet flushed when it does read it: the worker reads on
    until the edge's ``LEFT``, which comes behind that batch, so it gets every message, in
    order, and the edge counts none lost (workers/bus.py rule 10, ingress/bus.py rule 6).
    Before, the worker stopped reading after 0.1 s of quiet and the edge dropped the batch:
    messages a TCP caller never sends again."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        # the edge's socket holds every heartbeat the worker sent while it did not read, so
        # one read takes the "down" too (at hwm 1 part of them waits in TCP's buffers)
        h = Hosts(tmp_path, edge_hwm=1000)
        try:
            await h.joined()
            h.ingress.expire()  # a heartbeat to the worker just before the edge goes quiet
            reader = h.ingress._tcp_reader
            assert reader is not None and h.ingress._tcp_pull is not None
            reader.remove()  # the edge reads nothing from the worker for a while
            leaving = asyncio.create_task(h.worker.leave())
            t0 = loop.time()
            await until(lambda: loop.time() - t0 > 0.3)
            assert not leaving.done()  # waiting for the edge, not for a quiet spell
            first = [b"before-%d" % i for i in range(50)]
            for raw in first:
                assert h.ingress.submit(b"call-%d" % len(raw), IN_META, raw) == ADMIT
            await until(lambda: len(h.to_worker) == len(first))
            last = [b"unflushed-%d" % i for i in range(20)]
            for raw in last:  # no await from here to the read: the batch is not flushed
                assert h.ingress.submit(b"call-%d" % len(raw), IN_META, raw) == ADMIT
            assert h.ingress._tcp_pull.poll(1000) == zmq.POLLIN  # the worker's "down" waits
            loop.add_reader(h.ingress._tcp_pull.FD, reader)
            reader()
            assert len(h.ingress.workers) == 0
            await leaving
            assert [p for _, _, p in h.to_worker] == first + last
            assert not h.edge_meter.counters["drop_worker_gone"]
        finally:
            h.close()

    run(body)


def test_a_leaving_worker_does_not_wait_for_an_edge_that_cannot_say_left(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """An edge of the previous release heartbeats without a ring (three items) and never says
    ``LEFT``: the leaving worker does not wait ``LEAVE_S`` for it (an hour here), and says
    that no promise covers what that edge sent last (``leave`` is False: the worker reads on
    until a quiet spell, workers/service.py ``stop``). An edge whose heartbeat has its ring
    is waited for (test above)."""
    monkeypatch.setattr(workers.bus, "LEAVE_S", 3600.0)

    async def body() -> None:
        h = Hosts(tmp_path)
        try:
            await h.joined()
            reader = h.ingress._tcp_reader
            assert reader is not None
            reader.remove()  # the edge answers nothing, as the previous release
            ep = h.edge_hop.ingress_endpoint()
            old = h.client("work", h.edge_s)
            old.send_multipart(envelope.pack(envelope.KIND_HB, ["edge.ingress.1-1", ep, "up"]))
            await until(lambda: bool(h.worker._mute()))
            assert not await h.worker.leave()
            assert "edge.ingress.1-1" in h.worker.ingresses  # still read, not waited for
            old.close(linger=0)
        finally:
            h.close()

    run(body)


def test_a_worker_leaving_before_it_heard_an_edge_makes_no_promise(tmp_path: Path) -> None:
    """The worker has sent its heartbeat to a configured edge endpoint but heard no ingress
    there yet: one may have joined it and be sending already, so ``leave`` does not say that
    nothing more can come (the worker then reads until a quiet spell)."""

    async def body() -> None:
        h = Hosts(tmp_path)
        try:
            h.worker.heartbeat()  # "up" to the edge's endpoint, nothing heard back yet
            assert not await h.worker.leave()
        finally:
            h.close()

    run(body)
