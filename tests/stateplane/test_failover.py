"""Failover (docs/failover.md): the takeover of a replica's dialogs by our workers, the
virtual listeners' role hold, and the state plane's ``Failover`` driven by heartbeats with
real ZeroMQ sockets standing in for two workers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import zmq
from hypothesis import given
from hypothesis import strategies as st

from conf import envelope as env
from conf import sockets
from conf.settings import DialogProfile
from conf.workerset import WorkerSet
from dialogstate.record import RECORD
from dialogstate.table import DialogTable
from ingress.virtual import RoleHold
from stateplane import failover
from stateplane.bstar import decode_roles, encode_roles
from stateplane.failover import Failover, by_owner
from stateplane.updates import Hugz
from tests.aio import run

from ..workers.dialog_helpers import T0, W0, Call, dialog_settings, via_for
from .helpers import NODE, Pair

V = "127.0.0.10"
#: the bound of the tests that poll PULL sockets for up to 2-3 s each (tests.aio's is 5 s)
POLLS_S = 10.0
TRUNK = [DialogProfile(name="trunk", limit=10, over_limit_status=486)]


def replicated_calls(answered: int, ringing: int) -> DialogTable:
    """A replica (of node-a) holding ``answered`` confirmed and ``ringing`` early dialogs."""
    p = Pair(profiles=TRUNK)
    p.answer(p.replica.start(T0), T0)
    for n in range(answered + ringing):
        ops = ["invite", "180", "200"] if n < answered else ["invite", "180"]
        for op in ops:
            p.deliver(p.step(n, op, T0 + 1), T0 + 1)
    assert p.converged(T0 + 1)
    return p.replica.table


def ours(side: Any) -> Any:
    meta = list(side[1])
    meta[env.OUT_CONN] = 0
    return ("ing-b", tuple(meta))


def test_adopted_dialogs_become_ours() -> None:
    """Records of a replica adopted by a worker's table: the same BYEs (sent through our
    ingress), the trunk profile counts them, each lifetime is re-armed with the time it had
    left, each gets a "c" delta, and a BYE later ends it with one CDR."""
    replica = replicated_calls(answered=3, ringing=2)
    now, wall = T0 + 10, W0 + 10
    records = replica.snapshot(now, wall)
    worker = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True)
    assert worker.adopt(records, now, wall, ours) == 5
    assert len(worker) == 5 and worker.stats()["early"] == 2 and worker.counters["adopted"] == 5
    assert worker.profile_sizes() == {"trunk": 5}
    deltas = worker.take_deltas()
    assert [d[0] for d in deltas] == ["c"] * 5
    arms = {op[1]: op[2] for op in worker.timer_ops if op[0] == "arm"}
    for key, dlg in replica._table.items():  # one host's clocks: the same monotonic deadline
        assert abs(arms[key] - dlg.deadline) < 1e-3
    for key, dlg in worker._table.items():
        theirs = replica._table[key]
        assert [b.data for b in worker.build_byes(dlg, via_for)] == [
            b.data for b in replica.build_byes(theirs, via_for)]  # fmt: skip
        assert dlg.caller[0] == "ing-b" and dlg.callee[0] == "ing-b"
    c = Call(0, from_user="u0")
    worker.receive_request(c.in_dialog("BYE", 3), now + 1, wall + 1)
    (cdr,) = worker.take_cdrs()
    assert cdr["call_id"] == c.call_id and cdr["cause"] == "bye" and cdr["answer"]
    assert worker.profile_sizes() == {"trunk": 4}


def test_adopt_skips_records_that_are_not_records() -> None:
    """An ADOPT envelope's junk (any local process can send one to a worker's socket) is
    counted and skipped, never raised, and leaves the table as it was: a record that
    replaces a held dialog and then fails is refused before the held one is removed."""
    replica = replicated_calls(answered=2, ringing=0)
    now, wall = T0 + 10, W0 + 10
    good = replica.snapshot(now, wall)
    worker = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True)
    assert worker.adopt([list(r) for r in good], now, wall, ours) == 2
    i_state, i_deadline = RECORD.index("state"), RECORD.index("deadline")
    i_members, i_caller = RECORD.index("members"), RECORD.index("caller")

    def broken(i: int, value: Any) -> list[Any]:
        rec = list(good[0])  # the key of a dialog the worker holds
        rec[i] = value
        return rec

    junk: list[Any] = [[None] * len(RECORD), [1], "x", broken(i_state, 99),
                       broken(i_state, -1), broken(i_deadline, float("nan")),
                       broken(i_deadline, float("inf")), broken(i_deadline, "soon"),
                       broken(i_members, [["trunk"]]), broken(i_caller, "x"),
                       broken(i_caller, {"a": 1})]  # fmt: skip
    assert worker.adopt(junk, now, wall, ours) == 0
    assert worker.counters["adopt_refused"] == len(junk)
    assert len(worker) == 2 and worker.profile_sizes() == {"trunk": 2}


def test_adopt_rewrites_only_where_the_sides_were_reached() -> None:
    records = replicated_calls(answered=1, ringing=0).snapshot(T0 + 2, W0 + 2)
    before = [list(r) for r in records]
    DialogTable(dialog_settings(profiles=TRUNK)).adopt(records, T0 + 2, W0 + 2, ours)
    changed = {RECORD[i] for i in range(len(RECORD)) if records[0][i] != before[0][i]}
    assert changed == {"caller", "callee"}


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=200, unique=True),
       st.integers(1, 6))  # fmt: skip
def test_by_owner_agrees_with_the_ingresses(call_ids: list[str], n_workers: int) -> None:
    """The state plane hands each dialog to the worker an ingress sends its Call-ID to."""
    workers = {f"worker.{i}-{1000 + i}": f"ipc:///x/worker-{i}.ipc" for i in range(n_workers)}
    ingress_view = WorkerSet(0.1, 3)
    for ident, ep in reversed(list(workers.items())):  # another join order: same owners
        ingress_view.heartbeat(ident, ep, True, 0.0)
    groups = by_owner([[cid] for cid in call_ids], workers)
    assert sum(len(g) for g in groups.values()) == len(call_ids)
    for ident, recs in groups.items():
        for rec in recs:
            assert ingress_view.owner(rec[0].encode("utf-8", "surrogateescape")) == ident


def test_role_hold_follows_the_last_heartbeat_and_fences_on_silence() -> None:
    hold = RoleHold(heartbeat_s=0.1)
    assert not hold.want(0.0)
    hold.hugz("10.0.0.1=passive", 0.0)
    assert not hold.want(0.05)
    hold.hugz("10.0.0.1=active,10.0.0.2=passive", 0.1)
    assert hold.want(0.2) == hold.want(0.3) == {"10.0.0.1"}
    assert not hold.want(0.31)  # our state plane silent for two intervals: let go
    hold.hugz("10.0.0.1=active,10.0.0.2=active", 0.4)
    assert hold.want(0.4) == {"10.0.0.1", "10.0.0.2"}
    hold.hugz("10.0.0.1=passive", 0.5)
    assert not hold.want(0.5)


def test_roles_travel_per_address() -> None:
    roles = {"127.0.0.10": "active", "[::1]": "passive"}
    assert decode_roles(encode_roles(roles)) == roles
    assert decode_roles("") == {} and decode_roles("active") == {}


def test_failover_takes_over_on_peer_silence_and_feeds_the_owners(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """A backup hears the primary active (goes passive), then silence: it activates, says so
    at once in a heartbeat, and sends every replicated dialog to its owner worker."""
    run(lambda: _takeover(ctx, tmp_path), timeout_s=POLLS_S)


async def _takeover(ctx: zmq.Context[Any], run_dir: Path) -> None:
    pulls: dict[str, zmq.Socket[bytes]] = {}
    for i in (1, 2):
        ident = f"worker.{i}-{os.getpid()}"
        pulls[ident] = sockets.bind_pull(ctx, sockets.endpoint(str(run_dir), "worker", ident), 1000)
    replica = replicated_calls(answered=4, ringing=3)
    roles: list[str] = []
    now = asyncio.get_running_loop().time()
    fo = Failover(ctx, str(run_dir), {V: "backup"}, "node-b", 5, 0.1, now,
                  lambda: roles.append(fo.role))  # fmt: skip
    fo.peer_table = lambda: (NODE, replica)
    try:
        fo.peer_hugz(Hugz(NODE, 3, 10, f"{V}=active"), now)
        assert fo.role == f"{V}=passive" and roles == [f"{V}=passive"]
        fo.tick(now + 0.15)
        assert fo.state(V).value == "passive"  # one interval of silence is not a death
        fo.tick(now + 0.21)
        assert roles == [f"{V}=passive", f"{V}=active"]
        assert len(replica) == 0  # the dialogs are ours now
        got: dict[str, list[str]] = {}
        for _ in range(200):
            for ident, pull in pulls.items():
                try:
                    e = env.unpack(pull.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    continue
                assert e.kind == env.KIND_ADOPT and e.header[0] == NODE and not e.header[2]
                got.setdefault(ident, []).extend(r[0] for r in e.header[1])
            if sum(map(len, got.values())) == 7:
                break
            await asyncio.sleep(0.01)  # polling step: the PUSH connects asynchronously
        assert sum(map(len, got.values())) == 7
        ring = WorkerSet(1, 1)
        for ident in pulls:
            ring.heartbeat(ident, "", True, 0)
        assert all(ring.owner(cid.encode()) == ident for ident, cids in got.items() for cid in cids)
        assert fo.stats()["adopt_sent"] == 7
    finally:
        fo.close()
        for pull in pulls.values():
            pull.close(linger=0)


def test_a_peer_without_a_pair_role_is_a_fault_not_a_crash(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    async def body() -> None:
        now = asyncio.get_running_loop().time()
        fo = Failover(ctx, str(tmp_path), {V: "primary"}, "node-a", 1, 0.1, now, lambda: None)
        fo.peer_hugz(Hugz("node-b", 1, 0, ""), now)
        fo.peer_hugz(Hugz("node-b", 1, 0, f"{V}=bogus"), now)
        fo.peer_hugz(Hugz("node-b", 1, 0, "10.9.9.9=active"), now)  # not our address
        assert fo.state(V).value == "primary"
        fo.close()

    run(body)


def test_split_brain_loser_yields_and_resnapshots(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    async def body() -> None:
        now = asyncio.get_running_loop().time()
        yielded: list[bool] = []
        fo = Failover(ctx, str(tmp_path), {V: "primary"}, "node-a", 1, 0.1, now, lambda: None)
        fo.on_yield = lambda: yielded.append(True)
        fo.tick(now + 1)  # alone: active
        assert fo.state(V).value == "active"
        fo.peer_hugz(Hugz("node-b", 2, 0, f"{V}=active"), now + 1)  # a newer epoch wins
        assert fo.state(V).value == "passive" and yielded == [True] and fo.reconcile
        fo.close()

    run(body)



def test_active_active_each_node_backs_the_others_address(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Node A is primary for its address and standby for B's: with B heard, A serves only
    its own; when B falls silent A activates B's address too and takes B's calls over."""

    async def body() -> None:
        now = asyncio.get_running_loop().time()
        va, vb = "127.0.0.10", "127.0.0.11"
        took: list[int] = []
        fo = Failover(ctx, str(tmp_path), {va: "primary", vb: "backup"}, "node-a", 1, 0.1, now,
                      lambda: None)  # fmt: skip
        fo.peer_table = lambda: took.append(1) or None  # type: ignore[func-returns-value]
        fo.peer_hugz(Hugz("node-b", 1, 0, f"{va}=backup,{vb}=primary"), now)
        fo.peer_hugz(Hugz("node-b", 1, 0, f"{va}=passive,{vb}=active"), now + 0.05)
        assert decode_roles(fo.role) == {va: "active", vb: "passive"}
        fo.tick(now + 0.3)
        assert decode_roles(fo.role) == {va: "active", vb: "active"} and took == [1]
        fo.close()

    run(body)


