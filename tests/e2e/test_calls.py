"""sipp UAC -> sipline (real processes under honcho) -> sipp UAS, over UDP and TCP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import Proc, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[[str], tuple[int, Proc]]


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


def test_scaled_stages(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """``-c worker=3,ingress=2``: two ingresses share the port, three workers; no call lost."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=3,ingress=2")
    assert len({e["proc"] for e in node.proc.events("ingress_listening")}) == 2
    res = sipp_uac(node.port, "u1", 1000, 200, tmp_path)
    assert (res.successful, res.failed) == (1000, 0), res.output
