"""Dialogs follow their Call-ID between hosts (docs/dialogs.md "Across hosts"): an edge and two
worker hosts B and C, each a loopback address and a run directory of its own with no ipc path
between them, each with its state plane, timers and CDR file. While calls ring and talk, a
worker joins on C, one on B is stopped and one on C is killed; every dialog ends at the
worker that owns its Call-ID then, on whichever host, and writes its one CDR there."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .node import REPO, VENV_BIN, Proc, UacRun, env_for, free_port
from .test_ctl import ctl
from .test_dialogs import cdrs, dialogs
from .test_hosts import (
    EDGE,
    HOST_B,
    HOST_C,
    Hosts,
    joined,
    run,  # noqa: F401 (a fixture)
    start_edge,
    worker_bus,
)
from .test_worker_churn import wait_for

pytestmark = pytest.mark.e2e

CALLS = 40
#: a loaded 2-core box runs three nodes' processes and sipp: every wait is for an event
DEADLINE_S = 30.0


@pytest.fixture
def ringing_hosts(tmp_path: Path, uas: Callable[..., tuple[int, Proc]]) -> Iterator[Hosts]:
    """Hosts whose destination rings 5 s before answering (some calls ringing, some up)."""
    dport, _ = uas("u1", "uas_ring_long")
    runs = Path(tempfile.mkdtemp(prefix="slh-"))
    yield Hosts(tmp_path, free_port(), dport, free_port(), {}, runs)
    shutil.rmtree(runs, ignore_errors=True)


@pytest.fixture
def hand() -> Iterator[Callable[[Path], Proc]]:
    """``hand(conf)``: one ``sipline worker`` started by hand on a host; killed at teardown."""
    procs: list[Proc] = []

    def start(conf: Path) -> Proc:
        p = Proc.start([os.path.join(VENV_BIN, "sipline"), "worker"], env_for(conf), REPO)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.stop(signal.SIGKILL, timeout_s=5)


def host_dialogs(conf: Path) -> dict[str, Any]:
    return ctl(conf, "dialogs")["dialogs"]  # type: ignore[return-value]


def handed_all(worker: Proc) -> bool:
    """The worker heard HANDED from every source it waited for (its hand-over is done)."""
    return any(e.get("waiting") == [] for e in worker.events("handover_received"))


def test_dialogs_follow_their_call_id_across_hosts(
    ringing_hosts: Hosts, run: Callable[[Path, list[str]], Proc],  # noqa: F811 (the fixture)
    hand: Callable[[Path], Proc], tmp_path: Path,
) -> None:  # fmt: skip
    """40 calls through the edge to B's and C's workers, ringing 5 s and held 12 s. With some
    ringing and some answered, a worker joins on C, one of B's is stopped (SIGTERM) and one
    of C's killed (SIGKILL), each step once the one before has settled: every call completes,
    B's and C's CDR files hold each Call-ID exactly once between them (cause bye, answered),
    the trunk profile is back to 0 and no dialog is left on either host."""
    hosts = ringing_hosts
    edge = start_edge(hosts, run, {"b": HOST_B, "c": HOST_C})
    confs, nodes = {}, {}
    profile = '[[dialog_profile]]\nname = "trunk"\nlimit = 1000\n'
    for name, addr, other, other_addr in (("b", HOST_B, "c", HOST_C), ("c", HOST_C, "b", HOST_B)):
        extra = (
            dialogs(tmp_path / f"cdr-{name}.jsonl", profile) + "\n[stateplane]\nreplicate = true\n"
        )
        confs[name] = hosts.conf(name, addr, worker_bus(hosts), {"edge": EDGE, other: other_addr},
                                 extra=extra)  # fmt: skip
        nodes[name] = run(
            confs[name], ["start", "-c", "worker=1", "worker", "timers", "stateplane"]
        )
    term, kill = hand(confs["b"]), hand(confs["c"])
    wait_for(lambda: len(joined(edge, "b.")) == 2 and len(joined(edge, "c.")) == 2,
             "two workers of each host to join", DEADLINE_S)  # fmt: skip
    wait_for(lambda: handed_all(term) and handed_all(kill), "the hand-started workers' hand-over",
             DEADLINE_S)  # fmt: skip

    def totals() -> tuple[int, int]:
        rows = [host_dialogs(confs[n])["node"] for n in confs]
        return sum(int(r["active"]) for r in rows), sum(int(r["early"]) for r in rows)

    calls = UacRun.start(hosts.sip_port, "u1", CALLS, 10, tmp_path, timeout_s=120,
                         extra=("-d", "12000"))  # fmt: skip
    try:

        def ringing_and_answered() -> bool:
            active, early = totals()
            return active == CALLS and 0 < early < CALLS

        wait_for(ringing_and_answered, "calls both answered and ringing", DEADLINE_S)
        joiner = hand(confs["c"])
        wait_for(lambda: handed_all(joiner), "the joiner on C to be handed its dialogs", DEADLINE_S)
        term_id, kill_id = f"b.worker-{term.popen.pid}", f"c.worker-{kill.popen.pid}"
        assert term.stop(signal.SIGTERM, timeout_s=10) == 0, term.text()[-3000:]
        wait_for(lambda: any(e.get("worker") == term_id
                             for e in nodes["b"].events("worker_dialogs_moved")),
                 "B's state plane to move the stopped worker's dialogs", DEADLINE_S)  # fmt: skip
        kill.stop(signal.SIGKILL)
        wait_for(lambda: any(e.get("worker") == kill_id
                             for e in nodes["c"].events("worker_dialogs_moved")),
                 "C's state plane to move the killed worker's dialogs", DEADLINE_S)  # fmt: skip
        res = calls.wait()
    finally:
        calls.kill()
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    moved = {n: [e for e in nodes[n].events("worker_dialogs_moved") if e.get("worker")]
             for n in nodes}  # fmt: skip
    assert all(int(e["dialogs"]) > 0 for es in moved.values() for e in es), moved
    wait_for(lambda: totals()[0] == 0, "no dialog left on either host", DEADLINE_S)
    for conf in confs.values():
        assert host_dialogs(conf)["profiles"] in ({}, {"trunk": 0}), host_dialogs(conf)
    refused = [e for p in (*nodes.values(), joiner) for e in p.events("host_handover_refused")]
    assert not refused, refused
    joiner.stop(signal.SIGTERM, timeout_s=10)
    for node in nodes.values():
        node.stop(signal.SIGTERM)  # flushes the CDR writers
    rows = cdrs(tmp_path / "cdr-b.jsonl") + cdrs(tmp_path / "cdr-c.jsonl")
    ids = [r["call_id"] for r in rows]
    assert len(ids) == CALLS and len(set(ids)) == CALLS, sorted(map(str, ids))
    assert {r["cause"] for r in rows} == {"bye"} and all(r["answer"] for r in rows), rows