def test_a_heartbeat_with_a_bad_role_is_refused_on_the_wire() -> None:
    from stateplane.updates import UpdateError, pack, unpack

    assert unpack(pack(Hugz("n", 1, 0, "127.0.0.10=active"))).role == "127.0.0.10=active"  # type: ignore[union-attr]
    for bad in ("active", "127.0.0.10=bogus", "127.0.0.10=active,junk", "x" * 5000):
        frames = pack(Hugz("n", 1, 0, bad))
        try:
            unpack(frames)
        except UpdateError:
            continue
        raise AssertionError(bad)


def on(records: list[list[Any]], address: str, n: int) -> list[list[Any]]:
    """``records`` with the first ``n`` callers reached on our ``address``."""
    i = RECORD.index("caller")
    for rec in records[:n]:
        meta = list(rec[i][1])
        meta[env.OUT_LOCAL_IP] = address
        rec[i] = (rec[i][0], tuple(meta))
    return records


def test_release_hands_back_the_dialogs_of_one_address_without_cdrs() -> None:
    """A failback on the worker (rule 7): the dialogs reached on the address leave with
    their timers and profile counts, a "t" delta each and no CDR; the others stay."""
    now, wall = T0 + 10, W0 + 10
    records = on(replicated_calls(answered=3, ringing=1).snapshot(now, wall), "127.0.0.11", 2)
    worker = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True)
    worker.adopt(records, now, wall)
    worker.take_deltas()
    worker.timer_ops.clear()
    assert worker.release("127.0.0.11", wall) == 2
    assert len(worker) == 2 and worker.profile_sizes() == {"trunk": 2}
    assert worker.take_cdrs() == [] and worker.counters["handed_back"] == 2
    deltas = worker.take_deltas()
    assert [(d[0], d[3]) for d in deltas] == [("t", "handed_back")] * 2
    assert {(d[1], d[2]) for d in deltas} == {(r[0], r[1]) for r in records[:2]}
    assert sorted(op[0] for op in worker.timer_ops) == ["cancel", "cancel"]
    assert worker.release("127.0.0.11", wall) == 0


