"""Active/backup takeover on loopback (docs/failover.md): node A (primary) and node B (backup)
share the virtual address 127.0.0.10; calls go through A; A dies by SIGKILL; B sees A's
heartbeats stop, binds the address, and serves A's calls to their end: BYEs, expiries, CDRs
(once) and profile limits, for answered calls and for calls still ringing."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import (
    REPO,
    VENV_BIN,
    Node,
    Proc,
    UacRun,
    assert_clean_stop,
    env_for,
    free_port,
    free_run,
    sipp_uac,
)
from .test_ctl import ctl
from .test_dialogs import cdrs, dialogs
from .test_replication import live_dialogs, poll, stateplane

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
VIRTUAL = "127.0.0.10"
VIRTUAL_B = "127.0.0.11"  # node B's own address in active/active
CALLS = 20


def pair_config(role: str, peer: Path | str, cdr_file: Path, extra: str = "",
                bind: str = "") -> str:  # fmt: skip
    return dialogs(cdr_file, extra) + f"""
[stateplane]
replicate = true
role = "{role}"
peers = ["{peer}"]
heartbeat_ms = 100
{f'bind = "{bind}"' if bind else ""}
"""


def virtual_listen(port: int, addr: str = VIRTUAL, standby: bool = False) -> str:
    return f"""
