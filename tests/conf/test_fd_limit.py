"""The open-file limit: raised to the hard limit at start, connections held below it."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from conf import process
from conf.settings import Settings, Tcp
from ingress import service

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("wanted", "limit", "cap"), [
    (20_000, 1024, 1024 - process.FD_RESERVE),
    (100, 1024, 100),
    (20_000, 1 << 20, 20_000),
    (20_000, 100, 1),
])  # fmt: skip
def test_connection_cap(wanted: int, limit: int, cap: int) -> None:
    """Connections are the configured number, at most the limit less the reserve, at least 1."""
    assert process.connection_cap(wanted, limit) == cap


def test_soft_limit_raised_to_hard() -> None:
    """A process started with a soft limit of 256 runs with its hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"hard limit {hard} leaves nothing to raise")
    code = ("import resource; from conf import process; n = process.raise_fd_limit(); "
            "print(n, resource.getrlimit(resource.RLIMIT_NOFILE)[0])")  # fmt: skip

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, preexec_fn=lower,
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    got, now = map(int, done.stdout.split())
    assert got == now > 256
    if hard != resource.RLIM_INFINITY:
        assert now == hard


def test_ingress_clamps_max_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a 1 024 descriptor limit the default 20 000 connections become 768, logged once;
    within the limit the settings are kept as they are."""
    monkeypatch.setattr(process, "fd_limit", lambda: 1024)
    with capture_logs() as logs:
        tcp = service._tcp_limits(Settings())
    assert tcp.max_connections == 1024 - process.FD_RESERVE
    assert tcp.max_connections_per_ip == Tcp().max_connections_per_ip
    assert [e["event"] for e in logs] == ["tcp_max_connections_clamped"]
    assert logs[0]["configured"] == 20_000 and logs[0]["fd_limit"] == 1024
    monkeypatch.setattr(process, "fd_limit", lambda: 1 << 20)
    s = Settings()
    with capture_logs() as logs:
        assert service._tcp_limits(s) is s.tcp
    assert logs == []