def test_failback_releases_then_the_peer_adopts_only_that_address(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Active/active, rule 7: A holds B's address after B died; B is back; A's failback
    says ``backup`` for it and tells A's workers to release; B, passive, activates on that
    heartbeat and adopts from its replica of A only the dialogs reached on that address."""
    run(lambda: _failback(ctx, tmp_path), timeout_s=POLLS_S)


async def _failback(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    va, vb = "127.0.0.10", "127.0.0.11"
    pulls = {}
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        ident = f"worker.{side}-{os.getpid()}"
        ep = sockets.endpoint(str(tmp_path / side), "worker", ident)
        pulls[side] = sockets.bind_pull(ctx, ep, 1000)

    async def envelopes(side: str, count: int) -> list[env.Envelope]:
        got: list[env.Envelope] = []
        for _ in range(300):
            try:
                got.append(env.unpack(pulls[side].recv_multipart(zmq.NOBLOCK)))
            except zmq.Again:
                if len(got) >= count:
                    return got
                await asyncio.sleep(0.01)  # polling step: the PUSH connects asynchronously
        return got

    now = asyncio.get_running_loop().time()
    a = Failover(ctx, str(tmp_path / "a"), {va: "primary", vb: "backup"}, "node-a", 1, 0.1, now,
                 lambda: None, frozenset({vb}))  # fmt: skip
    wall = W0 + 10
    replica = DialogTable(dialog_settings(profiles=TRUNK), emit_deltas=False)
    replica.restore(on(replicated_calls(answered=3, ringing=1).snapshot(now, wall), vb, 2),
                    now, wall)  # fmt: skip
    b = Failover(ctx, str(tmp_path / "b"), {vb: "primary", va: "backup"}, "node-b", 2, 0.1, now,
                 lambda: None, frozenset({va}))  # fmt: skip
    b.peer_table = lambda: ("node-a", replica)
    try:
        a.peer_hugz(Hugz("node-b", 1, 0, f"{va}=backup,{vb}=primary"), now)
        a.peer_hugz(Hugz("node-b", 1, 0, f"{va}=passive,{vb}=active"), now + 0.05)
        a.tick(now + 0.3)  # B died: A takes its address
        assert decode_roles(a.role) == {va: "active", vb: "active"}
        assert a.failback(now + 0.3) == []  # nobody to hand it to
        a.peer_hugz(Hugz("node-b", 2, 0, f"{va}=backup,{vb}=primary"), now + 0.4)  # B is back
        assert decode_roles(a.role) == {va: "active", vb: "active"}  # and waits
        assert a.failback(now + 0.4) == [vb]
        assert decode_roles(a.role) == {va: "active", vb: "backup"}
        (rel,) = await envelopes("a", 1)
        assert rel.kind == env.KIND_RELEASE and rel.header == ["node-a", [vb], []]
        assert a.stats()["failbacks"] == 1

        b.peer_hugz(Hugz("node-a", 1, 0, f"{va}=active,{vb}=active"), now)
        assert decode_roles(b.role) == {va: "passive", vb: "passive"}
        b.peer_hugz(Hugz("node-a", 1, 0, a.role), now + 0.45)
        assert decode_roles(b.role) == {va: "passive", vb: "active"}
        adopted = await envelopes("b", 1)
        assert [e.kind for e in adopted] == [env.KIND_ADOPT]
        assert len(adopted[0].header[1]) == 2 and len(replica) == 2  # A's own calls stay
        assert adopted[0].header[2] is True  # handed back: the workers keep A's limit counts
        assert all(r[RECORD.index("caller")][1][env.OUT_LOCAL_IP] == vb
                   for r in adopted[0].header[1])  # fmt: skip

        a.peer_hugz(Hugz("node-b", 2, 0, b.role), now + 0.5)
        assert decode_roles(a.role) == {va: "active", vb: "passive"}
    finally:
        a.close()
        b.close()
        for pull in pulls.values():
            pull.close(linger=0)


def test_a_peer_back_with_a_new_epoch_has_all_its_calls_taken(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """The active peer restarted (a new epoch, saying primary): its calls died with it, so
    the passive node takes every replicated dialog, not only those of the address."""

    async def body() -> None:
        now = asyncio.get_running_loop().time()
        wall = W0 + 10
        replica = DialogTable(dialog_settings(profiles=TRUNK), emit_deltas=False)
        replica.restore(on(replicated_calls(answered=3, ringing=1).snapshot(now, wall), V, 2),
                        now, wall)  # fmt: skip
        fo = Failover(ctx, str(tmp_path), {V: "backup"}, "node-b", 5, 0.1, now, lambda: None)
        fo.peer_table = lambda: (NODE, replica)
        fo.peer_hugz(Hugz(NODE, 1, 0, f"{V}=active"), now)
        assert fo.state(V).value == "passive"
        fo.peer_hugz(Hugz(NODE, 2, 0, f"{V}=primary"), now + 0.05)
        assert fo.state(V).value == "active" and len(replica) == 0
        assert fo.stats()["adopt_sent"] + fo.stats()["adopt_lost"] == 4
        fo.close()

    run(body)


def test_a_lost_split_brain_lets_go_of_what_the_winner_holds(
    ctx: zmq.Context[Any], tmp_path: Path
) -> None:
    """Rule 3: once the winner's replica is whole, the loser's workers are told to let go
    of exactly the dialogs the winner holds too (it took them over); the others stay."""

    async def body() -> None:
        ident = f"worker.1-{os.getpid()}"
        pull = sockets.bind_pull(ctx, sockets.endpoint(str(tmp_path), "worker", ident), 1000)
        now = asyncio.get_running_loop().time()
        theirs = replicated_calls(answered=3, ringing=0)
        ours = [*list(theirs._table)[:2], "only-ours\0t"]
        fo = Failover(ctx, str(tmp_path), {V: "primary"}, "node-a", 1, 0.1, now, lambda: None)
        try:
            fo.tick(now + 1)
            fo.peer_hugz(Hugz("node-b", 2, 0, f"{V}=active"), now + 1)
            assert fo.reconcile
            assert fo.reconciled(ours, theirs, now + 2) == 2 and not fo.reconcile
            for _ in range(300):
                try:
                    e = env.unpack(pull.recv_multipart(zmq.NOBLOCK))
                    break
                except zmq.Again:
                    await asyncio.sleep(0.01)  # polling step: the PUSH connects asynchronously
            assert e.kind == env.KIND_RELEASE and e.header == ["node-a", [], ours[:2]]

            # the winner's third adoption reaches its replica after the snapshot: the next
            # heartbeats let go of it, once, and nothing after the window
            ours.append(list(theirs._table)[2])
            assert fo.recheck(ours, theirs, now + 3) == 1
            assert fo.recheck(ours, theirs, now + 4) == 0
            late = replicated_calls(answered=5, ringing=0)
            ours.append(list(late._table)[4])
            assert fo.recheck(ours, late, now + 2 + failover.RECONCILE_WINDOW_S) == 0
            assert fo.reconcile_until == 0.0
        finally:
            fo.close()
            pull.close(linger=0)

    run(body)


def test_release_keys_lets_go_of_those_live_here() -> None:
    now, wall = T0 + 10, W0 + 10
    worker = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True)
    worker.adopt(replicated_calls(answered=3, ringing=0).snapshot(now, wall), now, wall)
    worker.take_deltas()
    keys = list(worker._table)
    assert worker.release_keys([keys[0], "gone\0x"], wall, "peer_owns") == 1
    assert keys[0] not in worker and keys[1] in worker and worker.take_cdrs() == []
    assert [(d[0], d[3]) for d in worker.take_deltas()] == [("t", "peer_owns")]


def test_let_go_leaves_no_cdr_delta_or_timer_cancel() -> None:
    """A worker giving dialogs to a joiner (docs/dialogs.md "Dialogs follow their Call-ID"):
    they leave the table and its profile counts, and nothing else: no CDR (the new owner
    writes it), no delta (the mirror keeps them for the joiner), no timer cancel (the new
    owner re-arms the same key); adopted again elsewhere they count once."""
    now, wall = T0 + 10, W0 + 10
    records = replicated_calls(answered=2, ringing=1).snapshot(now, wall)
    old = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True, emit_deltas=True)
    old.adopt(records, now, wall)
    old.take_deltas()
    old.timer_ops.clear()
    assert old.profile_sizes() == {"trunk": 3}
    keys = old.keys()
    assert old.let_go([*keys[:2], "gone\0x"]) == 2
    assert len(old) == 1 and keys[2] in old and old.profile_sizes() == {"trunk": 1}
    assert old.take_cdrs() == [] and old.take_deltas() == [] and old.timer_ops == []
    new = DialogTable(dialog_settings(profiles=TRUNK), external_timers=True)
    new.adopt([r for r in records if r[0] + "\0" + r[1] in keys[:2]], now, wall)
    assert new.profile_sizes() == {"trunk": 2}