[[listen]]
transport = "udp"
address = "{addr}"
port = {port}
virtual = true
standby = {str(standby).lower()}
"""


def start_pair(start_node: StartNode, tmp_path: Path, dport: int, extra: str = "",
               scale: str = "worker=2", peers: str = "ipc") -> tuple[Node, Node, int]:  # fmt: skip
    """A (primary, active, holding the virtual address) then B (backup, passive, synced);
    ``peers="tcp"``: their state planes talk over TCP (A on 127.0.0.1, B on 127.0.0.2)."""
    vport = free_port()
    run_a, run_b = tmp_path / "run0", tmp_path / "run1"  # start_node's run<i>
    peer_a: Path | str = run_a
    peer_b: Path | str = run_b
    bind_a = bind_b = ""
    if peers == "tcp":
        # a state plane binds its PUB there and its snapshot ROUTER one above: both from the pool
        bind_a, bind_b = f"127.0.0.1:{free_run('127.0.0.1', 2)}", f"127.0.0.2:{free_run('127.0.0.2', 2)}"
        peer_a, peer_b = f"tcp://{bind_a}", f"tcp://{bind_b}"
    a = start_node(dport, scale, pair_config("primary", peer_b, tmp_path / "a.cdr", extra,
                                             bind_a),
                   name="node-a", listen_first=virtual_listen(vport))  # fmt: skip
    assert a.run_dir == run_a
    assert a.proc.wait_events("virtual_bound", 1, timeout_s=5), a.proc.text()[-3000:]
    b = start_node(dport, scale, pair_config("backup", peer_a, tmp_path / "b.cdr", extra,
                                             bind_b),
                   name="node-b", listen_first=virtual_listen(vport))  # fmt: skip
    # B is passive once it has heard A's first heartbeats: seconds when two tests share
    # the cores (the full suite runs on one pytest worker per core)
    assert poll(lambda: role_of(b, VIRTUAL) == "passive", 15), role_of(b, VIRTUAL)
    assert not b.proc.events("virtual_bound")
    return a, b, vport


def role_of(node: Node, addr: str) -> str | None:
    return (stateplane(node)["failover"] or {}).get("roles", {}).get(addr)  # type: ignore[no-any-return]


def replica_of_a(b: Node) -> dict[str, object]:
    return stateplane(b)["replicas"].get("node-a", {})  # type: ignore[no-any-return]


def a_held_on(b: Node, dialogs: int, early: int) -> bool:
    """Whether B's replica of A holds ``dialogs`` dialogs, ``early`` of them unanswered: one
    ctl call (each takes seconds on a loaded box)."""
    r = replica_of_a(b)
    return r.get("dialogs") == dialogs and r.get("early") == early


def take_over(a: Node, b: Node, calls: int) -> None:
    """SIGKILL A; B takes over within its heartbeats and adopts ``calls`` dialogs."""
    a.kill()
    (ev,) = b.proc.wait_events("failover_takeover", 1, timeout_s=10)
    assert ev["dialogs"] == calls, ev
    assert len(b.proc.wait_events("virtual_bound", 1, timeout_s=10)) == 1
    assert poll(lambda: sum(int(str(e["dialogs"])) for e in b.proc.events("dialogs_adopted"))
                == calls, 10), b.proc.events("dialogs_adopted")  # fmt: skip


@pytest.mark.parametrize("peers", ["ipc", "tcp"])
def test_backup_takes_over_answered_calls(start_node: StartNode, uas: Uas, tmp_path: Path,
                                          peers: str) -> None:  # fmt: skip
    """20 answered calls held on A, and short calls ending on A (BYEs in flight, CDRs just
    written) when A is killed: on B every held caller's BYE gets 200 and reaches the callee
    (sipp counts all 20 successful), B writes their 20 CDRs and A none; across both files no
    Call-ID has two CDRs and every short call sipp saw complete has one (A's were in its file
    when it died; a dialog B took over whose CDR A had written is forgotten: cdr_peer_files).
    The trunk profile (limit 20 per Request-URI user, across B's two workers) still counts the
    20 held calls: a 21st is refused 486 by B; once they ended, B admits calls again (nothing
    counted twice). The state planes talk over ipc, then over TCP as two hosts would."""
    dport, _ = uas("u1")
    files = f'cdr_peer_files = ["{tmp_path / "a.cdr"}", "{tmp_path / "b.cdr"}"]\n'
    profile = ('[[dialog_profile]]\nname = "trunk"\nlimit = 20\nover_limit_status = 486\n'
               'with_value = true\nvalue_from = "ruri_user"\n')  # fmt: skip
    a, b, vport = start_pair(start_node, tmp_path, dport, files + profile, peers=peers)
    # held past every poll before the 21st call (10 + 10 + 5 + 5 + 5 s): 9 s were not enough
    # on a loaded box, the holds ended and the trunk had room for the 21st (200, not 486)
    run = UacRun.start(vport, "u1", CALLS, 20, tmp_path, timeout_s=90, host=VIRTUAL,
                       extra=("-d", "40000", "-cid_str", "held-%u-%p@%s"))  # fmt: skip
    short = None
    try:
        assert poll(lambda: a_held_on(b, CALLS, 0), 10), replica_of_a(b)
        short = UacRun.start(vport, "u1", 200, 40, tmp_path, timeout_s=60, host=VIRTUAL,
                             service="short", extra=("-d", "100", "-cid_str", "short-%u-%p@%s"))
        assert poll(lambda: len(cdrs_of(tmp_path / "a.cdr")) >= 10, 10)  # calls end on A
        a.kill()
        (ev,) = b.proc.wait_events("failover_takeover", 1, timeout_s=5)
        assert ev["dialogs"] >= CALLS, ev
        assert len(b.proc.wait_events("virtual_bound", 1, timeout_s=5)) == 1
        assert poll(lambda: sum(int(str(e["dialogs"])) for e in b.proc.events("dialogs_adopted"))
                    + len(b.proc.events("dialog_already_ended")) == ev["dialogs"], 5)  # fmt: skip
        over = sipp_uac(vport, "u1", 1, 1, tmp_path, scenario="uac_busy", host=VIRTUAL,
                        timeout_s=10)  # fmt: skip
        assert (over.successful, over.failed) == (1, 0), over.output
        res = run.wait()
        res_short = short.wait()
    finally:
        run.kill()
        if short is not None:
            short.kill()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    again = sipp_uac(vport, "u1", CALLS, 50, tmp_path, host=VIRTUAL, extra=("-d", "500"))
    assert (again.successful, again.failed) == (CALLS, 0), again.output
    # a call B took over before it was answered there stays early on B (the 2xx crossed the
    # takeover): it ends at its early lifetime, with its CDR then
    listed = ctl(b.conf, "dialogs", "--list", "1000")["dialogs"]["list"]  # type: ignore[index]
    b.stop()  # flushes the CDR writers
    rows_a, rows_b = cdrs_of(tmp_path / "a.cdr"), cdrs_of(tmp_path / "b.cdr")
    per_call = Counter(str(r["call_id"]) for r in rows_a + rows_b)
    assert max(per_call.values()) == 1, per_call.most_common(3)
    held = [r for r in rows_b if str(r["call_id"]).startswith("held-")]
    assert len(held) == CALLS and not any(str(r["call_id"]).startswith("held-") for r in rows_a)
    assert {r["cause"] for r in held} == {"bye"} and all(r["answer"] for r in held), held
    assert sum(not k.startswith(("held-", "short-")) for k in per_call) == CALLS  # again's
    ended_short = [k for k in per_call if k.startswith("short-")]
    live_short = [d for d in listed if str(d["call_id"]).startswith("short-")]
    assert not {d["call_id"] for d in live_short} & set(per_call), live_short
    # replication is asynchronous (docs/dialogs.md "CDRs", limits): a short call set up in the
    # last replication lag before A's SIGKILL is unknown to B, and when its BYE reaches B it
    # is relayed without a dialog, so nobody writes its CDR. One such call was seen in a
    # full run on four pytest workers; more than a few would be a loss of this design's
    # own guarantee, not of the lag
    missing = res_short.successful - len(ended_short) - len(live_short)
    assert missing <= 2, (missing, len(ended_short), live_short, res_short.output)
    assert any(str(r["call_id"]).startswith("short-") for r in rows_a), rows_a


def cdrs_of(path: Path) -> list[dict[str, object]]:
    return cdrs(path) if path.exists() else []


#: how long the failback tests' calls last (ms): longer than their steps take on a loaded box
#: (a takeover, a restart, a resync, the failback); the tests wait for their end
HOLD_FAILBACK_MS = 90_000


def test_failback_in_an_active_backup_pair(start_node: StartNode, uas: Uas,
                                           tmp_path: Path) -> None:  # fmt: skip
    """A dies, B takes the address and A's 20 calls; A is started again and waits passive;
    ``sipline ctl failback`` on B gives the address and the 20 calls back to A, whose BYEs
    then all go through A: 20 CDRs on A, none on B."""
    dport, _ = uas("u1")
    a, b, vport = start_pair(start_node, tmp_path, dport)
    # the kill, the takeover and A's restart and sync must all come before the calls end: 14 s,
    # then 30 s were too short with four tests sharing two cores (30 s: A took back 15 of 20
    # calls, the others had ended; flakehunt run at load 15-18)
    run = UacRun.start(vport, "u1", CALLS, 20, tmp_path, timeout_s=HOLD_FAILBACK_MS / 1000 + 60,
                       host=VIRTUAL, extra=("-d", str(HOLD_FAILBACK_MS)))  # fmt: skip
    placed = time.monotonic()
    again = None
    try:
        assert poll(lambda: a_held_on(b, CALLS, 0), 10), replica_of_a(b)
        take_over(a, b, CALLS)
        again = Node.start(a.conf, a.run_dir, a.port, "worker=2")
        assert poll(lambda: role_of(again, VIRTUAL) == "passive" and (stateplane(again)[
            "replicas"].get("node-b", {}).get("dialogs") == CALLS), 20)  # fmt: skip
        assert ctl(b.conf, "failback")["failback"][0]["addresses"] == [VIRTUAL]  # type: ignore[index]
        (back,) = again.proc.wait_events("failover_takeover", 1, timeout_s=5)
        assert back["dialogs"] == CALLS and back["address"] == VIRTUAL, (
            back, f"{time.monotonic() - placed:.0f} s after the calls")  # fmt: skip
        assert poll(lambda: role_of(again, VIRTUAL) == "active"
                    and role_of(b, VIRTUAL) == "passive"
                    and live_dialogs(again) == CALLS and live_dialogs(b) == 0, 15)  # fmt: skip
        res = run.wait()
    finally:
        run.kill()
        if again is not None:
            again.stop()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    b.stop()
    rows = cdrs(tmp_path / "a.cdr")
    assert len(rows) == CALLS and len({r["call_id"] for r in rows}) == CALLS, rows
    assert not (tmp_path / "b.cdr").exists() or not cdrs(tmp_path / "b.cdr")


def test_split_brain_loser_lets_go_of_the_calls_the_winner_took(start_node: StartNode,
                                                                 uas: Uas,
                                                                 tmp_path: Path) -> None:  # fmt: skip
    """A's state plane is stopped (SIGSTOP) with 20 calls up: A's ingresses let the address
    go, B takes it and A's calls over. A's state plane resumes: both active, A (the lower
    epoch) yields, resnapshots from B, and its workers let go of the 20 calls B holds, so
    every call ends once, on B: 20 BYEs served, 20 CDRs on B, none on A."""
    dport, _ = uas("u1")
    a, b, vport = start_pair(start_node, tmp_path, dport)
    plane = a.pid("stateplane.1")
    # held past every deadline below (15 + 10 + 5 + 10 + 15 + 20 s): the last poll counts the
    # calls still up on B, and 12 s holds had ended before it on a loaded box (CI)
    run = UacRun.start(vport, "u1", CALLS, 20, tmp_path, timeout_s=120, host=VIRTUAL,
                       extra=("-d", "75000"))  # fmt: skip
    try:
        assert poll(lambda: a_held_on(b, CALLS, 0), 15), replica_of_a(b)
        os.kill(plane, signal.SIGSTOP)
        try:
            (ev,) = b.proc.wait_events("failover_takeover", 1, timeout_s=10)
            assert ev["dialogs"] == CALLS, ev
            assert a.proc.wait_events("virtual_released", 1, timeout_s=5)  # fenced
        finally:
            os.kill(plane, signal.SIGCONT)
        (sb,) = a.proc.wait_events("split_brain", 1, timeout_s=10)
        assert sb["yields"] is True, sb
        # the first reconcile may come before B's replica holds all it adopted: the total
        # let go reaches the 20 within the recheck window
        def let_go() -> int:
            return max([int(str(e["total"])) for e in a.proc.events("split_brain_reconciled")]
                       or [0])  # fmt: skip

        assert poll(lambda: let_go() == CALLS, 15), a.proc.events("split_brain_reconciled")
        assert poll(lambda: live_dialogs(a) == 0 and live_dialogs(b) == CALLS
                    and role_of(a, VIRTUAL) == "passive", 20), (
            live_dialogs(a), live_dialogs(b), role_of(a, VIRTUAL), run.popen.poll())  # fmt: skip
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    a.stop()
    b.stop()
    rows = cdrs(tmp_path / "b.cdr")
    assert len(rows) == CALLS and len({r["call_id"] for r in rows}) == CALLS, rows
    assert not (tmp_path / "a.cdr").exists() or not cdrs(tmp_path / "a.cdr")


def calls_across_takeover(a: Node, b: Node, vport: int, tmp_path: Path, replicated: str,
                          scenario: str = "uac", extra: tuple[str, ...] = (),
                          timeout_s: float = 60) -> list[dict[str, object]]:  # fmt: skip
    """CALLS calls to the virtual address; once B's replica of A holds them (all ``early`` or
    all answered), A dies and B takes over; every call must succeed; B's CDRs. The state
    waited for must last past the poll's 20 s (a ctl poll takes seconds on a loaded box)."""

    def held() -> bool:
        r = replica_of_a(b)
        return r.get("early") == CALLS if replicated == "early" else (
            r.get("dialogs") == CALLS and r.get("early") == 0)  # fmt: skip

    run = UacRun.start(vport, "u1", CALLS, 20, tmp_path, timeout_s=timeout_s, host=VIRTUAL,
                       scenario=scenario, extra=extra)  # fmt: skip
    try:
        assert poll(held, 20), replica_of_a(b)
        take_over(a, b, CALLS)
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    b.stop()  # flushes the CDR writers
    return cdrs(tmp_path / "b.cdr")


