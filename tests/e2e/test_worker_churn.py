"""A worker started by hand joins a running node; killing or stopping it costs no more than
the calls it had in flight, and sipp keeps running. With dialogs, every dialog ends at the
worker that owns its Call-ID whatever joined, stopped or died (docs/dialogs.md)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import StartNode
from .node import REPO, VENV_BIN, Node, Proc, UacRun, env_for, sipp_uac
from .test_ctl import ctl
from .test_dialogs import cdrs, dialogs
from .test_failover import held

pytestmark = pytest.mark.e2e

Uas = Callable[[str], tuple[int, Proc]]

#: calls a SIGKILLed worker may cost: those whose messages it held when it died and whose
#: retransmissions ran out before the ingress declared it lost (liveness x heartbeat = 1 s)
KILL_LOSS_MAX = 10


def wait_for(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0,
             last: Callable[[], str] | None = None) -> None:  # fmt: skip
    """Poll ``predicate`` until it holds; at the deadline fail, saying what ``last`` saw."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f" ({last()})" if last else ""))
        time.sleep(0.05)  # polling step, bounded by the deadline


@pytest.fixture
def hand_worker() -> Iterator[Callable[[Node], Proc]]:
    procs: list[Proc] = []

    def start(node: Node) -> Proc:
        p = Proc.start([os.path.join(VENV_BIN, "sipline"), "worker"], env_for(node.conf), REPO)
        procs.append(p)
        wait_for(lambda: bool(p.events("worker_ready")), "the hand-started worker to start", 30)
        ident = f"worker-{p.popen.pid}"
        # the timers log worker_joined too, and may see the worker before the ingress does
        wait_for(lambda: any(e.get("worker") == ident and str(e.get("proc", "")).startswith("ingress")
                             for e in node.proc.events("worker_joined")),
                 "the ingress to see the new worker", 30)  # fmt: skip
        return p

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.stop(signal.SIGKILL, timeout_s=5)


def busy(worker: Proc) -> bool:
    return any(float(str(e.get("msgs_in_per_s", 0))) > 0 for e in worker.events("load_stats"))


def test_sigkill_loses_only_in_flight(
    start_node: StartNode, uas: Uas, hand_worker: Callable[[Node], Proc], tmp_path: Path
) -> None:
    """SIGKILL of a hand-started worker mid-run: sipp runs on, at most a few calls fail, and
    once the ingress has dropped it from the ring calls complete again with no failure."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=1")
    extra = hand_worker(node)
    run = UacRun.start(node.port, "u1", 2400, 200, tmp_path)
    try:
        wait_for(lambda: busy(extra), "traffic to reach the hand-started worker")
        extra.stop(signal.SIGKILL)
        wait_for(lambda: bool(node.proc.events("worker_lost")), "the ingress to drop the worker")
        res = run.wait()
    finally:
        run.kill()
    assert res.successful + res.failed == 2400, res.output
    assert res.failed <= KILL_LOSS_MAX, res.output
    after = sipp_uac(node.port, "u1", 400, 200, tmp_path)
    assert (after.successful, after.failed) == (400, 0), after.output


def test_sigterm_loses_nothing(
    start_node: StartNode, uas: Uas, hand_worker: Callable[[Node], Proc], tmp_path: Path
) -> None:
    """SIGTERM of a hand-started worker mid-run: it says it is down, exits 0, no call fails."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=1")
    extra = hand_worker(node)
    ident = f"worker-{extra.popen.pid}"
    run = UacRun.start(node.port, "u1", 2400, 200, tmp_path)
    try:
        wait_for(lambda: busy(extra), "traffic to reach the hand-started worker")
        assert extra.stop(signal.SIGTERM, timeout_s=5) == 0
        assert any(e.get("worker") == ident for e in node.proc.events("worker_left"))
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (2400, 0), res.output


CHURN_CALLS = 40


def node_dialogs(node: Node) -> dict[str, Any]:
    return ctl(node.conf, "dialogs")["dialogs"]  # type: ignore[return-value]


