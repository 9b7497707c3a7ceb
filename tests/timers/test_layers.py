"""Import rules of timers/: it builds on conf only, and its cores are sans-IO."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TIMERS = Path(__file__).resolve().parents[2] / "timers"
PROJECT = {"conf", "ingress", "dialogstate", "workers", "stateplane", "timers", "sipline"}
#: the cores read no clock, open no socket, log nothing (STYLE.md 3.2, 3.5)
SANS_IO = ["schedule.py", "policy.py", "lateness.py", "wire.py"]
IO_MODULES = {"asyncio", "zmq", "socket", "time", "structlog", "uvloop", "os"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(TIMERS.glob("*.py")), ids=lambda p: p.name)
def test_timers_imports_conf_and_itself_only(path: Path) -> None:
    """Imports go one way: timers/ uses conf/ and nothing of ingress/, workers/ or stateplane/."""
    ours = {n.split(".")[0] for n in _imports(path)} & PROJECT
    assert ours <= {"conf", "timers"}, f"{path.name} imports {ours}"


@pytest.mark.parametrize("name", SANS_IO)
def test_cores_are_sans_io(name: str) -> None:
    """The schedule, the policy, the lateness window and the wire checks do no I/O."""
    roots = {n.split(".")[0] for n in _imports(TIMERS / name)}
    assert not roots & IO_MODULES, f"{name} imports {roots & IO_MODULES}"
