"""Dialog lifetimes while a timers process joins and then dies (real processes, sipp both
sides): every call gets its BYE and its CDR once (docs/timers.md)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import REPO, VENV_BIN, Node, Proc, UacRun, env_for
from .test_ctl import ctl
from .test_dialogs import cdrs, dialogs
from .test_worker_churn import wait_for

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

CALLS = 90
#: calls start over 6 s and expire 8 s later, from 8 s to 14 s: a hand-started timers process
#: that joins by then (a few seconds on a loaded box) fires some of the keys it takes over
#: while others are still armed there, the state its SIGKILL must find
RATE = 15
LIFETIME_S = 8


def _timers_stats(node: Node) -> dict[str, dict[str, object]]:
    rows = ctl(node.conf, "stats")["stats"]
    return {str(r["proc"]): r for r in rows if r["role"] == "timers"}  # type: ignore[attr-defined]


def _fired(row: dict[str, object] | None) -> int:
    return 0 if row is None else int(row["counters"].get("fired", 0))  # type: ignore[attr-defined]


def test_a_timers_process_joins_then_dies_under_calls(start_node: StartNode, uas: Uas,
                                                      tmp_path: Path) -> None:  # fmt: skip
    """90 calls that never hang up (8 s lifetimes, started over 6 s) on two workers and one
    timers process. While they are up a second timers process is started by hand: half the
    keys move to it, as it comes up and while the workers announce themselves to it. Once it
    has fired some it gets SIGKILL with lifetimes still armed there: they move back. Every
    call still ends with BYE both ways, and the CDR file holds each call once, expired."""
    dport, _ = uas("u1", "uas_rr")
    cdr_file = tmp_path / "cdr.jsonl"
    node = start_node(dport, "worker=2,timers=1", dialogs(cdr_file,
                                                          f"default_lifetime_s = {LIFETIME_S}"))
    uac = UacRun.start(node.port, "u1", CALLS, RATE, tmp_path, timeout_s=60,
                       scenario="uac_wait_bye")  # fmt: skip
    hand: Proc | None = None
    try:
        wait_for(lambda: int(str(next(iter(_timers_stats(node).values()))["armed"])) >= 15,
                 "lifetimes armed at timers.1", 20)  # fmt: skip
        hand = _hand_timers(node)
        ident = f"timers-{hand.popen.pid}"
        row: dict[str, object] = {}

        def fired_some_holds_more() -> bool:
            row.update(_timers_stats(node).get(ident) or {})
            return _fired(row or None) > 0 and int(str(row.get("armed", 0))) > 0

        wait_for(fired_some_holds_more, "the hand-started timers process to fire some and hold more",
                 20)  # fmt: skip
        hand.popen.send_signal(signal.SIGKILL)
        hand.popen.wait(5)
        res = uac.wait()
    finally:
        uac.kill()
        if hand is not None and hand.popen.poll() is None:
            hand.stop(signal.SIGKILL, timeout_s=5)
    assert (res.successful, res.failed) == (CALLS, 0), res.output
    node.stop()
    rows = cdrs(cdr_file)
    assert len(rows) == CALLS and len({r["call_id"] for r in rows}) == CALLS
    assert {r["cause"] for r in rows} == {"expired"} and {r["ended_by"] for r in rows} == {"proxy"}
    lo, hi = LIFETIME_S * 1000 - 100, LIFETIME_S * 1000 + 8000
    assert all(lo <= int(str(r["talk_ms"])) <= hi for r in rows), rows


def _hand_timers(node: Node, starved: bool = False) -> Proc:
    """A ``sipline timers`` started by hand, once both workers have found it. ``starved``: it
    is stopped (SIGSTOP) as soon as it is ready, until both workers have found it, as a
    process the box gives no CPU to: its start-up wait runs out meanwhile, and what the
    workers send it (announcements, arms) waits for its handshakes."""
    p = Proc.start([os.path.join(VENV_BIN, "sipline"), "timers"], env_for(node.conf), REPO)
    ident = f"timers-{p.popen.pid}"
    if starved:
        wait_for(lambda: bool(p.events("timers_ready")), "the timers process to bind", 20)
        p.popen.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: len([e for e in node.proc.events("timers_shard_found")
                              if e.get("shard") == ident]) == 2,
                 "both workers to find the hand-started timers process", 20)  # fmt: skip
    finally:
        if starved:
            p.popen.send_signal(signal.SIGCONT)
    return p


def test_lifetimes_overdue_at_a_restart_fire_to_their_calls(start_node: StartNode, uas: Uas,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """Two workers, a timers process started by hand (honcho runs none), 40 calls with 30 s
    lifetimes. The timers process is killed (-9) before any lifetime is due, and a new one
    starts only once all are overdue, starved of CPU at first: both workers re-send every
    lifetime to it at once, along with their announcements to it, and it fires each as soon
    as it reads it. Each must reach the worker that holds the call: every call ends with BYE
    both ways and one CDR, expired. (Before timers/client.py rule 6 an arm could overtake its
    worker's announcement and fire to the other worker: calls left without BYE.)"""
    dport, _ = uas("u1", "uas_rr")
    cdr_file = tmp_path / "cdr.jsonl"
    # lifetimes long enough that none falls due while a loaded box arms all 40 and answers
    # the ctl polls before the kill (3 s failed so, and 10 s at load 8 under -n 4)
    calls, lifetime_s = 40, 30
    node = start_node(dport, "worker=2,timers=0",
                      dialogs(cdr_file, f"default_lifetime_s = {lifetime_s}"))  # fmt: skip
    procs = [_hand_timers(node)]
    ident = f"timers-{procs[0].popen.pid}"
    uac = UacRun.start(node.port, "u1", calls, 100, tmp_path, timeout_s=90,
                       scenario="uac_wait_bye")  # fmt: skip
    try:
        wait_for(lambda: int(str(_timers_stats(node)[ident]["armed"])) == calls,
                 "every lifetime armed", 20)  # fmt: skip
        all_due = time.monotonic() + lifetime_s + 0.2  # every deadline is before it
        assert _fired(_timers_stats(node)[ident]) == 0, "killed too late to prove anything"
        procs[0].popen.send_signal(signal.SIGKILL)
        procs[0].popen.wait(5)
        wait_for(lambda: time.monotonic() > all_due, "every lifetime to fall due", lifetime_s + 10)
        assert not cdr_file.exists() or not cdr_file.read_text().strip()
        procs.append(_hand_timers(node, starved=True))
        res = uac.wait()
    finally:
        uac.kill()
        for p in procs:
            if p.popen.poll() is None:
                p.stop(signal.SIGKILL, timeout_s=5)
    assert (res.successful, res.failed) == (calls, 0), res.output
    node.stop()
    rows = cdrs(cdr_file)
    assert len(rows) == calls and len({r["call_id"] for r in rows}) == calls
    assert {r["cause"] for r in rows} == {"expired"} and {r["ended_by"] for r in rows} == {"proxy"}
