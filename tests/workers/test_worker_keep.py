"""A worker of a host of several keeps nothing it is sent to keep: an ``ADOPT`` from another
host naming a fifth element, another worker of this host, is a copy of what that host handed
that worker (``stateplane/handover.py`` rule 6). Checked as if that worker took it
(``dialogstate/hosts.py`` rule 5), it goes to this host's state plane as a ``k`` delta
(``workers/dialogs/deltas.py`` rule 7) and never into the worker's own table
(``workers/dialogs/owners.py`` rule 6). Real sockets: the worker's CURVE PULL on the hop,
a client holding a listed host's key, and the ipc PULLs of its state plane and of the
other worker."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import zmq

from conf import bustcp, curve, sockets
from conf import envelope as env
from conf.settings import Bus, Curve, Dialogs, Node, Peer, Proxy, Settings
from conf.workerset import WorkerSet
from dialogstate.hosts import host_source
from dialogstate.sources import vanished_source
from tests.e2e.node import free_run
from tests.pipeline.helpers import run, until
from tests.workers.dialog_helpers import Call, table
from tests.workers.helpers import settings
from tests.workers.test_worker_flush import _drain, _pull
from workers.service import Worker

EDGE, HOST_B, HOST_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
#: a worker of host b that vanished: b hands its dialogs as ``stateplane:<it>``
GONE = "b.worker-4194301"


def _settings(tmp: Path, run_dir: Path) -> tuple[Settings, dict[str, curve.KeyPair]]:
    """Host c's worker settings (peers: the edge and host b), and every host's keys."""
    paths = {n: curve.keygen(str(tmp / n)) for n in ("edge", "b", "c")}
    keys = {n: curve.load_secret(str(p[0])) for n, p in paths.items()}
    base = settings(proxy=Proxy(mode="stateful", record_route=True))
    peers = [Peer(name=n, bus_address=a, public_key_file=str(paths[n][1]))
             for n, a in (("edge", EDGE), ("b", HOST_B))]  # fmt: skip
    s = dataclasses.replace(base, node=Node(name="c", run_dir=str(run_dir)),
                            # an edge port nothing listens on: the heartbeats there go nowhere
                            bus=Bus(address=HOST_C, heartbeat_ms=100,
                                    ingresses=[f"tcp://{EDGE}:{free_run(EDGE, 1)}"]),
                            dialogs=Dialogs(enabled=True),
                            curve=Curve(secret_key_file=str(paths["c"][0])), peer=peers)  # fmt: skip
    return s, keys


class HostC:
    """Host c: the worker under test (``c.worker.1``), the socket file of another worker of
    c (``c.worker.2``, the owner of what is kept), and the PULL of c's state plane."""

    def __init__(self, ctx: zmq.Context[Any], tmp: Path) -> None:
        #: short enough for ipc paths (tmp_path is not)
        self.run_dir = run_dir = Path(tempfile.mkdtemp(prefix="wk", dir="/tmp"))
        self.settings, self.keys = _settings(tmp, run_dir)
        pid = os.getpid()
        self.me, self.owner = f"c.worker.1-{pid}", f"c.worker.2-{pid}"
        self.plane = _pull(ctx, f"ipc://{run_dir}/{env.STATEPLANE_DELTAS}")
        self.timers = _pull(ctx, sockets.endpoint(str(run_dir), "timers", f"c.timers.1-{pid}"))
        self.other = _pull(ctx, sockets.endpoint(str(run_dir), "worker", self.owner))
        self.worker = Worker(self.settings, self.me, ctx)
        self.hop = bustcp.TcpHop(ctx, asyncio.get_running_loop(), self.settings,
                                 self.worker.meter.counters)  # fmt: skip
        self.worker.bus.open_tcp(self.hop)
        self.counters = self.worker.meter.counters
        #: a context of the clients' own: the worker's holds its ZAP handler
        self.client_ctx: zmq.Context[Any] = zmq.Context()
        self.ks: list[list[Any]] = []

    def client(self, host: str) -> zmq.Socket[bytes]:
        """A CURVE PUSH to the worker holding ``host``'s listed key."""
        sock: zmq.Socket[bytes] = self.client_ctx.socket(zmq.PUSH)
        sock.linger = 0
        curve.connect_curve(sock, self.keys[host], self.keys["c"].public)
        sock.connect(self.worker.bus.tcp_endpoint)
        return sock

    def read(self) -> bool:
        """The ``k`` deltas c's state plane got so far."""
        for e in _drain(self.plane):
            if e.kind == env.KIND_DELTAS:
                self.ks += [d for d in e.header[1] if d and d[0] == "k"]
        return True

    def table_keys(self) -> list[str]:
        core = self.worker.stateful
        assert core is not None and core.dialogs is not None
        return core.dialogs.keys()

    def close(self) -> None:
        self.worker.close()
        self.hop.close()
        self.client_ctx.destroy(linger=0)
        for s in (self.plane, self.timers, self.other):
            s.close(linger=0)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _records(me: str, owner: str, n: int, *, mine: bool = False) -> list[list[Any]]:
    """``n`` snapshot records whose Call-IDs ``GONE`` owned with c's two workers and that
    ``owner`` owns without it (``mine``: that this worker ``me`` owns instead)."""
    before = WorkerSet.fixed({GONE: "", me: "", owner: ""})
    after = WorkerSet.fixed({me: "", owner: ""})
    want = me if mine else owner
    calls = [c for c in (Call(i) for i in range(400))
             if before.owner(c.call_id.encode()) == GONE
             and after.owner(c.call_id.encode()) == want][:n]  # fmt: skip
    assert len(calls) == n
    t = table(max_dialogs=1000)
    for c in calls:
        c.confirmed(t)
    records = [d[1:] for d in t.take_deltas() if d[0] == "c"]
    # as they come off the wire (msgpack gives lists where the table has tuples)
    return env.unpack(env.pack(env.KIND_ADOPT, ["b", records, True, ""])).header[1]  # type: ignore[no-any-return]


