"""sipp UAC -> sipline (real processes under honcho) -> sipp UAS, over UDP and TCP."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import Proc, UacRun, sipp_uac
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]


def test_udp_calls_complete(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """2000 UDP calls at 200 calls/s through 2 workers: every one completes."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2")
    res = sipp_uac(node.port, "u1", 2000, 200, tmp_path)
    assert (res.successful, res.failed) == (2000, 0), res.output


def test_tcp_calls_complete(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """The same over TCP (one connection each side): every call completes."""
    dport, _ = uas("t1")
    node = start_node(dport, "worker=2")
    res = sipp_uac(node.port, "t1", 2000, 200, tmp_path)
    assert (res.successful, res.failed) == (2000, 0), res.output


def test_a_call_sent_as_soon_as_the_ingress_listens_completes(
    start_node: StartNode, uas: Uas, tmp_path: Path
) -> None:
    """A node just started, and a call sent the moment its ingress says it listens: the
    ingress bound its port only once a worker had joined it (ingress/service.py rule 7), so
    the INVITE is served, not refused 503 for want of a worker (the workers come up after
    the ingress: its ``ingress_ready`` said workers 0 before)."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=2", wait=False)
    end = time.monotonic() + 30
    while not node.proc.events("ingress_listening"):
        assert time.monotonic() < end and node.proc.popen.poll() is None, node.proc.text()[-3000:]
        time.sleep(0.01)  # polling step, bounded by the deadline
    res = sipp_uac(node.port, "u1", 1, 1, tmp_path)
    assert (res.successful, res.failed) == (1, 0), res.output
    (ready,) = node.proc.events("ingress_ready")
    assert int(str(ready["workers"])) >= 1, ready
    assert not node.proc.events("no_worker_available")
    node.wait_ready(1, 2)  # as every other test starts from, before the fixture stops it


def test_scaled_stages(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """``-c worker=3,ingress=2``: two ingresses share the port, three workers; no call lost,
    and both ingresses carry calls. The kernel spreads SO_REUSEPORT datagrams by source, so
    the calls come from 12 sipp processes at once (all on one ingress: odds 1 in 2 048)."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=3,ingress=2")
    assert len({e["proc"] for e in node.proc.events("ingress_listening")}) == 2
    runs = [UacRun.start(node.port, "u1", 50, 25, tmp_path) for _ in range(12)]
    results = [run.wait() for run in runs]
    assert [(r.successful, r.failed) for r in results] == [(50, 0)] * 12, results
    ingresses = [r for r in ctl(node.conf, "stats")["stats"]  # type: ignore[attr-defined]
                 if r["role"] == "ingress"]  # fmt: skip
    assert len(ingresses) == 2 and all(r["counters"]["msgs_in"] > 100 for r in ingresses), ingresses


def test_record_route_is_on_the_wire(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """The default ``record_route``: every INVITE reaches the UAS with our Record-Route (with
    ``lr``), checked on the received bytes by the UAS scenario (a miss is written to its error
    file), and the UAC sends ACK and BYE along the route set it learnt."""
    errors = tmp_path / "uas_errors.log"
    dport, _ = uas("u1", "uas_rr_checked", extra=("-trace_err", "-error_file", str(errors)))
    node = start_node(dport, "worker=1")
    res = sipp_uac(node.port, "u1", 50, 25, tmp_path, scenario="uac_rr")
    assert (res.successful, res.failed) == (50, 0), res.output
    missed = errors.read_text().count("Failed regexp match") if errors.exists() else 0
    assert missed == 0, errors.read_text()[:2000]