def test_backup_takes_over_ringing_calls(start_node: StartNode, uas: Uas,
                                         tmp_path: Path) -> None:  # fmt: skip
    """20 calls still ringing (the callee answers 30 s after its 180) when A dies: the 200s
    reach the callers through B, ACK and BYE go through B, and B writes 20 answered CDRs."""
    # a ring of 5 s left the poll for "all 20 early" a window of 4 s, too short on a loaded box
    dport, _ = uas("u1", "uas_ring_marked")
    a, b, vport = start_pair(start_node, tmp_path, dport)
    rows = calls_across_takeover(a, b, vport, tmp_path, "early",
                                 extra=("-d", "1000", "-cid_str", "ring-%u-%p@%s"))  # fmt: skip
    assert len(rows) == CALLS and {r["cause"] for r in rows} == {"bye"}, rows
    assert all(r["answer"] for r in rows), rows


def test_backup_expires_taken_over_calls(start_node: StartNode, uas: Uas,
                                         tmp_path: Path) -> None:  # fmt: skip
    """Callers that never hang up and a 40 s lifetime: after the takeover B's timer service
    fires the lifetimes A armed, with the time they had left, and B sends the BYEs to both
    sides (CDR cause expired)."""
    # the lifetime outlasts the poll for all 20 answered (20 s) and the takeover (10 s): with
    # 4 s, A's lifetimes fired before a loaded box's ctl poll saw the 20 (CI: 0 left on A)
    lifetime_ms = 40_000
    dport, _ = uas("u1", "uas_rr")
    a, b, vport = start_pair(start_node, tmp_path, dport,
                             f"default_lifetime_s = {lifetime_ms // 1000}")  # fmt: skip
    rows = calls_across_takeover(a, b, vport, tmp_path, "answered", scenario="uac_wait_bye",
                                 timeout_s=90)  # fmt: skip
    assert len(rows) == CALLS and {r["cause"] for r in rows} == {"expired"}, rows
    assert all(lifetime_ms - 500 <= int(str(r["talk_ms"])) <= lifetime_ms + 4000
               for r in rows), rows  # fmt: skip


