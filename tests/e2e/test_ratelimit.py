"""A [[ratelimit]] pipe on a running node: sipp offers twice the limit for 10 s; the pipe
passes the limit (within 5 %), refuses the rest with 503 + Retry-After, and ctl shows it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import StartNode
from .node import Proc, sipp_uac
from .test_ctl import ctl

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]

PIPE = """
[[ratelimit]]
name = "invites"
algorithm = "sliding"
limit_per_s = 20
window_s = 1.0
methods = ["INVITE"]
retry_after_s = 5
"""


def test_pipe_holds_its_rate(start_node: StartNode, uas: Uas, tmp_path: Path) -> None:
    """400 calls at 40/s through a 20/s sliding pipe: about 200 pass (within 5 %), the rest
    get 503, and ``sipline ctl ratelimit`` counts both."""
    dport, _ = uas("u1")
    node = start_node(dport, "worker=1", PIPE)
    res = sipp_uac(node.port, "u1", 400, 40, tmp_path, timeout_s=60)
    assert res.successful + res.failed == 400, res.output
    assert 190 <= res.successful <= 210 + 20, res.output  # + the first window's allowance
    rows = ctl(node.conf, "ratelimit")["ratelimit"]
    (row,) = rows  # type: ignore[misc]
    assert row["passed"] == res.successful and row["dropped"] == res.failed, row
