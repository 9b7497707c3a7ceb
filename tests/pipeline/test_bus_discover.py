"""A worker that learns its ingresses from its state plane (workers/bus.py rule 9,
conf/discovery.py rule 7), against a real edge ingress bus over TCP with CURVE: it connects
only to entries that pass the checks again, with the key of the peer named, and lets go of
one no longer named. The INGRESSES envelopes come from a PUSH standing in for the node's
state plane, on the worker's ipc socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import zmq
from structlog.testing import capture_logs

from conf import bustcp, curve, discovery, envelope, sockets
from conf.load import from_dict
from conf.loadstats import LoadMeter
from conf.settings import Settings
from ingress.bus import WorkerBus
from tests.pipeline.helpers import run, until
from tests.pipeline.test_bus_tcp import EDGE, WORK, free_port
from workers.bus import IngressBus

EDGE_SP = f"tcp://{EDGE}:7400"


def hosts(tmp: Path) -> tuple[Settings, Settings]:
    """The edge (127.0.0.2) and a worker host that names it only as a [[peer]]."""
    keys = {n: curve.keygen(str(tmp / n)) for n in ("edge", "work", "other")}
    edge = from_dict({"node": {"name": "edge", "run_dir": str(tmp / "run-edge")},
                      "curve": {"secret_key_file": str(keys["edge"][0])},
                      "bus": {"address": EDGE, "ingress_port": free_port(EDGE)},
                      "peer": [{"name": "work", "bus_address": WORK,
                                "public_key_file": str(keys["work"][1])}]})  # fmt: skip
    work = from_dict({"node": {"name": "work", "run_dir": str(tmp / "run-work")},
                      "curve": {"secret_key_file": str(keys["work"][0])},
                      "bus": {"address": WORK, "discover": True},
                      "stateplane": {"peers": [EDGE_SP]},
                      "peer": [{"name": "edge", "bus_address": EDGE, "stateplane": EDGE_SP,
                                "public_key_file": str(keys["edge"][1])},
                               {"name": "other", "bus_address": "127.0.0.5",
                                "public_key_file": str(keys["other"][1])}]})  # fmt: skip
    for s in (edge, work):
        Path(s.node.run_dir).mkdir(mode=0o700)
    return edge, work


def test_a_worker_connects_only_to_entries_that_pass_and_follows_changes(tmp_path: Path) -> None:
    """Of what its state plane names, the worker takes the edge's endpoint (and joins that
    ingress), refuses one naming the edge at another peer's address or at no peer's, keeps
    its pipes on an envelope over the bound, and drops the pipe of an endpoint no longer
    named."""
    edge_s, work_s = hosts(tmp_path)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        ctxs: list[zmq.Context[Any]] = [zmq.Context(), zmq.Context()]
        edge_meter, work_meter = LoadMeter(0), LoadMeter(0)
        edge_hop = bustcp.TcpHop(ctxs[0], loop, edge_s, edge_meter.counters)
        work_hop = bustcp.TcpHop(ctxs[1], loop, work_s, work_meter.counters)
        ingress = WorkerBus(ctxs[0], edge_s.bus, edge_s.node.run_dir, "edge.ingress.1-1",
                            lambda m, p: None, edge_meter)  # fmt: skip
        ep = edge_hop.ingress_endpoint()
        assert ep is not None and ep == discovery.ingress_endpoint(edge_s, "edge.ingress-7")
        ingress.open_tcp(edge_hop, ep)
        worker = IngressBus(ctxs[1], work_s.bus, work_s.node.run_dir, "work.worker.1-2",
                            lambda i, m, p: None, work_meter)  # fmt: skip
        worker.open_tcp(work_hop, discovery.peer_addresses(work_s))
        plane = sockets.connect_push(ctxs[1], worker.endpoint, 10)

        def tell(entries: list[list[Any]]) -> None:
            plane.send_multipart(envelope.pack(envelope.KIND_INGRESSES, entries))

        try:
            with capture_logs() as logs:
                tell([["edge", ["tcp://127.0.0.5:7600", "tcp://127.0.0.9:7600", ep]],
                      ["other", [ep]]])  # fmt: skip
                await until(lambda: bool(worker.heartbeat()) or (
                    "edge.ingress.1-1" in worker.ingresses and len(ingress.workers) == 1),
                    step_s=0.02)  # fmt: skip
            assert work_meter.counters["drop_bad_discovered"] == 3
            refused = [e for e in logs if e["event"] == "discovered_ingress_refused"]
            assert refused[0]["endpoint"] == "tcp://127.0.0.5:7600", refused  # then 10 s quiet
            assert [e["endpoint"] for e in logs if e["event"] == "ingress_discovered"] == [ep]

            # the edge's list over the bound is refused whole, and a state plane that has not
            # heard the edge yet does not name it: either way its pipe stands
            many = [f"tcp://{EDGE}:{n}" for n in range(1, discovery.MAX_ANNOUNCED + 2)]
            tell([["edge", many], ["other", []]])
            tell([["other", []]])
            tell([["other", ["tcp://127.0.0.9:1"]]])  # read after the two before it
            await until(lambda: work_meter.counters["drop_bad_discovered"] == 5)
            assert "edge.ingress.1-1" in worker.ingresses

            tell([["edge", []]])  # the edge no longer announces it: the pipe goes
            await until(lambda: "edge.ingress.1-1" not in worker.ingresses)
            worker.heartbeat()
            assert worker.ring() is None
        finally:
            plane.close(linger=0)
            worker.close()
            ingress.close()
            edge_hop.close()
            work_hop.close()
            for c in ctxs:
                c.destroy(linger=0)

    run(body)
