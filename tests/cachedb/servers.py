"""Real servers for the cacheDB tests: redis-server, memcached and ``python -m stateplane.main``
as subprocesses on loopback, started, stopped, paused and restarted by the tests.

A missing binary fails the test with what to install (``./dev test`` installs both); nothing
is skipped and nothing stands in for a server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed: `apt-get install {package}` (./dev test does it)")
    return path


class Server:
    """One server process; ``url`` stays the same across ``stop()``/``start()``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        # kept open for the server's life (restarts append to it); closed in cleanup()
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix=f"sl-{name}-", suffix=".log", delete=False
        )
        self.run_dir: str | None = None
        if name == "local":
            self.run_dir = tempfile.mkdtemp(prefix="sl-kv-")
            self.conf = os.path.join(self.run_dir, "node.toml")
            Path(self.conf).write_text(
                f'[node]\nrun_dir = "{self.run_dir}"\n[log]\nlevel = "warning"\n'
            )
            self.url = f"local://{self.run_dir}"
            self.argv = [sys.executable, "-m", "stateplane.main", "--conf", self.conf]
        else:
            self.port = free_port()
            if name == "redis":
                self.url = f"redis://127.0.0.1:{self.port}/0"
                self.argv = [need("redis-server", "redis-server"), "--port", str(self.port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]  # fmt: skip
            else:
                self.url = f"memcached://127.0.0.1:{self.port}"
                self.argv = [need("memcached", "memcached"), "-p", str(self.port), "-U", "0",
                             "-l", "127.0.0.1"]  # fmt: skip
                if os.geteuid() == 0:
                    self.argv += ["-u", "root"]

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_S
        while not self._ready():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready in {START_S} s:\n{self.output()}")
            time.sleep(0.01)

    def _ready(self) -> bool:
        if self.run_dir is not None:
            return os.path.exists(os.path.join(self.run_dir, "stateplane-kv.ipc"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server must be able to exit
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP, returning once the kernel shows it stopped (delivery is asynchronous)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + START_S
        while stat.read_text().rpartition(")")[2].split()[0] != "T":
            assert time.monotonic() < deadline, f"{self.name} did not stop"
            time.sleep(0.001)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def cleanup(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
