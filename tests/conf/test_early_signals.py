"""A process signalled while it starts (``conf/process.py`` ``hold_early_signals``): a SIGHUP
does not end it, and a SIGTERM stops it cleanly once it serves, in a real child process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


CHILD = r"""
import asyncio, os, signal, sys
from conf import process
from conf.settings import Settings

process.hold_early_signals()
os.kill(os.getpid(), signal.SIGHUP)   # systemctl reload while we start
os.kill(os.getpid(), signal.SIGTERM)  # a stop while we start

async def serve(settings, stop):
    await asyncio.wait_for(stop.wait(), 10)
    return 7

with asyncio.Runner() as runner:
    sys.exit(runner.run(process._serve(serve, Settings())))
"""


def test_a_process_signalled_while_it_starts_stops_cleanly_once_it_serves() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], check=False, capture_output=True,
                          timeout=30, cwd=REPO)  # fmt: skip
    assert done.returncode == 7, done.stderr.decode(errors="replace")[-2000:]
