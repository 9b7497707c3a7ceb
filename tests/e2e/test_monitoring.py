"""Monitoring a real node: ``sipline top``, ``sipline metrics`` scraped over HTTP, and
``sipline logs --summary`` over the node's own output."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import StartNode
from .node import LOCALHOST, VENV_BIN, Node, Proc, env_for, free_port, sipp_uac

pytestmark = pytest.mark.e2e

Uas = Callable[[str], tuple[int, Proc]]


@pytest.fixture
def node(start_node: StartNode, uas: Uas) -> Node:
    dport, _ = uas("u1")
    return start_node(dport, "worker=2,ingress=2")


def sipline(conf: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([f"{VENV_BIN}/sipline", *args], env=env_for(conf), input=stdin,
                          capture_output=True, text=True, timeout=30, check=False)  # fmt: skip


def test_top_once_lists_every_worker_and_ingress(node: Node) -> None:
    """``sipline top --once`` prints one table per stage with every process of the node."""
    done = sipline(node.conf, "top", "--once")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for proc in ("ingress.1-", "ingress.2-", "worker.1-", "worker.2-"):
        assert proc in out, out
    for stage in ("[ingress]", "[worker]", "[stateplane]", "[timers]"):
        assert stage in out
    assert "timers.1-" in out and "no control socket" not in out
    assert "6 processes answered" in out
    assert "\x1b[" not in out  # no screen clearing when not on a terminal


@pytest.fixture
def exporter(node: Node) -> Iterator[str]:
    """``sipline metrics`` on a free loopback port; its /metrics URL once it answers."""
    port = free_port()
    argv = [f"{VENV_BIN}/sipline", "metrics", "--port", str(port), "--address", LOCALHOST]
    proc = subprocess.Popen(argv, env=env_for(node.conf), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    url = f"http://{LOCALHOST}:{port}/metrics"
    try:
        end = time.monotonic() + 15
        while time.monotonic() < end and proc.poll() is None:
            try:
                scrape(url)
                break
            except OSError:
                time.sleep(0.1)  # polling step, bounded by the deadline
        assert proc.poll() is None, proc.communicate(timeout=5)[0]
        yield url
        proc.terminate()
        assert proc.wait(10) == 0  # SIGTERM stops it cleanly
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


def messages(got: dict[tuple[str, frozenset[tuple[str, str]]], float], stage: str) -> float:
    return sum(v for (name, labels), v in got.items() if name == "sipline_messages_total"
               and ("stage", stage) in labels and ("direction", "in") in labels)  # fmt: skip


def test_metrics_endpoint_reflects_calls(node: Node, exporter: str, tmp_path: Path) -> None:
    """A scrape shows ``sipline_messages_total`` for every worker and ingress, labelled with
    the node, stage and proc, and the counts grow by the calls sipp makes."""
    before = scrape(exporter)
    procs = {dict(labels)["proc"] for (name, labels) in before if name == "sipline_busy_ratio"}
    assert procs == {"ingress.1", "ingress.2", "worker.1", "worker.2", "timers.1", "stateplane"}
    lab = frozenset({"node": "e2e", "stage": "worker", "proc": "worker.1",
                     "direction": "in"}.items())  # fmt: skip
    assert ("sipline_messages_total", lab) in before
    res = sipp_uac(node.port, "u1", 100, 100, tmp_path)
    assert (res.successful, res.failed) == (100, 0), res.output
    after = scrape(exporter)
    # each call: INVITE, ACK, BYE in and 100/180/200, 200 back: ≥ 5 messages per call
    assert messages(after, "ingress") - messages(before, "ingress") >= 500
    assert messages(after, "worker") - messages(before, "worker") >= 500
    assert after[("sipline_processes", frozenset({"node": "e2e", "answered": "yes"}.items()))] == 6


def test_logs_summary_counts_load_stats(node: Node, tmp_path: Path) -> None:
    """``sipline logs --summary`` over the node's honcho output counts ``load_stats`` of
    every process and keeps the last one of each."""
    six = {"ingress.1", "ingress.2", "worker.1", "worker.2", "stateplane.1", "timers.1"}
    end = time.monotonic() + 10
    while not six <= {e["proc"] for e in node.proc.events("load_stats")}:
        assert time.monotonic() < end, "not every process logged load_stats"
        time.sleep(0.1)  # polling step, bounded by the deadline
    lines = list(node.proc.lines)  # what the file holds; the node goes on logging
    log = tmp_path / "node.log"
    log.write_text("\n".join(lines) + "\n")
    done = sipline(node.conf, "logs", "--summary", "--json", "--event", "load_stats", str(log))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    expected = {e["proc"] for e in Proc(node.proc.popen, lines).events("load_stats")}
    assert six <= expected
    assert set(summary["procs"]) == expected
    assert summary["events"] == {"load_stats": sum(summary["procs"].values())}
    assert all(summary["load_stats"][p]["event"] == "load_stats" for p in expected)
    text = sipline(node.conf, "logs", "--proc", "worker*", "--event", "load_stats", str(log))
    assert text.stdout and all(ln.split()[1].startswith("worker") for ln in
                               text.stdout.splitlines())  # fmt: skip
