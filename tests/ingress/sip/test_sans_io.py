"""The codec is sans-IO (STYLE.md §3.1): no networking, event loop or logging imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ingress.sip

FORBIDDEN = {"asyncio", "zmq", "socket", "structlog", "uvloop", "selectors", "logging"}
MODULES = sorted(Path(ingress.sip.__file__).parent.glob("*.py"))


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_io_imports(path: Path) -> None:
    """No module of ingress/sip imports asyncio, zmq, socket, structlog or the like."""
    assert not imported_roots(path) & FORBIDDEN


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_only_the_codec(path: Path) -> None:
    """Imports go one way: the codec uses the stdlib and itself, nothing else of sipline."""
    assert not imported_roots(path) & {"workers", "conf", "stateplane", "timers", "sipline"}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ingress."):
            assert node.module.startswith("ingress.sip")
