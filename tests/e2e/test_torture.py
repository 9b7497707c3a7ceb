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


#: one sender per transport, each from its own loopback address (each binds its Via port, UDP
#: and TCP, there), both at once against one node: the corpus is mostly waits for answers
#: that a forwarded message never gets, so running them side by side halves the test's time
SENDERS = {"udp": "127.0.0.2", "tcp": "127.0.0.3"}


def sender(port: int, transport: str, bind_ip: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SENDER), "--host", LOCALHOST, "--port", str(port),
         "--transport", transport, "--bind-ip", bind_ip, "--include-responses",
         # the default node is stateless: it keeps no transaction, so messages that share a
         # branch need no Timer J spacing (a proxy that absorbed one would fail its case)
         "--txn-window", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_torture_corpus(start_node: StartNode, sink: int) -> None:
    """Every torture message (the five responses too), over UDP and over TCP, is handled as
    its MANIFEST says, and the node stays alive: the responses are strays, dropped, never
    relayed (``bcast``)."""
    node = start_node(sink, "worker=2")
    runs = {t: sender(node.port, t, bind_ip) for t, bind_ip in SENDERS.items()}
    try:
        reports = {t: p.communicate(timeout=240)[0] for t, p in runs.items()}
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
                p.communicate()
    for transport, report in reports.items():
        m = SUMMARY.search(report)
        assert m is not None, f"{transport}: {report}"
        assert runs[transport].returncode == 0 and m.group(2) == "0", f"{transport}: {report}"
        assert int(m.group(1)) == 62, f"{transport}: {report}"  # 50 + 12, responses included
