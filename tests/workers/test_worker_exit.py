"""``sipline worker`` on SIGTERM: it stops (``Worker.stop``), logs where the time went, and
ends without the interpreter's teardown (``workers/main.py`` ``main``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.node import VENV_BIN

ROOT = Path(__file__).resolve().parents[2]

ATEXIT = """
import atexit, os
def _mark():
    with open(os.environ["EXIT_MARK"], "w") as f:
        f.write("teardown ran")
atexit.register(_mark)
"""


def test_a_stopped_worker_logs_its_phases_and_skips_the_teardown(tmp_path: Path) -> None:
    """A lone stateless worker stopped by SIGTERM exits 0 after ``worker_stopped`` (each
    phase's time) and ``process_stopped``, with nothing left unwritten on stdout; an atexit
    hook (the interpreter's teardown) never runs: the process ends once all is closed."""
    conf = tmp_path / "w.toml"
    conf.write_text(f'[node]\nrun_dir = "{tmp_path / "run"}"\n'
                    '[[destination_set]]\nname = "uas"\ndestinations = ["sip:127.0.0.1:5080"]\n'
                    '[[route]]\nname = "default"\nto = "uas"\n')  # fmt: skip
    (tmp_path / "sitecustomize.py").write_text(ATEXIT)
    mark = tmp_path / "mark"
    env = {k: v for k, v in os.environ.items() if k != "HONCHO_PROCESS_NAME"}
    env.update(SIPLINE_CONF=str(conf), EXIT_MARK=str(mark), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))  # fmt: skip
    p = subprocess.Popen([str(Path(VENV_BIN) / "sipline"), "worker"], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert p.stdout is not None
        lines = []
        end = time.monotonic() + 30
        for line in p.stdout:  # bounded: the worker starts or exits, and the wait below
            lines.append(line)
            if '"worker_ready"' in line or time.monotonic() > end:
                break
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
    events = [json.loads(x)["event"] for x in [*lines, *out.splitlines()] if x.startswith("{")]
    assert p.returncode == 0, events
    assert events.index("worker_stopped") < events.index("process_stopped") == len(events) - 1
    assert not mark.exists()
    # the hook is live: a Python started the same way runs it at its exit
    subprocess.run([sys.executable, "-c", "pass"], env=env, check=True, timeout=30)
    assert mark.read_text() == "teardown ran"
