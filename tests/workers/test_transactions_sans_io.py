"""The transaction layer is sans-IO (STYLE.md §3.2): no I/O, clock or logging, only the codec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import workers.txn

# "time" too: a transaction only knows the ``now`` it is given
FORBIDDEN = {"asyncio", "zmq", "socket", "structlog", "uvloop", "selectors", "logging", "time"}
MODULES = sorted(Path(workers.txn.__file__).parent.glob("*.py"))
MODULES.append(Path(workers.txn.__file__).parent.parent / "transactions.py")


def imports(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_io_imports(path: Path) -> None:
    """No module imports an event loop, sockets, a clock or a logger."""
    assert not {m.split(".")[0] for m in imports(path)} & FORBIDDEN


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_only_codec_and_itself(path: Path) -> None:
    """Of sipline it imports ingress.sip and workers.txn only (not conf, not the proxy)."""
    ours = [m for m in imports(path) if m.split(".")[0] in {"ingress", "workers", "conf"}]
    assert all(m.startswith(("ingress.sip", "workers.txn")) for m in ours), ours