def test_a_copy_to_keep_goes_to_the_state_plane_and_never_into_the_table(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Host b hands c.worker.2 three of its vanished worker's dialogs and sends c.worker.1 the
    copy to keep: c's state plane gets ``["k", c.worker.1, c.worker.2, records]`` with the
    three records, and c.worker.1 holds none of them nor counts any refused. Without rule 6
    (the copy taken as an ``ADOPT`` of its own) they would be in its table."""

    async def body() -> None:
        c = HostC(ctx, tmp_path)
        try:
            records = _records(c.me, c.owner, 3)
            b = c.client("b")
            b.send_multipart(env.pack(env.KIND_ADOPT, ["b", records, True,
                                                       vanished_source(GONE), c.owner]))  # fmt: skip
            await until(lambda: c.read() and bool(c.ks))
            (k,) = c.ks
            assert k[:3] == ["k", c.me, c.owner]
            assert k[3] == records
            assert c.table_keys() == []
            assert not c.counters["drop_host_records"] and not c.counters["drop_adopt"]
            b.close(linger=0)
        finally:
            c.close()

    run(body, 20.0)


def test_a_copy_for_no_worker_of_ours_or_from_a_peer_not_allowed_is_refused(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """Refused and counted (``drop_host_records``, and by reason in the host view), none
    reaching c's state plane: a copy naming a worker not of this host (b's own, and a c
    ident with no socket file here), a copy whose records the named worker does not own
    (they are ours), one sent with the edge's key but naming node b (the key decides who
    speaks, never the frame), and one from the edge naming itself, whose records no worker
    of the edge ever owned. A good copy sent last is the only ``k`` to arrive."""

    async def body() -> None:
        c = HostC(ctx, tmp_path)
        try:
            records = _records(c.me, c.owner, 2)
            ours = _records(c.me, c.owner, 2, mine=True)
            gone = vanished_source(GONE)
            b, edge = c.client("b"), c.client("edge")
            refused_b = [
                ["b", records, True, gone, "b.worker-7"],  # a worker of another host
                ["b", records, True, gone, f"c.worker.9-{os.getpid()}"],  # no socket file here
                ["b", ours, True, gone, c.owner],  # not that worker's in the view
            ]
            refused_edge = [
                ["b", records, True, gone, c.owner],  # the edge's key, naming b
                ["edge", records, True, host_source("edge"), c.owner],  # never the edge's
            ]
            for header in refused_b:
                b.send_multipart(env.pack(env.KIND_ADOPT, header))
            for header in refused_edge:
                edge.send_multipart(env.pack(env.KIND_ADOPT, header))
            await until(lambda: c.counters["drop_host_records"] == 10)
            hv = c.worker.owners.hostview
            assert hv is not None
            assert hv.counters["adopt_refused_owner"] == 6, hv.counters
            assert hv.counters["adopt_refused_source"] == 2, hv.counters
            assert hv.counters["adopt_refused_origin"] == 2, hv.counters
            b.send_multipart(env.pack(env.KIND_ADOPT, ["b", records, True, gone, c.owner]))
            await until(lambda: c.read() and bool(c.ks))
            assert [k[:3] for k in c.ks] == [["k", c.me, c.owner]] and c.ks[0][3] == records
            assert c.table_keys() == []
            assert c.counters["drop_host_records"] == 10
            b.close(linger=0)
            edge.close(linger=0)
        finally:
            c.close()

    run(body, 20.0)


def test_a_copy_for_a_worker_of_ours_that_left_since_still_goes_to_the_state_plane(
        ctx: zmq.Context[Any], tmp_path: Path) -> None:  # fmt: skip
    """c.worker.2 leaves (its socket file goes) before b, whose view still has it, sends
    its copy: judged as the view was with it, the copy still reaches c's state plane, which
    hands it with c.worker.2's dialogs (or at once if they went). Before, it was refused as
    a worker not of this host, and what b handed the dead worker was lost. A worker that
    never was ours is still refused."""

    async def body() -> None:
        c = HostC(ctx, tmp_path)
        try:
            records = _records(c.me, c.owner, 2)
            c.worker.owners.refresh_peers()
            assert c.owner in c.worker.owners.peers.idents
            c.other.close(linger=0)
            sockets.unlink(sockets.endpoint(str(c.run_dir), "worker", c.owner))
            c.worker.owners.refresh_peers()
            assert c.owner not in c.worker.owners.peers.idents
            b = c.client("b")
            gone = vanished_source(GONE)
            b.send_multipart(env.pack(env.KIND_ADOPT, ["b", records, True, gone,
                                                       f"c.worker.9-{os.getpid()}"]))  # fmt: skip
            await until(lambda: c.counters["drop_host_records"] == 2)
            b.send_multipart(env.pack(env.KIND_ADOPT, ["b", records, True, gone, c.owner]))
            await until(lambda: c.read() and bool(c.ks))
            assert [k[:3] for k in c.ks] == [["k", c.me, c.owner]] and c.ks[0][3] == records
            assert c.table_keys() == [] and c.counters["drop_host_records"] == 2
            b.close(linger=0)
        finally:
            c.close()

    run(body, 20.0)