def test_dialogs_follow_their_call_id_through_join_sigterm_and_sigkill(
    start_node: StartNode, uas: Callable[..., tuple[int, Proc]],
    hand_worker: Callable[[Node], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """Dialogs, CDRs and the state plane's mirror on; one honcho worker and two started by
    hand; 40 calls held 12 s, the callee answering the first 20 at once and letting the
    others ring 20 s. With 20 calls answered and 20 still ringing, a third worker joins, one
    hand-started worker gets SIGTERM and the other SIGKILL: every call completes, the CDR file
    holds each Call-ID exactly once (cause bye, answered), the trunk profile returns to 0 and
    no dialog is left anywhere (docs/dialogs.md "Dialogs follow their Call-ID")."""
    # Not one ring time for all: "some answered, some ringing" then lasted from the first
    # answer to the last, 4 s, and on a loaded 2-core box one ctl poll took 5 s and missed it.
    dport, _ = uas("u1", "uas_ring_half")
    cdr_file = tmp_path / "cdr.jsonl"
    extra = dialogs(cdr_file, '[[dialog_profile]]\nname = "trunk"\nlimit = 1000\n') + (
        "\n[stateplane]\nreplicate = true\n")  # fmt: skip
    node = start_node(dport, "worker=1", extra)
    term, kill = hand_worker(node), hand_worker(node)
    run = UacRun.start(node.port, "u1", CHURN_CALLS, 10, tmp_path, timeout_s=90,
                       extra=("-d", "12000"))  # fmt: skip
    try:
        def ringing_and_answered() -> bool:
            # every process must answer: a worker silent past ctl's 1 s would count as none
            d = ctl(node.conf, "dialogs", "--timeout", "5")
            n = d["dialogs"]["node"]  # type: ignore[index]
            seen.append(f"{n['active']} active, {n['early']} early, silent {d['silent']}")
            return bool(not d["silent"] and n["active"] == CHURN_CALLS
                        and n["early"] == CHURN_CALLS // 2)  # fmt: skip

        seen: list[str] = []
        wait_for(ringing_and_answered, "20 calls answered and 20 ringing", 40,
                 lambda: seen[-1] if seen else "no answer")  # fmt: skip
        hand_worker(node)
        assert term.stop(signal.SIGTERM, timeout_s=5) == 0
        kill.stop(signal.SIGKILL)
        wait_for(lambda: bool(node.proc.events("worker_lost")), "the ingress to drop the killed worker",
                 30)  # fmt: skip
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (CHURN_CALLS, 0), res.output
    wait_for(lambda: node_dialogs(node)["node"]["active"] == 0, "no dialog left", 30,
             lambda: str(node_dialogs(node)))  # fmt: skip
    assert node_dialogs(node)["profiles"] in ({}, {"trunk": 0}), node_dialogs(node)
    moved = node.proc.events("worker_dialogs_moved")
    assert moved, "the state plane moved no dialog"
    node.stop()  # flushes the CDR writers
    rows = cdrs(cdr_file)
    ids = [r["call_id"] for r in rows]
    assert len(ids) == CHURN_CALLS and len(set(ids)) == CHURN_CALLS, sorted(ids)
    assert {r["cause"] for r in rows} == {"bye"} and all(r["answer"] for r in rows), rows


def test_a_killed_workers_byes_wait_for_its_dialogs(
    start_node: StartNode, uas: Callable[..., tuple[int, Proc]],
    hand_worker: Callable[[Node], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """A worker SIGKILLed while the state plane is stopped (SIGSTOP), so its dialogs cannot
    move yet; its callers hang up meanwhile. The worker that owns their Call-IDs now saw it
    gone and holds those BYEs (it expects the state plane's HANDED for the dead worker); the
    state plane resumes, moves the dialogs from its mirror, says HANDED, and the held BYEs
    end the calls: 20 calls complete, 20 CDRs (cause bye), each Call-ID once, none left."""
    dport, _ = uas("u1")
    cdr_file = tmp_path / "cdr.jsonl"
    node = start_node(dport, "worker=1", dialogs(cdr_file) + "\n[stateplane]\nreplicate = true\n")
    victim = hand_worker(node)
    calls = 20
    run = UacRun.start(node.port, "u1", calls, 10, tmp_path, timeout_s=90, extra=("-d", "9000"))
    plane = node.pid("stateplane.1")
    try:
        wait_for(lambda: node_dialogs(node)["node"]["active"] == calls, "the calls up", 20)
        rows = node_dialogs(node)["workers"]
        theirs = sum(int(r["active"]) for r in rows if r["proc"] == f"worker-{victim.popen.pid}")
        assert 0 < theirs < calls, rows
        os.kill(plane, signal.SIGSTOP)
        try:
            victim.stop(signal.SIGKILL)
            wait_for(lambda: held(node) >= theirs, "the dead worker's BYEs to be held", 30)
        finally:
            os.kill(plane, signal.SIGCONT)
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (calls, 0), res.output
    wait_for(lambda: node_dialogs(node)["node"]["active"] == 0, "no dialog left", 30,
             lambda: str(node_dialogs(node)))  # fmt: skip
    (moved,) = node.proc.events("worker_dialogs_moved")
    assert moved["dialogs"] == theirs, moved
    node.stop()  # flushes the CDR writers
    rows = cdrs(cdr_file)
    ids = [r["call_id"] for r in rows]
    assert len(ids) == calls and len(set(ids)) == calls, sorted(ids)
    assert {r["cause"] for r in rows} == {"bye"}, rows


MIRROR_CALLS = 30


def worker_active(node: Node, ident: str) -> int:
    rows = node_dialogs(node)["workers"]
    return sum(int(r["active"]) for r in rows if r["proc"] == ident)


def test_dialogs_alone_move_with_no_stateplane_section(
    start_node: StartNode, uas: Uas, hand_worker: Callable[[Node], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """``[dialogs] enabled`` with a CDR file and no ``[stateplane]`` section at all (so no
    ``replicate``), two honcho workers, 30 answered calls held 40 s. A third worker started by
    hand joins and is handed the dialogs whose Call-IDs it takes; then it is SIGKILLed and
    its dialogs go to the two others. Every call completes, the CDR file holds each Call-ID
    exactly once (cause bye), the profile is back to 0 (docs/dialogs.md "Dialogs follow their
    Call-ID": the mirror runs whenever dialogs do). On the code before this, the joiner's
    and the killed worker's calls had no CDR and the profile stayed above 0."""
    dport, _ = uas("u1")
    cdr_file = tmp_path / "cdr.jsonl"
    node = start_node(dport, "worker=2",
                      dialogs(cdr_file, '[[dialog_profile]]\nname = "trunk"\nlimit = 1000\n'))
    assert "[stateplane]" not in node.conf.read_text()
    # held 40 s: the joiner starts after the calls are up, and on a loaded 2-core box a
    # worker's start alone has taken 10 s; the test polls, so a quick box waits the hold only
    run = UacRun.start(node.port, "u1", MIRROR_CALLS, 10, tmp_path, timeout_s=150,
                       extra=("-d", "40000"))  # fmt: skip
    try:
        wait_for(lambda: node_dialogs(node)["node"]["active"] == MIRROR_CALLS, "the calls up", 40)
        joiner = hand_worker(node)
        ident = f"worker-{joiner.popen.pid}"
        wait_for(lambda: any(e.get("to") == ident for e in node.proc.events("worker_dialogs_moved")),
                 "the joiner to be handed its dialogs", 30)  # fmt: skip
        wait_for(lambda: worker_active(node, ident) > 0, "the joiner to hold dialogs", 20)
        joiner.stop(signal.SIGKILL)
        wait_for(lambda: any(e.get("worker") == ident
                             for e in node.proc.events("worker_dialogs_moved")),
                 "the killed worker's dialogs to move", 30)  # fmt: skip
        res = run.wait()
    finally:
        run.kill()
    assert (res.successful, res.failed) == (MIRROR_CALLS, 0), res.output
    wait_for(lambda: node_dialogs(node)["node"]["active"] == 0, "no dialog left", 20)
    assert node_dialogs(node)["profiles"] in ({}, {"trunk": 0}), node_dialogs(node)
    node.stop()  # flushes the CDR writers
    rows = cdrs(cdr_file)
    ids = [r["call_id"] for r in rows]
    assert len(ids) == MIRROR_CALLS and len(set(ids)) == MIRROR_CALLS, sorted(ids)
    assert {r["cause"] for r in rows} == {"bye"}, rows