def persisted(tmp_path: Path) -> str:
    """One node, stateful, dialogs with a CDR file, its dialogs kept on disk."""
    return f"""
[proxy]
mode = "stateful"

[dialogs]
enabled = true
cdr_file = "{tmp_path / "cdr"}"

[stateplane]
replicate = true
persist_dir = "{tmp_path / "state"}"
"""


def test_a_node_restarted_alone_comes_back_with_its_calls(start_node: StartNode, uas: Uas,
                                                           tmp_path: Path) -> None:  # fmt: skip
    """One node with persistence: 20 answered calls, the node SIGKILLed and started again on
    the same configuration: it restores the 20 dialogs from its snapshot and journal, the
    callers' BYEs (retransmitted across the outage) are served, 20 CDRs, nothing twice."""
    dport, _ = uas("u1")
    a = start_node(dport, "worker=2", persisted(tmp_path), name="node-a")
    run = UacRun.start(a.port, "u1", CALLS, 20, tmp_path, timeout_s=60, extra=("-d", "12000"))
    again = None
    try:
        assert poll(lambda: stateplane(a)["owned"] == CALLS
                    and live_dialogs(a) == CALLS, 10), stateplane(a)  # fmt: skip
        a.kill()
        again = Node.start(a.conf, a.run_dir, a.port, "worker=2")
        (loaded,) = again.proc.wait_events("persistence_loaded", 1, timeout_s=5)
        assert loaded["dialogs"] == CALLS and loaded["torn"] == 0, loaded
        (restored,) = again.proc.wait_events("dialogs_restored", 1, timeout_s=15)
        assert restored["dialogs"] == CALLS and restored["lost"] == 0, restored
        assert restored["workers"] == 2, restored  # the last run's two, not the first up
        res = run.wait()
    finally:
        run.kill()
        if again is not None:
            rc, output = again.stop()
            assert_clean_stop(rc, output)
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    rows = cdrs(tmp_path / "cdr")
    assert len(rows) == CALLS and {r["cause"] for r in rows} == {"bye"}, rows
    assert len({r["call_id"] for r in rows}) == CALLS


