"""The RFC 4475 / RFC 5118 torture corpus over the wire, judged by its own sender."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .conftest import StartNode
from .node import LOCALHOST, REPO, free_port

pytestmark = pytest.mark.e2e

SENDER = REPO / "tests" / "data" / "sip-torture" / "send_torture.py"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


@pytest.fixture
def sink() -> Iterator[int]:
    """A UDP port that takes whatever is forwarded and never answers (TCP: refused), so
    the verdicts are the proxy's alone and nothing leaves loopback."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, port))
        yield port


@pytest.mark.parametrize(("transport", "timeout_s"), [("tcp", 90), ("udp", 240)])
def test_torture_corpus(start_node: StartNode, sink: int, transport: str, timeout_s: int) -> None:
    """Every torture message (the five responses too) is handled as its MANIFEST says, and
    the node stays alive: the responses are strays, dropped, never relayed (``bcast``)."""
    node = start_node(sink, "worker=2")
    done = subprocess.run(
        [sys.executable, str(SENDER), "--host", LOCALHOST, "--port", str(node.port),
         "--transport", transport, "--include-responses"],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip
    report = done.stdout + done.stderr
    m = SUMMARY.search(done.stdout)
    assert m is not None, report
    assert done.returncode == 0 and m.group(2) == "0", report
    assert int(m.group(1)) == 62, report  # 50 + 12 messages, responses included
