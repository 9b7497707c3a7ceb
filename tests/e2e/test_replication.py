"""Dialog replication between two nodes on loopback (docs/stateplane.md): the backup's state
plane holds the active node's live dialogs, kept by PUB/SUB, and a late joiner gets them by
snapshot, again on ``sipline ctl sync``. Takeover and failback are in test_failover.py."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import StartNode
from .node import Node, Proc, UacRun, sipp_uac
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
CALLS = 20
#: each call is held this long, so all are live while the test looks: far longer than a test
#: takes even on a loaded box (20 s was not: a late joiner's start alone took several seconds
#: there, and the calls ended under the test). The tests kill the sipp run when done
HOLD_MS = 180_000
#: sipp's own bound on a held run (its -timeout): past the hold
HELD_TIMEOUT_S = HOLD_MS // 1000 + 30


def config(peers: list[Path], dialogs: str = "") -> str:
    quoted = ", ".join(f'"{p}"' for p in peers)
    return f"""
[proxy]
mode = "stateful"

[dialogs]
enabled = true
{dialogs}

[stateplane]
replicate = true
peers = [{quoted}]
heartbeat_ms = 100
"""


def stateplane(node: Node) -> dict[str, Any]:
    """The ``stateplane`` part of the node's ``sipline ctl stats --json`` (each process given
    5 s to answer: a loaded box's state plane can miss ctl's default 1 s)."""
    for reply in ctl(node.conf, "stats", "--timeout", "5")["stats"]:  # type: ignore[attr-defined]
        if reply.get("role") == "stateplane":
            return reply["stateplane"]  # type: ignore[no-any-return]
    raise AssertionError("no state plane answered")


def live_dialogs(node: Node) -> int:
    """The node's dialogs, every worker given 5 s to answer (a silent one would count 0)."""
    return int(ctl(node.conf, "dialogs", "--timeout", "5")["dialogs"]["node"]["active"])  # type: ignore[index]


def replicated(node: Node, peer: str) -> int:
    return int(stateplane(node)["replicas"].get(peer, {}).get("dialogs", -1))


def poll(what: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.2)  # polling step, bounded by the deadline
    return False