def held(node: Node) -> int:
    """Messages the node's workers hold for dialogs on their way (workers/dialogs/handover.py)."""
    replies = ctl(node.conf, "stats")["stats"]
    return sum(int(r.get("handover", {}).get("held", 0)) for r in replies  # type: ignore[attr-defined]
               if r.get("role") == "worker")  # fmt: skip


def test_byes_before_the_restore_wait_for_their_dialogs(start_node: StartNode, uas: Uas,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """Issue 11's lost CDRs: callers that hang up after a node restarted but before its state
    plane handed the restored dialogs to the workers. The restarted node runs without its
    state plane until the 20 BYEs have reached the workers: they hold them (a worker expects
    the state plane's hand-over when it starts); the state plane, started by hand, restores
    the 20 dialogs and says HANDED, and the held BYEs are served with their dialogs: every
    call ends once, 20 CDRs with cause bye. Served at once they went on statelessly and no
    CDR was ever written."""
    dport, _ = uas("u1")
    a = start_node(dport, "worker=2", persisted(tmp_path), name="node-a")
    run = UacRun.start(a.port, "u1", CALLS, 20, tmp_path, timeout_s=60, extra=("-d", "8000"))
    again = plane = None
    try:
        assert poll(lambda: stateplane(a)["owned"] == CALLS
                    and live_dialogs(a) == CALLS, 10), stateplane(a)  # fmt: skip
        a.kill()
        again = Node.start(a.conf, a.run_dir, a.port, "worker=2,stateplane=0")
        assert poll(lambda: held(again) >= CALLS, 12), held(again)
        plane = Proc.start([os.path.join(VENV_BIN, "sipline"), "stateplane"], env_for(a.conf),
                           REPO)  # fmt: skip
        (restored,) = plane.wait_events("dialogs_restored", 1, timeout_s=10)
        assert restored["dialogs"] == CALLS and restored["lost"] == 0, restored
        res = run.wait()
    finally:
        run.kill()
        if plane is not None:
            assert plane.stop() == 0, plane.text()[-3000:]
        if again is not None:
            rc, output = again.stop()
            assert_clean_stop(rc, output)
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    handed = again.proc.events("handover_received")
    assert sum(int(str(e["held"])) for e in handed) >= CALLS, handed
    rows = cdrs(tmp_path / "cdr")
    assert len(rows) == CALLS and {r["cause"] for r in rows} == {"bye"}, rows
    assert len({r["call_id"] for r in rows}) == CALLS


def start_active_active(start_node: StartNode, tmp_path: Path, dport: int,
                        limit: int) -> tuple[Node, Node, int]:  # fmt: skip
    """A on 127.0.0.10 and B on 127.0.0.11, each the standby of the other's address, with a
    trunk limit shared by the two (``profiles_cluster``); returns once each holds its own."""
    vport = free_port()
    run_a, run_b = tmp_path / "run0", tmp_path / "run1"
    trunk = f'profiles_cluster = true\n[[dialog_profile]]\nname = "trunk"\nlimit = {limit}\n'
    a = start_node(dport, "worker=2", pair_config("primary", run_b, tmp_path / "a.cdr", trunk),
                   name="node-a", listen_first=virtual_listen(vport)
                   + virtual_listen(vport, VIRTUAL_B, standby=True))  # fmt: skip
    assert len(a.proc.wait_events("virtual_bound", 1, timeout_s=5)) == 1  # its own only
    b = start_node(dport, "worker=2", pair_config("primary", run_a, tmp_path / "b.cdr", trunk),
                   name="node-b", listen_first=virtual_listen(vport, VIRTUAL_B)
                   + virtual_listen(vport, VIRTUAL, standby=True))  # fmt: skip
    # each poll asks both state planes through ctl, a second or more on a loaded box
    assert poll(lambda: role_of(a, VIRTUAL) == role_of(b, VIRTUAL_B) == "active"
                and role_of(a, VIRTUAL_B) == role_of(b, VIRTUAL) == "passive", 20)  # fmt: skip
    return a, b, vport


def calls_on_both(a: Node, b: Node, vport: int, tmp_path: Path,
                  hold_ms: int) -> tuple[UacRun, UacRun]:  # fmt: skip
    """Half the calls to each node's own address, held ``hold_ms``; returns once each node
    holds its half and A replicates B's (and not its own)."""
    half = CALLS // 2
    # sipp's -timeout ends the run, held calls and all: the hold plus a deadline for the rest
    runs = [UacRun.start(vport, "u1", half, 20, tmp_path, timeout_s=hold_ms / 1000 + 60, host=host,
                         extra=("-d", str(hold_ms))) for host in (VIRTUAL, VIRTUAL_B)]  # fmt: skip
    try:
        assert poll(lambda: live_dialogs(a) == live_dialogs(b) == half
                    and replica_of_a(a).get("dialogs") is None
                    and stateplane(a)["replicas"].get("node-b", {}).get("dialogs") == half,
                    20)  # fmt: skip
    except BaseException:
        for run in runs:
            run.kill()
        raise
    return runs[0], runs[1]


def test_active_active_each_node_takes_the_others_calls(start_node: StartNode, uas: Uas,
                                                        tmp_path: Path) -> None:  # fmt: skip
    """Both nodes take traffic, each on its own address (A 127.0.0.10, B 127.0.0.11) and
    standby for the other's, with a trunk limit shared across them: B dies, A binds B's
    address and serves B's calls to their end; A writes every CDR; the limit counts each
    surviving call once."""
    dport, _ = uas("u1")
    a, b, vport = start_active_active(start_node, tmp_path, dport, limit=25)
    vb, half = VIRTUAL_B, CALLS // 2
    # the calls must outlive the wait for them all, the takeover and the poll after it, each
    # seconds of ctl calls on a loaded box: 9 s calls could end before the poll saw 20
    on_a, on_b = calls_on_both(a, b, vport, tmp_path, hold_ms=30000)
    try:
        b.kill()
        # deadlines for events, generous: two ctl calls a poll, seconds each on a loaded box
        (ev,) = a.proc.wait_events("failover_takeover", 1, timeout_s=15)
        assert ev["dialogs"] == half, ev
        assert poll(lambda: role_of(a, vb) == "active" and live_dialogs(a) == CALLS, 20), (
            role_of(a, vb), live_dialogs(a))  # fmt: skip
        more = sipp_uac(vport, "u1", 5, 20, tmp_path, host=VIRTUAL, extra=("-d", "500"))
        assert (more.successful, more.failed) == (5, 0), more.output  # 20 + 5 <= 25
        res_a, res_b = on_a.wait(), on_b.wait()
    finally:
        on_a.kill()
        on_b.kill()
    assert (res_a.successful, res_a.failed) == (half, 0), res_a.output
    assert (res_b.successful, res_b.failed) == (half, 0), res_b.output
    a.stop()
    rows = cdrs(tmp_path / "a.cdr")
    assert len(rows) == CALLS + 5 and {r["cause"] for r in rows} == {"bye"}, rows


def test_failback_hands_the_restarted_nodes_address_and_calls_back(
        start_node: StartNode, uas: Uas, tmp_path: Path) -> None:  # fmt: skip
    """Active/active: B dies and A takes B's address (127.0.0.11) and calls; B is started
    again and waits passive; ``sipline ctl failback`` on A hands the address back: B binds
    it and adopts exactly the calls reached on it, A keeps its own; every call then ends with
    its BYE served (B's through B), one CDR each, none twice; the trunk limit shared by the
    two still counts all 20 calls once (a 21st is refused on either node)."""
    dport, _ = uas("u1")
    a, b, vport = start_active_active(start_node, tmp_path, dport, limit=20)
    vb, half = VIRTUAL_B, CALLS // 2
    # the calls must outlive a takeover, a restart, a resync, the failback and the limit's
    # checks after it: 16 s, then 30 s were not enough with four tests sharing two cores (the
    # failback found both nodes with 0 calls, flakehunt run at load 15); the test waits for
    # their end, so this is its length too
    on_a, on_b = calls_on_both(a, b, vport, tmp_path, hold_ms=HOLD_FAILBACK_MS)
    placed = time.monotonic()
    again = None
    try:
        b.kill()
        (ev,) = a.proc.wait_events("failover_takeover", 1, timeout_s=5)
        assert ev["dialogs"] == half and ev["address"] is None, ev  # the peer died: all
        assert poll(lambda: role_of(a, vb) == "active" and live_dialogs(a) == CALLS, 20)
        again = Node.start(b.conf, b.run_dir, b.port, "worker=2")
        assert poll(lambda: role_of(again, vb) == role_of(again, VIRTUAL) == "passive"
                    and (stateplane(again)["replicas"].get("node-a", {}).get("dialogs")
                         == CALLS), 10)  # fmt: skip
        assert role_of(a, vb) == "active"  # no failback by itself
        out = ctl(a.conf, "failback")["failback"]
        assert out == [{"proc": out[0]["proc"], "addresses": [vb]}], out  # type: ignore[index]
        (back,) = again.proc.wait_events("failover_takeover", 1, timeout_s=5)
        assert back["dialogs"] == half and back["address"] == vb, back
        # a loaded box takes seconds here (B's workers adopt, A's let go): the deadline is
        # generous, the poll returns as soon as both sides agree
        assert poll(lambda: role_of(a, vb) == "passive" and role_of(again, vb) == "active"
                    and role_of(a, VIRTUAL) == "active"
                    and live_dialogs(a) == live_dialogs(again) == half, 15), (
            role_of(a, vb), role_of(again, vb), role_of(a, VIRTUAL), live_dialogs(a),
            live_dialogs(again), f"{time.monotonic() - placed:.0f} s after the calls")  # fmt: skip
        handed = a.proc.events("dialogs_handed_back")
        assert sum(int(str(e["dialogs"])) for e in handed) == half, handed
        assert again.proc.events("virtual_bound")
        for node in (a, again):  # each node counts its own 10 in the trunk profile
            # polled, every worker given 5 s: one silent within ctl's 1 s, or a count not yet
            # shared, read {'trunk': 0} (flakehunt run at load ~18)
            assert poll(lambda n=node: ctl(n.conf, "dialogs", "--timeout", "5")["dialogs"][  # type: ignore[misc]
                "profiles"] == {"trunk": half}, 15), node.conf  # type: ignore[index]
        for host in (VIRTUAL, vb):  # 20 live calls against a limit of 20, on either node
            more = sipp_uac(vport, "u1", 1, 20, tmp_path, host=host, extra=("-d", "500"))
            assert (more.successful, more.failed) == (0, 1), more.output
        res_a, res_b = on_a.wait(), on_b.wait()
    finally:
        on_a.kill()
        on_b.kill()
        if again is not None:
            again.stop()
    assert (res_a.successful, res_a.failed) == (half, 0), res_a.output
    assert (res_b.successful, res_b.failed) == (half, 0), res_b.output
    a.stop()
    rows_a, rows_b = cdrs(tmp_path / "a.cdr"), cdrs(tmp_path / "b.cdr")
    assert (len(rows_a), len(rows_b)) == (half, half), (rows_a, rows_b)
    assert len({r["call_id"] for r in rows_a + rows_b}) == CALLS
    assert {r["cause"] for r in rows_a + rows_b} == {"bye"}
