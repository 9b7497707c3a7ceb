"""A real ``sipline timers`` process, killed (-9) and restarted while timers are armed, with
a test-side worker (real bus, heartbeats and TimerClient): none is lost, none fires twice.

The client re-arms what it holds when the new process appears (docs/timers.md, "Restart").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from conf import sockets
from tests.timers.helpers import TestWorker, fast_settings, run, until


def _write_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "sipline.toml"
    conf.write_text(
        f'[node]\nrun_dir = "{tmp_path / "run"}"\n'
        "[bus]\nheartbeat_ms = 25\nliveness = 4\n"
        "[log]\nstats_interval_s = 0.5\n"
    )
    return conf


class TimersProcess:
    """``sipline timers`` as a child process, its stdout (JSON lines) kept in a file."""

    def __init__(self, conf: Path, log: Path, name: str = "timers.1") -> None:
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sipline.cli", "--conf", str(conf), "timers"],
            stdout=self._out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2],
            env={**os.environ, "HONCHO_PROCESS_NAME": name},
        )  # fmt: skip

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=5)  # reaped, so its pid is gone and clients see it vanish

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._out.close()


@pytest.fixture
def procs() -> Iterator[list[TimersProcess]]:
    started: list[TimersProcess] = []
    yield started
    for p in started:
        p.close()


def _live(run_dir: str) -> set[str]:
    return set(sockets.live_endpoints(run_dir, "timers"))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill9", "term"])
def test_restart_loses_nothing_and_doubles_nothing(
    ctx: zmq.Context[Any], tmp_path: Path, procs: list[TimersProcess], sig: int
) -> None:
    """3 000 timers over 2.5 s; the timers process dies after ~1 s and a new one starts:
    every timer fires exactly once, never early."""
    conf, log = _write_conf(tmp_path), tmp_path / "timers.log"
    settings = fast_settings(str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)  # before the in-process worker binds in it
    run_dir = settings.node.run_dir

    async def body() -> None:
        procs.append(TimersProcess(conf, log))
        w = TestWorker(ctx, settings, "worker.1")
        await until(lambda: len(w.timers.shards) == 1)
        first = w.timers.shards[0]
        start = time.monotonic()
        keys = [f"call-{i}@sipline" for i in range(3000)]
        for i, k in enumerate(keys):
            w.timers.arm(k, start + 0.3 + 2.2 * i / len(keys), "dialog", str(i).encode())
        await until(lambda: len(w.fired) > 600)
        procs[0].kill(sig)
        fired_before = len(w.fired)
        procs.append(TimersProcess(conf, log))
        await until(lambda: _live(run_dir) - {first} != set())
        await until(lambda: len(w.counts()) >= len(keys))
        await w.markers_fired(after=start + 2.5)  # duplicates, if any, came before them
        counts = w.counts()
        assert counts == Counter(keys), f"lost {set(keys) - set(counts)}, doubled " + str(
            [k for k, n in counts.items() if n > 1])
        assert all(at >= f.deadline for f, at in w.fired)
        assert fired_before < len(keys)  # the restart really came while timers were armed
        w.close()

    run(body, timeout_s=20.0)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    stats = [e for e in events if e.get("event") == "load_stats"]
    assert stats and {"late_p50_ms", "late_p99_ms", "late_max_ms", "overruns"} <= stats[-1].keys()


def test_two_shards_one_killed_then_back(
    ctx: zmq.Context[Any], tmp_path: Path, procs: list[TimersProcess]
) -> None:
    """``-c timers=2``: keys split over two processes; one is killed (-9), its keys move to
    the other, then a new one starts and keys move back, all while timers fire: each fires
    exactly once, never early."""
    conf, log = _write_conf(tmp_path), tmp_path / "timers.log"
    settings = fast_settings(str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)  # before the in-process worker binds in it

    async def body() -> None:
        procs.extend([TimersProcess(conf, log, "timers.1"), TimersProcess(conf, log, "timers.2")])
        w = TestWorker(ctx, settings, "worker.1")
        await until(lambda: len(w.timers.shards) == 2)
        start = time.monotonic()
        keys = [f"call-{i}@sipline" for i in range(3000)]
        for i, k in enumerate(keys):
            w.timers.arm(k, start + 0.3 + 2.7 * i / len(keys), "dialog")
        await until(lambda: len(w.fired) > 500)
        procs[1].kill()
        await until(lambda: len(w.timers.shards) == 1)
        await until(lambda: len(w.fired) > 1500)
        procs.append(TimersProcess(conf, log, "timers.2"))
        await until(lambda: len(w.timers.shards) == 2)
        await until(lambda: len(w.counts()) >= len(keys))
        await w.markers_fired(after=start + 3.0)  # duplicates, if any, came before them
        counts = w.counts()
        assert counts == Counter(keys), f"lost {len(set(keys) - set(counts))}, doubled " + str(
            [k for k, n in counts.items() if n > 1])
        assert all(at >= f.deadline for f, at in w.fired)
        w.close()

    run(body, timeout_s=20.0)
