"""The RFC 4475 / RFC 5118 torture corpus, as parameters and fixtures for the codec tests.

The corpus is vendored byte for byte in ``tests/data/sip-torture``; ``SIPLINE_TORTURE`` may
name another directory of the same layout (or its ``torture/``), and ``../shared/sip-torture``
beside the repository is the last resort. A missing corpus fails the tests that need it: a
torture test that cannot run is not a pass.
Any test taking a ``case`` argument runs once per MANIFEST row, with the row name as its id.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def torture_dir() -> Path | None:
    """The ``torture/`` directory of the corpus, or None when it cannot be found."""
    candidates = [REPO / "tests" / "data" / "sip-torture"]
    if env := os.environ.get("SIPLINE_TORTURE"):
        candidates.insert(0, Path(env))
    candidates.append(REPO / "../shared/sip-torture")
    for base in candidates:
        for d in (base / "torture", base):
            if (d / "MANIFEST.tsv").is_file():
                return d.resolve()
    return None


@dataclass(frozen=True)
class Case:
    """One MANIFEST row and the bytes a sender puts on the wire for it."""

    name: str
    expected: str  # valid / invalid / app-level
    check: str  # no-400, no-2xx, lenient, any, warn-400, response
    rfc_status: str
    kind: str  # "request METHOD" or "response CODE"
    data: bytes

    @property
    def is_request(self) -> bool:
        return self.kind.startswith("request ")

    @property
    def method_or_code(self) -> str:
        return self.kind.split(" ", 1)[1]


def load_cases() -> list[Case]:
    d = torture_dir()
    if d is None:
        return []
    with open(d / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        Case(
            name=r["name"],
            expected=r["expected"],
            check=r["check"],
            rfc_status=r["rfc_status"],
            kind=r["kind"],
            data=(d / r["send_file"]).read_bytes(),
        )
        for r in rows
    ]


CASES = load_cases()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "torture(where): run a `case` test only on the rows where where(case) is true"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = CASES
        marker = metafunc.definition.get_closest_marker("torture")
        if marker is not None:
            cases = [c for c in CASES if marker.kwargs["where"](c)]
        if cases:
            metafunc.parametrize("case", cases, ids=[c.name for c in cases])
        else:
            raise pytest.UsageError(f"no torture corpus for {metafunc.definition.nodeid}")


@pytest.fixture(scope="session")
def corpus() -> list[bytes]:
    """Every torture message's wire bytes (empty list when the corpus is absent)."""
    return [c.data for c in CASES]


@pytest.fixture(scope="session")
def torture() -> dict[str, bytes]:
    """Wire bytes of each torture message by MANIFEST name; fails without a corpus."""
    if not CASES:
        pytest.fail("no torture corpus (tests/data/sip-torture)")
    return {c.name: c.data for c in CASES}
