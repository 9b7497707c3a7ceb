"""The state plane of a host of several (stateplane/handover.py rules 2-3), with a real
``Replication``: which workers of other hosts it takes from its workers' ``ring`` deltas, a
vanished worker's dialogs going to their owner on another host over TCP with CURVE, and
those whose CDR this host's file already holds ended here, never handed on."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import zmq

from conf import bustcp, curve
from conf import envelope as env
from conf.workerset import WorkerSet
from dialogstate.sources import vanished_source

from ..workers.dialog_helpers import Call, table
from .test_hostile import replication, short_dir, until

HOST_B, HOST_C = "127.0.0.3", "127.0.0.4"
GONE = "b.worker-4194301"  # a pid no process has (ident_pid + kill(0) say it is gone)


def host_b(tmp: Path, run_dir: str, cdr_file: Path) -> tuple[dict[str, Any], curve.KeyPair]:
    """Host b's settings (a worker host on the hop, C its peer), and C's keys."""
    b_secret, _, _ = curve.keygen(str(tmp / "b"))
    c_secret, c_public, _ = curve.keygen(str(tmp / "c"))
    data = {"node": {"name": "b", "run_dir": run_dir}, "proxy": {"mode": "stateful"},
            "dialogs": {"enabled": True, "cdr_file": str(cdr_file)},
            "stateplane": {"replicate": True},
            "curve": {"secret_key_file": str(b_secret)},
            "bus": {"address": HOST_B, "ingresses": [f"tcp://{HOST_C}:7600"]},
            "peer": [{"name": "c", "bus_address": HOST_C, "public_key_file": str(c_public)}]}  # fmt: skip
    return data, curve.load_secret(str(c_secret))


def test_ring_entries_are_checked_against_the_peers() -> None:
    """Rule 11: a worker's ring delta adds only the idents of a configured host, at its
    ``bus_address``; the rest is counted ``ring_refused``, a malformed one ``bad_delta``."""

    async def run(tmp: Path) -> None:
        run_dir = short_dir()
        data, _ = host_b(tmp, run_dir, tmp / "cdr.jsonl")
        async with replication(data) as (_, repl):
            ring = [
                ["c.worker-1", f"tcp://{HOST_C}:5001"],
                ["edge.worker-2", f"tcp://{HOST_C}:5002"],  # not the name at that address
                ["c.worker-3", "tcp://127.0.0.9:5003"],
            ]  # not c's address
            repl._on_deltas(
                env.pack(env.KIND_DELTAS, ["b.worker-1", [["ring", "b.worker-1", ring]]])
            )
            repl._on_deltas(env.pack(env.KIND_DELTAS, ["b.worker-1", [["ring", "b.worker-9", []]]]))
            assert repl.handover.hosts is not None
            assert repl.handover.hosts.remote() == {"c.worker-1": f"tcp://{HOST_C}:5001"}
            assert repl.counters["ring_refused"] == 2 and repl.counters["bad_delta"] == 1

    tmp = Path(short_dir())
    try:
        asyncio.run(run(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_vanished_workers_dialogs_go_to_their_owner_on_another_host() -> None:
    """Rules 11-12: worker GONE of host b vanished; the mirror's dialogs it owned go as ADOPT
    to C's worker (the only other worker) over CURVE, naming their source, then HANDED
    for it; the one whose CDR b's file already holds ends here (``cdr_written``). Those
    handed leave b's mirror (handover.py rule 5): a worker of C that joins later is handed
    none of them again."""

    async def run(tmp: Path) -> None:
        run_dir, cdr_file = short_dir(), tmp / "cdr.jsonl"
        data, c_keys = host_b(tmp, run_dir, cdr_file)
        async with replication(data) as (_, repl):
            # C's worker: a CURVE server with C's key that admits b's (its own ZAP handler
            # would need another context: a second one on this context would clash)
            c_ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
            try:
                b_public = curve.load_secret(data["curve"]["secret_key_file"]).public
                zap = curve.ZapHandler(c_ctx, asyncio.get_running_loop(), {b_public: "b"})
                pull = c_ctx.socket(zmq.PULL)
                pull.linger = 0
                curve.serve_curve(pull, c_keys)
                pull.bind(f"tcp://{HOST_C}:0")
                port = bustcp.parse_endpoint(pull.getsockopt_string(zmq.LAST_ENDPOINT))
                assert port is not None
                c_worker, c_ep = "c.worker-7", bustcp.endpoint(HOST_C, port[1])
                t = table(max_dialogs=100)
                calls = [Call(i) for i in range(30)]
                ring = WorkerSet.fixed({GONE: "", c_worker: ""})
                calls = [c for c in calls if ring.owner(c.call_id.encode()) == GONE][:6]
                for c in calls:
                    c.confirmed(t)
                repl._on_deltas(env.pack(env.KIND_DELTAS, [GONE, t.take_deltas()]))
                repl._on_deltas(env.pack(env.KIND_DELTAS, [GONE, [
                    ["ring", GONE, [[c_worker, c_ep]]]]]))  # fmt: skip
                ended = calls[0]
                cdr_file.write_text(json.dumps({"call_id": ended.call_id, "from_tag": ended.ftag,
                                                "cause": "bye"}) + "\n")  # fmt: skip
                repl.handover._adopt_vanished(
                    GONE, repl.handover.workers_view({}), asyncio.get_running_loop().time()
                )
                got: list[env.Envelope] = []

                async def read() -> None:
                    while len(got) < 2:
                        try:
                            got.append(env.unpack(pull.recv_multipart(zmq.NOBLOCK)))
                        except zmq.Again:
                            await asyncio.sleep(0.01)  # polling step, bounded by the timeout

                async with asyncio.timeout(10):
                    await read()
                adopt, handed = got
                assert adopt.kind == env.KIND_ADOPT and handed.kind == env.KIND_HANDED
                assert adopt.header[0] == "b" and adopt.header[3] == vanished_source(GONE)
                assert sorted(r[0] for r in adopt.header[1]) == sorted(c.call_id for c in calls[1:])
                assert handed.header == [vanished_source(GONE), c_worker]
                assert ended.call_id not in {k.partition("\0")[0] for k in repl.mirror.keys()}  # noqa: SIM118 (not iterable)
                assert repl.counters["adopt_cdr_written"] == 1
                await until(lambda: repl.counters["adopt_sent"] == 5)
                # rule 5: what went to C left the mirror; a worker that joins later and owns
                # those Call-IDs is handed nothing (a copy kept here would come back to life)
                mirrored = {k.partition("\0")[0] for k in repl.mirror.keys()}  # noqa: SIM118
                assert not mirrored & {c.call_id for c in calls}, mirrored
                assert repl.counters["moved_to_hosts"] == 5
                joiner = "c.worker-8"
                repl.handover._hand_joiner(joiner, {joiner: bustcp.endpoint(HOST_C, port[1] + 1)},
                                           asyncio.get_running_loop().time(), set())  # fmt: skip
                assert repl.counters["adopt_sent"] == 5 and repl.counters["worker_dialogs_moved"] == 5
                pull.close(linger=0)
                zap.close()
            finally:
                c_ctx.destroy(linger=0)

    tmp = Path(short_dir())
    try:
        asyncio.run(run(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class CWorkers:
    """Workers of host C for b's state plane to reach: CURVE PULLs with C's key admitting
    b's, each at its own port (one ZAP handler on a context of their own)."""

    def __init__(self, data: dict[str, Any], c_keys: curve.KeyPair, names: list[str]) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        b_public = curve.load_secret(data["curve"]["secret_key_file"]).public
        self.zap = curve.ZapHandler(self.ctx, asyncio.get_running_loop(), {b_public: "b"})
        self.pulls: dict[str, zmq.Socket[bytes]] = {}
        self.endpoints: dict[str, str] = {}
        for name in names:
            pull = self.ctx.socket(zmq.PULL)
            pull.linger = 0
            curve.serve_curve(pull, c_keys)
            pull.bind(f"tcp://{HOST_C}:0")
            port = bustcp.parse_endpoint(pull.getsockopt_string(zmq.LAST_ENDPOINT))
            assert port is not None
            self.pulls[name], self.endpoints[name] = pull, bustcp.endpoint(HOST_C, port[1])

    async def read(self, name: str, count: int) -> list[env.Envelope]:
        got: list[env.Envelope] = []
        async with asyncio.timeout(10):
            while len(got) < count:
                try:
                    got.append(env.unpack(self.pulls[name].recv_multipart(zmq.NOBLOCK)))
                except zmq.Again:
                    await asyncio.sleep(0.01)  # polling step, bounded by the timeout
        return got

    def close(self) -> None:
        self.zap.close()
        self.ctx.destroy(linger=0)


