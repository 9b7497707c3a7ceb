"""The copy of a hand-over across hosts kept by the receiving host's state plane itself
(``stateplane/handover.py`` rules 6 and 8): host b's state plane (a CURVE ``bind``) hands a
vanished worker's dialogs to J, the single worker of host c, whose state plane replicates b
(its SUB talks only to b's key). With no other worker on c, nothing but that state plane can
keep them until J's own deltas arrive. Two real ``Replication``s, each with a context of its
own; the workers are their socket files (ipc, for their own host) and CURVE PULLs (TCP, for
the other host)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import zmq

from conf import bustcp, curve, sockets
from conf import envelope as env
from conf.load import from_dict
from conf.workerset import WorkerSet
from dialogstate.hosts import host_source
from dialogstate.sources import vanished_source
from stateplane import updates as up
from stateplane.replication import Replication
from tests.e2e.node import free_run

from ..workers.dialog_helpers import Call, table
from .test_hostile import short_dir, until

HOST_B, HOST_C = "127.0.0.3", "127.0.0.4"
GONE = "b.worker-4194301"  # a pid no process has: b's worker that vanished
PID = os.getpid()
J, WB = f"c.worker.1-{PID}", f"b.worker.1-{PID}"  # c's only worker, and one of b's


def configs(tmp: Path, *, replicate: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Hosts b (its state plane bound at a CURVE ``bind``) and c (replicating b, unless not
    ``replicate``), each listing the other as a ``[[peer]]`` with its ``bus_address``."""
    paths = {n: curve.keygen(str(tmp / n)) for n in ("b", "c")}
    port = free_run(HOST_B, 2)
    bind = f"tcp://{HOST_B}:{port}"

    def host(name: str, addr: str, other: str, other_addr: str) -> dict[str, Any]:
        peer: dict[str, Any] = {"name": other, "bus_address": other_addr,
                                "public_key_file": str(paths[other][1])}  # fmt: skip
        sp: dict[str, Any] = {"replicate": True}
        if name == "b":
            sp["bind"] = bind.removeprefix("tcp://")
        elif replicate:
            sp["peers"], peer["stateplane"] = [bind], bind
        return {"node": {"name": name, "run_dir": short_dir()}, "proxy": {"mode": "stateful"},
                "dialogs": {"enabled": True, "cdr_file": str(tmp / f"cdr-{name}.jsonl")},
                "stateplane": sp, "curve": {"secret_key_file": str(paths[name][0])},
                # a state plane never connects to an ingress: any peer's address does
                "bus": {"address": addr, "ingresses": [f"tcp://{other_addr}:7600"]},
                "peer": [peer]}  # fmt: skip

    return host("b", HOST_B, "c", HOST_C), host("c", HOST_C, "b", HOST_B)


