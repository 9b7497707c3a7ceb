"""Import rules of the dialog state: below the process packages, and sans-IO."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {"conf", "ingress", "dialogstate", "workers", "stateplane", "timers", "sipline"}
IO_MODULES = {"asyncio", "zmq", "socket", "structlog", "uvloop", "os"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "dialogstate").glob("*.py")), ids=lambda p: p.name)
def test_dialogstate_builds_on_conf_and_sip_only(path: Path) -> None:
    """Workers and the state plane both import it, so it imports neither (nor I/O)."""
    names = _imports(path)
    ours = {n.split(".")[0] for n in names} & PROJECT
    assert ours <= {"conf", "ingress", "dialogstate"}, f"{path.name} imports {ours}"
    assert all(n.startswith("ingress.sip") for n in names if n.split(".")[0] == "ingress")
    assert not {n.split(".")[0] for n in names} & IO_MODULES, f"{path.name} does I/O"


@pytest.mark.parametrize("path", sorted((ROOT / "stateplane").glob("*.py")), ids=lambda p: p.name)
def test_stateplane_imports_no_worker_module(path: Path) -> None:
    """The state plane mirrors dialogs through dialogstate, never through workers/."""
    ours = {n.split(".")[0] for n in _imports(path)} & PROJECT
    assert "workers" not in ours, f"{path.name} imports workers"
