"""Real servers for the cacheDB tests: redis-server, memcached, a three-master Redis Cluster and
``python -m stateplane.main`` as subprocesses on loopback, started, stopped, paused and
restarted by the tests.

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

from tests.e2e.node import free_port as e2e_free_port

ROOT = Path(__file__).resolve().parents[2]
#: a deadline for readiness that comes, not a measure: ``python -m stateplane.main`` spends
#: 6 s importing on this 2-core box at load 11 (0.5 s of it CPU), past 10 s at load 15-20
START_S = 60.0


def free_port() -> int:
    # from below the ephemeral range, as the e2e nodes' (tests/e2e/node.py)
    return e2e_free_port()


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
                self.stop()  # not left to come up under a test that thinks it ready
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


class RedisCluster:
    """Three redis-server masters in cluster mode on free loopback ports, each with its own
    directory (nodes.conf) and bus port, joined by ``redis-cli --cluster create``. The same
    interface as ``Server``: a restart keeps ports and nodes.conf, so the cluster re-forms."""

    MASTERS = 3

    def __init__(self) -> None:
        self.name = "redis-cluster"
        self.run_dir: str | None = None
        self.dir = tempfile.mkdtemp(prefix="sl-rcl-")
        self.ports = [free_port() for _ in range(self.MASTERS)]
        # the bus port defaults to port + 10000, which nobody reserved: name free ones
        bus = [free_port() for _ in range(self.MASTERS)]
        self.url = "redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"
        self.nodes: list[Server] = []
        for port, bus_port in zip(self.ports, bus, strict=True):
            node = Server("redis")
            node.port, node.name = port, f"redis-cluster-{port}"
            node_dir = os.path.join(self.dir, str(port))
            os.mkdir(node_dir)
            node.argv = [need("redis-server", "redis-server"), "--port", str(port),
                         "--cluster-port", str(bus_port), "--bind", "127.0.0.1",
                         "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", "5000", "--dir", node_dir,
                         "--save", "", "--appendonly", "no"]  # fmt: skip
            self.nodes.append(node)
        self.created = False

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        if not self.created:
            cli = need("redis-cli", "redis-server")
            argv = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                    "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, timeout=60, text=True, check=False)
            if done.returncode != 0:
                pytest.fail(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
            self.created = True
        self.wait_ok()

    def wait_ok(self) -> None:
        """Until every master says ``cluster_state:ok`` (all 16384 slots served, as it sees it)."""
        deadline = time.monotonic() + 60.0
        waiting = list(self.ports)
        while waiting:
            if cluster_info(waiting[0]).get("cluster_state") == "ok":
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                pytest.fail(f"cluster_state not ok on {waiting[0]}:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def output(self) -> str:
        return "\n".join(node.output()[-1500:] for node in self.nodes)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def cluster_info(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of the node on ``port`` ({} while it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
            s.sendall(b"*2\r\n$7\r\nCLUSTER\r\n$4\r\nINFO\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return {}
                data += chunk
                head, crlf, body = data.partition(b"\r\n")
                if not crlf:
                    continue
                if not head.startswith(b"$"):  # an error reply, e.g. -LOADING
                    return {}
                if len(body) >= int(head[1:]):
                    break
    except OSError:
        return {}
    fields = (line.partition(":") for line in data.decode(errors="replace").splitlines()[1:])
    return {k: v for k, sep, v in fields if sep}