class TcpWorker:
    """A worker of one host as another host's state plane reaches it: a CURVE PULL with its
    host's key that admits the other host's, on a context of its own (one ZAP handler)."""

    def __init__(self, host: dict[str, Any], other: dict[str, Any], address: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        other_public = curve.load_secret(other["curve"]["secret_key_file"]).public
        self.zap = curve.ZapHandler(self.ctx, asyncio.get_running_loop(),
                                    {other_public: other["node"]["name"]})  # fmt: skip
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.linger = 0
        curve.serve_curve(self.pull, curve.load_secret(host["curve"]["secret_key_file"]))
        self.pull.bind(f"tcp://{address}:0")
        parsed = bustcp.parse_endpoint(self.pull.getsockopt_string(zmq.LAST_ENDPOINT))
        assert parsed is not None
        self.endpoint = bustcp.endpoint(address, parsed[1])

    async def read(self, count: int) -> list[env.Envelope]:
        got: list[env.Envelope] = []
        async with asyncio.timeout(10):
            while len(got) < count:
                try:
                    got.append(env.unpack(self.pull.recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    await asyncio.sleep(0.01)  # polling step, bounded by the timeout
        return got

    def close(self) -> None:
        self.zap.close()
        self.ctx.destroy(linger=0)


class Pair:
    """b's and c's state planes, J's and WB's sockets, each view set as the workers' ring
    deltas set it: b sees WB (its own) and J (c's, over TCP); c sees J and WB."""

    def __init__(self, b: Replication, c: Replication, data_b: dict[str, Any],
                 data_c: dict[str, Any]) -> None:  # fmt: skip
        self.b, self.c = b, c
        self.run_b, self.run_c = data_b["node"]["run_dir"], data_c["node"]["run_dir"]
        self.ipc_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.j_ipc = sockets.bind_pull(self.ipc_ctx, sockets.endpoint(self.run_c, "worker", J), 100)
        self.wb_ipc = sockets.bind_pull(self.ipc_ctx, sockets.endpoint(self.run_b, "worker", WB), 100)
        self.j_tcp = TcpWorker(data_c, data_b, HOST_C)
        self.wb_tcp = TcpWorker(data_b, data_c, HOST_B)
        b._on_deltas(env.pack(env.KIND_DELTAS, [WB, [["ring", WB, [[J, self.j_tcp.endpoint]]]]]))
        c._on_deltas(env.pack(env.KIND_DELTAS, [J, [["ring", J, [[WB, self.wb_tcp.endpoint]]]]]))
        c.handover.track(asyncio.get_running_loop().time())  # c's own workers: J

    async def subscribed(self) -> None:
        """Until c's SUB hears b (a message published before it is up is not for it)."""
        peer = self.c.peers[0]

        def heard() -> bool:
            self.b._publish(self.b.publisher.hugz())
            return peer.replica is not None

        await until(heard, 10.0)

    def gone_calls(self, n: int) -> list[Call]:
        """Calls whose Call-IDs GONE owned and J owns now."""
        before = WorkerSet.fixed({GONE: "", WB: "", J: ""})
        after = WorkerSet.fixed({WB: "", J: ""})
        calls = [x for x in (Call(i) for i in range(400))
                 if before.owner(x.call_id.encode()) == GONE
                 and after.owner(x.call_id.encode()) == J][:n]  # fmt: skip
        assert len(calls) == n
        return calls

    def b_holds(self, calls: list[Call]) -> list[list[Any]]:
        """b's mirror takes ``calls`` as GONE's; their records."""
        t = table(max_dialogs=1000)
        for x in calls:
            x.confirmed(t)
        deltas = t.take_deltas()
        self.b._on_deltas(env.pack(env.KIND_DELTAS, [GONE, deltas]))
        return [d[1:] for d in deltas if d[0] == "c"]

    def gone_vanishes(self) -> None:
        h = self.b.handover
        live = sockets.live_endpoints(self.run_b, "worker")
        h._adopt_vanished(GONE, h.workers_view(live), asyncio.get_running_loop().time())

    def j_dies(self) -> None:
        self.j_ipc.close(linger=0)
        sockets.unlink(sockets.endpoint(self.run_c, "worker", J))
        h = self.c.handover
        h.workers = sockets.live_endpoints(self.run_c, "worker")  # as track() reads them
        assert J not in h.workers
        h._adopt_vanished(J, h.workers_view(h.workers), asyncio.get_running_loop().time())

    def close(self) -> None:
        self.j_tcp.close()
        self.wb_tcp.close()
        self.ipc_ctx.destroy(linger=0)


@asynccontextmanager
async def pair(tmp: Path, *, replicate: bool = True) -> AsyncIterator[Pair]:
    data_b, data_c = configs(tmp, replicate=replicate)
    ctxs: list[zmq.Context[zmq.Socket[bytes]]] = [zmq.Context(), zmq.Context()]
    b = Replication(ctxs[0], from_dict(data_b))
    c = Replication(ctxs[1], from_dict(data_c))
    p = Pair(b, c, data_b, data_c)
    try:
        async with asyncio.timeout(30):
            yield p
    finally:
        p.close()
        for r, ctx in ((b, ctxs[0]), (c, ctxs[1])):
            r.close()
            ctx.destroy(linger=0)
        for d in (data_b, data_c):
            shutil.rmtree(d["node"]["run_dir"], ignore_errors=True)


def run(body: Any) -> None:
    tmp = Path(short_dir())
    try:
        asyncio.run(body(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ids(records: list[list[Any]]) -> list[str]:
    return sorted(str(r[0]) for r in records)


def test_a_single_workers_host_keeps_what_it_was_handed_in_its_state_plane() -> None:
    """GONE's dialogs go to J, c's only worker; b publishes their copy (``keep_published``,
    no ``keep_none``) and c's state plane keeps it. J's own ``c`` comes for one of them,
    then J dies: the other three go on from c's state plane to their owner now, b's worker
    WB, as J's (``stateplane:J``), each once. Without the copy on b's PUB, c's state plane
    has nothing of them and nothing is handed on: the call's dialog died with J."""

    async def body(tmp: Path) -> None:
        async with pair(tmp) as p:
            await p.subscribed()
            calls = p.gone_calls(4)
            records = p.b_holds(calls)
            p.gone_vanishes()
            (adopt, _) = await p.j_tcp.read(2)
            assert adopt.kind == env.KIND_ADOPT and ids(adopt.header[1]) == ids(records)
            assert p.b.counters["keep_published"] == 4 and not p.b.counters["keep_none"]
            await until(lambda: p.c.counters["kept_from_hosts"] == 4)
            assert not p.c.counters["keep_refused"]
            # J's own "c" for the first: that copy is not needed any more
            first = adopt.header[1][0]
            p.c._on_deltas(env.pack(env.KIND_DELTAS, [J, [["c", *first]]]))
            p.j_dies()
            got = await p.wb_tcp.read(2)
            handed = [e for e in got if e.kind == env.KIND_ADOPT]
            assert [e.header[3] for e in handed] == [vanished_source(J)]
            assert ids(handed[0].header[1]) == ids(records)  # the mirror's one and three copies
            assert got[-1].kind == env.KIND_HANDED
            # a copy that comes again (a worker keeper's, late) is not handed twice
            p.b._publish_keep(J, vanished_source(GONE), adopt.header[1])
            await until(lambda: p.c.counters["kept_from_hosts"] == 8)
            assert p.c.counters["adopt_sent"] == 4

    run(body)


def test_what_is_handed_to_a_worker_already_dead_goes_on_from_its_hosts_state_plane() -> None:
    """Changes that overlap: J dies and c's state plane hands its dialogs (none), while b's
    view still has J and b hands GONE's dialogs to it. The copy b publishes reaches c after
    J vanished there: judged as c's view was with J, it goes on at once to WB, their owner
    without J, as J's. Without that (J no worker of c any more) it is refused and the
    calls are lost with the ADOPT to a dead worker."""

    async def body(tmp: Path) -> None:
        async with pair(tmp) as p:
            await p.subscribed()
            records = p.b_holds(p.gone_calls(3))
            p.j_dies()
            (handed,) = await p.wb_tcp.read(1)
            assert handed.kind == env.KIND_HANDED and not p.c.counters["adopt_sent"]
            p.gone_vanishes()  # b does not know yet: its ring still has J
            await p.j_tcp.read(2)
            got = await p.wb_tcp.read(2)
            assert [e.kind for e in got] == [env.KIND_ADOPT, env.KIND_HANDED]
            assert got[0].header[3] == vanished_source(J)
            assert ids(got[0].header[1]) == ids(records)
            assert p.c.counters["kept_from_hosts"] == 3 and not p.c.counters["keep_refused"]

    run(body)


def test_a_copy_for_a_worker_started_since_the_last_heartbeat_is_kept() -> None:
    """A worker of c whose socket file appeared after c's state plane last read its workers
    (b's view may have it first: the edge's ring is heard at once) is one of c's: its copy is
    kept. Read only at the heartbeat, it was refused (no worker of c)."""

    async def body(tmp: Path) -> None:
        async with pair(tmp) as p:
            await p.subscribed()
            j2 = f"c.worker.2-{PID}"
            sock = sockets.bind_pull(p.ipc_ctx, sockets.endpoint(p.run_c, "worker", j2), 100)
            try:
                before = WorkerSet.fixed({GONE: "", WB: "", J: "", j2: ""})
                after = WorkerSet.fixed({WB: "", J: "", j2: ""})
                calls = [x for x in (Call(i) for i in range(400))
                         if before.owner(x.call_id.encode()) == GONE
                         and after.owner(x.call_id.encode()) == j2][:2]  # fmt: skip
                records = p.b_holds(calls)
                p.b.pub.send_multipart(up.pack(up.Keep("b", j2, vanished_source(GONE), records)))
                await until(lambda: p.c.counters["kept_from_hosts"] == 2)
                assert not p.c.counters["keep_refused"] and j2 not in p.c.handover.workers
            finally:
                sock.close(linger=0)

    run(body)


def test_without_replication_a_single_workers_host_has_no_keeper() -> None:
    """The limit that stays: c does not replicate b, so no SUB of c hears b's PUB and
    b's hand-over to J has no keeper on c (b still counts what it published)."""

    async def body(tmp: Path) -> None:
        async with pair(tmp, replicate=False) as p:
            assert not p.c.peers
            records = p.b_holds(p.gone_calls(2))
            p.gone_vanishes()
            (adopt, _) = await p.j_tcp.read(2)
            assert ids(adopt.header[1]) == ids(records)
            assert p.b.counters["keep_published"] == 2
            p.j_dies()
            got = await p.wb_tcp.read(1)
            assert [e.kind for e in got] == [env.KIND_HANDED] and not p.c.counters["adopt_sent"]

    run(body)


def test_a_copy_the_peer_may_not_hand_is_refused() -> None:
    """Rule 8, on what b's PUB really carries: c keeps nothing of a ``KEEP`` naming a worker
    of c that is not live, one whose records J does not own in c's view, one naming a
    vanished worker of c itself as the source, or one from a name that no key proved or
    that has no ``bus_address`` here; each is counted ``keep_refused``. One for a worker of
    another host is not c's to judge (``keep_not_ours``). A good one sent last is kept."""

    async def body(tmp: Path) -> None:
        async with pair(tmp) as p:
            await p.subscribed()
            records = p.b_holds(p.gone_calls(2))
            wb_owns = WorkerSet.fixed({WB: "", J: ""})
            theirs = [x for x in (Call(i) for i in range(400, 600))
                      if wb_owns.owner(x.call_id.encode()) == WB][:2]  # fmt: skip
            others = p.b_holds(theirs)
            gone = vanished_source(GONE)
            bad = [
                up.Keep("b", f"c.worker.9-{PID}", gone, records),  # not live on c
                up.Keep("b", J, gone, others),  # WB's in c's view, not J's
                up.Keep("b", J, vanished_source("c.worker-4194302"), records),  # c's, not b's
                up.Keep("b", J, host_source("c"), records),  # not b's to name
            ]
            for msg in bad:
                p.b.pub.send_multipart(up.pack(msg))
            p.b.pub.send_multipart(up.pack(up.Keep("b", WB, gone, others)))  # b's own worker
            await until(lambda: p.c.counters["keep_refused"] == 8
                        and p.c.counters["keep_not_ours"] == 2)  # fmt: skip
            now = asyncio.get_running_loop().time()
            p.c.handover.note_host_keep(None, up.Keep("b", J, gone, records), now)
            p.c.handover.note_host_keep("edge", up.Keep("edge", J, host_source("edge"), records), now)
            assert p.c.counters["keep_refused"] == 12 and not p.c.counters["kept_from_hosts"]
            p.b.pub.send_multipart(up.pack(up.Keep("b", J, gone, records)))
            await until(lambda: p.c.counters["kept_from_hosts"] == 2)
            assert p.c.counters["keep_refused"] == 12

    run(body)