def test_backup_replicates_live_dialogs_and_a_late_joiner_syncs(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """20 long calls through node A: node B (subscribed before) and node C (started after the
    calls are up) both hold A's 20 live dialogs; C got them by snapshot (``replica_synced``),
    and ``sipline ctl sync`` on C asks A for a whole new one, which again holds all 20."""
    dport, _ = uas("u1")
    a = start_node(dport, "worker=2", config([]), name="node-a")
    b = start_node(dport, "worker=1", config([a.run_dir]), name="node-b")
    run = UacRun.start(a.port, "u1", CALLS, 20, tmp_path, timeout_s=HELD_TIMEOUT_S,
                       extra=("-d", str(HOLD_MS)))  # fmt: skip
    try:
        assert poll(lambda: live_dialogs(a) == CALLS, 10), f"A holds {live_dialogs(a)} dialogs"
        assert poll(lambda: replicated(b, "node-a") == CALLS, 5), stateplane(b)
        assert stateplane(a)["owned"] == CALLS
        listed = ctl(a.conf, "dialogs", "--list", "100")["dialogs"]["list"]  # type: ignore[index]
        assert len(listed) == CALLS and {d["state"] for d in listed} == {"confirmed"}, listed
        assert {str(d["proc"]).split("-")[0] for d in listed} <= {"worker.1", "worker.2"}
        assert len({d["call_id"] for d in listed}) == CALLS

        def lag_samples() -> int:  # a "c" and an "a" per call, over the stats intervals
            return sum(int(e["lag"]["node-a"]["updates"])  # type: ignore[index]
                       for e in b.proc.events("replication_stats")
                       if "node-a" in e.get("lag", {}))  # type: ignore[operator]

        assert poll(lambda: lag_samples() >= 2 * CALLS, 5), b.proc.events("replication_stats")
        c = start_node(dport, "worker=1", config([a.run_dir]), name="node-c")
        (synced,) = c.proc.wait_events("replica_synced", 1, timeout_s=20)
        assert synced["peer"] == "node-a" and synced["dialogs"] == CALLS, synced
        assert replicated(c, "node-a") == CALLS
        out = ctl(c.conf, "sync")["sync"]
        assert out == [{"proc": out[0]["proc"], "peers": [str(a.run_dir)]}], out  # type: ignore[index]
        again = c.proc.wait_events("replica_synced", 2, timeout_s=20)
        assert len(again) == 2 and again[1]["dialogs"] == CALLS, again
        assert replicated(c, "node-a") == CALLS
    finally:
        run.kill()


def test_active_active_trunk_limit_holds_across_both_nodes(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """Two nodes taking traffic, each replicating the other, a trunk limited to 10 calls with
    ``profiles_cluster``: 6 long calls through A all pass, then of 6 through B only 4 do (B
    counts A's 6), and once A's calls end B has room again."""
    dport, _ = uas("u1")
    trunk = 'profiles_cluster = true\n\n[[dialog_profile]]\nname = "trunk"\nlimit = 10\n'
    run_a, run_b = tmp_path / "run0", tmp_path / "run1"
    a = start_node(dport, "worker=2", config([run_b], trunk), name="node-a")
    b = start_node(dport, "worker=2", config([run_a], trunk), name="node-b")
    assert a.run_dir == run_a
    # A's calls last past every deadline before B's calls (6 s did not: the poll may take 10 s
    # on a loaded box), and B places its calls once each of its workers counts A's 6 (the
    # profile share's round): before, B admitted all 6 (flakehunt run at load ~18)
    on_a = UacRun.start(a.port, "u1", 6, 20, tmp_path, timeout_s=120, extra=("-d", "60000"))
    try:
        assert poll(lambda: live_dialogs(a) == 6, 20), live_dialogs(a)

        def b_counts() -> list[object]:
            rows = ctl(b.conf, "dialogs", "--timeout", "5")["dialogs"]["workers"]  # type: ignore[index]
            return [r["limits"].get("trunk") for r in rows]  # type: ignore[attr-defined]

        assert poll(lambda: b_counts() == [6, 6], 30), b_counts()
        on_b = sipp_uac(b.port, "u1", 6, 20, tmp_path, extra=("-d", "500"))
        assert (on_b.successful, on_b.failed) == (4, 2), on_b.output
        res = on_a.wait()
    finally:
        on_a.kill()
    assert (res.successful, res.failed) == (6, 0), res.output
    assert poll(lambda: live_dialogs(b) == 0, 5)
    again = sipp_uac(b.port, "u1", 10, 50, tmp_path, extra=("-d", "500"))
    assert (again.successful, again.failed) == (10, 0), again.output


def _worker_counter(node: Node, name: str) -> int:
    return sum(int(r.get("counters", {}).get(name, 0))
               for r in ctl(node.conf, "stats")["stats"]  # type: ignore[attr-defined]
               if r.get("role") == "worker")  # fmt: skip


def _pid_of(node: Node, role: str) -> int:
    from .node import _descendants

    for pid in _descendants(node.proc.popen.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.endswith(b"sipline") for a in argv[:2]) and role.encode() in argv:
            return pid
    raise AssertionError(f"no {role} process")


def test_deltas_lost_while_the_state_plane_is_stopped_are_repaired(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """The state plane is stopped (SIGSTOP) while 10 calls are held and a burst of short
    calls comes and goes; the worker's pipe to it fills and drops deltas, among them the
    ends of burst calls. Resumed, the worker resends its table and the state plane drops
    what it held that the worker no longer has: the mirror (and so every replica) is again
    the 10 held calls."""
    import os

    dport, _ = uas("u1")
    small = "\n[bus]\nhwm = 10\nmax_pending = 64\n"
    a = start_node(dport, "worker=1", config([]) + small, name="node-a")
    held = UacRun.start(a.port, "u1", 10, 20, tmp_path, timeout_s=HELD_TIMEOUT_S,
                        extra=("-d", str(HOLD_MS)))  # fmt: skip
    sp = _pid_of(a, "stateplane")
    try:
        assert poll(lambda: live_dialogs(a) == 10 and stateplane(a)["owned"] == 10, 10)
        os.kill(sp, signal.SIGSTOP)
        try:
            burst = UacRun.start(a.port, "u1", 1500, 150, tmp_path, timeout_s=30,
                                 extra=("-d", "200"))  # ~30 calls open when drops begin
            assert poll(lambda: _worker_counter(a, "drop_deltas") > 0, 15), "nothing dropped"
            burst.wait()
        finally:
            os.kill(sp, signal.SIGCONT)
        (ev,) = a.proc.wait_events("mirror_resynced", 1, timeout_s=10)
        assert ev["dialogs"] == 10 and int(ev["removed"]) > 0, ev  # ends that were lost
        assert poll(lambda: stateplane(a)["owned"] == live_dialogs(a) == 10, 5), stateplane(a)
        assert _worker_counter(a, "delta_resyncs") >= 1
    finally:
        held.kill()


def test_a_late_joiner_syncs_while_calls_come_and_go(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """Node C joins while A holds 20 long calls and short calls keep starting and ending
    (40/s): C's snapshot plus the updates it queued meanwhile converge on A's state, which
    is the 20 long calls once the short ones are over."""
    dport, _ = uas("u1")
    a = start_node(dport, "worker=2", config([]), name="node-a")
    held = UacRun.start(a.port, "u1", CALLS, 20, tmp_path, timeout_s=HELD_TIMEOUT_S,
                        extra=("-d", str(HOLD_MS)))  # fmt: skip
    churn = None
    try:
        assert poll(lambda: live_dialogs(a) == CALLS, 10)
        # up to 120 s of churn, ended once C has synced: SIGUSR1 has sipp start no new call and
        # end when the open ones have (a count of calls would end it, on a loaded box, before
        # C's start and sync are over)
        churn = UacRun.start(a.port, "u1", 4800, 40, tmp_path, timeout_s=150, extra=("-d", "300"))
        assert poll(lambda: stateplane(a)["seq"] > 4 * CALLS + 40, 10)  # churn is flowing
        c = start_node(dport, "worker=1", config([a.run_dir]), name="node-c")
        assert c.proc.wait_events("replica_synced", 1, timeout_s=30)
        assert churn.popen.poll() is None, "the short calls ended before C synced"
        churn.popen.send_signal(signal.SIGUSR1)
        res = churn.wait()
        assert res.successful > 40 and res.failed == 0, res.output
        assert poll(lambda: replicated(c, "node-a") == stateplane(a)["owned"] == CALLS, 5), (
            replicated(c, "node-a"), stateplane(a)["owned"])
        assert stateplane(c)["replicas"]["node-a"]["seq"] == stateplane(a)["seq"]
    finally:
        held.kill()
        if churn is not None:
            churn.kill()
