"""Fixtures for end-to-end tests: a node factory that always stops (and checks) what it ran."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .node import Node, Proc, assert_clean_stop, free_port, reap_all, sipp_uas, write_config

#: honcho SIGKILLs a process that outlives 5 s after SIGTERM; ours must be done well before
STOP_WITHIN_S = 5.0

StartNode = Callable[..., Node]


@pytest.fixture(autouse=True)
def _need_sipp() -> None:
    if shutil.which("sipp") is None:
        pytest.fail(
            "sipp is not installed (Debian package sip-tester); the test command installs it"
        )


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Whatever a test leaves running is killed after it, pipes closed (node.py rule 4); the
    fixtures that stop nodes and sipp cleanly run first, as they were set up later."""
    yield
    reap_all()


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    """``start_node(dest_port, scale="worker=2", name="e2e")`` starts a node on a free port
    (run directory ``run<i>`` under tmp_path, i counting from 0) and waits until it is ready
    (``Node.wait_ready``; ``wait=False``: returns once spawned); at teardown
    it is stopped with SIGTERM and every process must exit 0 within 5 s (unless killed)."""
    nodes: list[Node] = []

    def start(dest_port: int | list[int | str], scale: str = "worker=2", extra: str = "",
              set_extra: str = "", log_extra: str = "", name: str = "e2e",
              listen_first: str = "", wait: bool = True) -> Node:  # fmt: skip
        port = free_port()
        run_dir = tmp_path / f"run{len(nodes)}"
        conf = tmp_path / f"sipline{len(nodes)}.toml"
        write_config(conf, run_dir, port, dest_port, extra=extra, set_extra=set_extra,
                     log_extra=log_extra, name=name, listen_first=listen_first)  # fmt: skip
        node = Node.start(conf, run_dir, port, scale, wait)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        if node.killed:
            continue
        t0 = time.monotonic()
        rc, output = node.stop()
        elapsed = time.monotonic() - t0
        assert_clean_stop(rc, output)
        assert elapsed < STOP_WITHIN_S, f"node took {elapsed:.1f} s to stop"


@pytest.fixture
def uas(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Proc]]]:
    """``uas("u1"|"t1", scenario="uas")`` starts a sipp UAS running one of
    tests/e2e/scenarios/ (``uas.xml`` unless told) on a free port; killed at teardown."""
    procs: list[Proc] = []

    def start(transport: str, scenario: str = "uas", extra: tuple[str, ...] = (),
              port: int | None = None) -> tuple[int, Proc]:  # fmt: skip
        port = port or free_port()
        p = sipp_uas(port, transport, tmp_path, scenario, extra)
        procs.append(p)
        return port, p

    yield start
    for p in procs:
        p.stop(timeout_s=5)  # also closes the pipe of one that already exited