def test_a_dialog_handed_to_another_host_is_also_sent_to_a_keeper_there() -> None:
    """Rule 6, the sender's side: GONE's dialogs owned now by C's worker OWNER go to it, and
    the same records to another of C's workers, KEEPER, in an ADOPT that names OWNER fifth
    (that host's state plane keeps them until OWNER's own deltas arrive); none stays in
    b's mirror (rule 5)."""

    async def run(tmp: Path) -> None:
        data, c_keys = host_b(tmp, short_dir(), tmp / "cdr.jsonl")
        async with replication(data) as (_, repl):
            owner, keeper = "c.worker-7", "c.worker-8"
            c = CWorkers(data, c_keys, [owner, keeper])
            try:
                t = table(max_dialogs=100)
                ring = WorkerSet.fixed({GONE: "", owner: "", keeper: ""})
                after = WorkerSet.fixed({owner: "", keeper: ""})
                calls = [x for x in (Call(i) for i in range(60))
                         if ring.owner(x.call_id.encode()) == GONE
                         and after.owner(x.call_id.encode()) == owner][:4]  # fmt: skip
                for x in calls:
                    x.confirmed(t)
                repl._on_deltas(env.pack(env.KIND_DELTAS, [GONE, t.take_deltas()]))
                repl._on_deltas(env.pack(env.KIND_DELTAS, [GONE, [
                    ["ring", GONE, [[n, ep] for n, ep in c.endpoints.items()]]]]))  # fmt: skip
                loop = asyncio.get_running_loop()
                repl.handover._adopt_vanished(GONE, repl.handover.workers_view({}), loop.time())
                adopt, _ = await c.read(owner, 2)
                (kept, handed) = await c.read(keeper, 2)
                ids = sorted(x.call_id for x in calls)
                assert adopt.kind == env.KIND_ADOPT and len(adopt.header) == 4
                assert sorted(r[0] for r in adopt.header[1]) == ids
                assert kept.kind == env.KIND_ADOPT and kept.header[3:] == [
                    vanished_source(GONE), owner]  # fmt: skip
                assert kept.header[1] == adopt.header[1]
                assert handed.kind == env.KIND_HANDED
                assert not {k.partition("\0")[0] for k in repl.mirror.keys()} & set(ids)  # noqa: SIM118
            finally:
                c.close()

    tmp = Path(short_dir())
    try:
        asyncio.run(run(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_kept_copy_goes_on_when_its_owner_dies_before_its_deltas_arrive() -> None:
    """Rule 6, the keeping host's side (b here): C handed four dialogs to b's worker OWNER
    and their copies to b's KEEPER, which passed them on (``k``). OWNER's own ``c`` came
    for one, then OWNER died: the mirror's one and the three copies only kept go to their
    owner now (C's worker), each once; a copy arriving after OWNER's dialogs went goes on at
    once; one whose CDR b's file holds ends here."""

    async def run(tmp: Path) -> None:
        cdr_file = tmp / "cdr.jsonl"
        data, c_keys = host_b(tmp, short_dir(), cdr_file)
        async with replication(data) as (_, repl):
            dest = "c.worker-7"
            c = CWorkers(data, c_keys, [dest])
            try:
                t = table(max_dialogs=100)
                ring = WorkerSet.fixed({GONE: "", dest: ""})
                calls = [x for x in (Call(i) for i in range(60))
                         if ring.owner(x.call_id.encode()) == GONE][:6]  # fmt: skip
                for x in calls:
                    x.confirmed(t)
                records = [d[1:] for d in t.take_deltas() if d[0] == "c"]
                assert len(records) == 6
                repl._on_deltas(env.pack(env.KIND_DELTAS, ["b.worker-1", [
                    ["ring", "b.worker-1", [[dest, c.endpoints[dest]]]],
                    ["k", "b.worker-1", GONE, records[:4]]]]))  # fmt: skip
                # the owner's own "c" of the first: that copy is not needed any more
                repl._on_deltas(env.pack(env.KIND_DELTAS, [GONE, [["c", *records[0]]]]))
                ended = calls[3]
                cdr_file.write_text(json.dumps({"call_id": ended.call_id, "from_tag": ended.ftag,
                                                "cause": "bye"}) + "\n")  # fmt: skip
                loop = asyncio.get_running_loop()
                repl.handover._adopt_vanished(GONE, repl.handover.workers_view({}), loop.time())
                adopt, handed = await c.read(dest, 2)
                assert adopt.kind == env.KIND_ADOPT and handed.kind == env.KIND_HANDED
                assert sorted(r[0] for r in adopt.header[1]) == sorted(
                    x.call_id for x in calls[:3])  # fmt: skip
                assert repl.counters["adopt_cdr_written"] == 1
                # a copy that comes after its owner's dialogs went: handed on at once
                repl._on_deltas(env.pack(env.KIND_DELTAS, ["b.worker-1", [
                    ["k", "b.worker-1", GONE, records[4:]]]]))  # fmt: skip
                late, _ = await c.read(dest, 2)
                assert sorted(r[0] for r in late.header[1]) == sorted(x.call_id for x in calls[4:])
            finally:
                c.close()

    tmp = Path(short_dir())
    try:
        asyncio.run(run(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
