"""A local user cannot tamper with a node (docs/security.md, "Local users").

We run as root: "another user" is nobody, reached with ``subprocess.run(user=...)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from conf import envelope, sockets

from .conftest import StartNode
from .node import (
    REPO,
    VENV_BIN,
    Node,
    Proc,
    assert_clean_stop,
    env_for,
    free_port,
    sipp_uac,
    write_config,
)

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def _world_writable(run: Path) -> None:
    run.mkdir()
    os.chmod(run, 0o777)


def _foreign(run: Path) -> None:
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)


def _symlink(run: Path) -> None:
    target = run.with_name("elsewhere")
    target.mkdir(mode=0o700)
    run.symlink_to(target)


def _group_readable(run: Path) -> None:
    run.mkdir()
    os.chmod(run, 0o750)


HOSTILE: dict[str, tuple[Callable[[Path], None], str]] = {
    "world-writable": (_world_writable, "is writable by its group and others (mode 0777)"),
    "foreign-owner": (_foreign, "is owned by uid 65534 (nobody)"),
    "symlink": (_symlink, "is a symbolic link"),
    "open-without-group": (_group_readable, "run_group is not set"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_process_refuses_a_hostile_run_dir(case: str, tmp_path: Path) -> None:
    """Every role exits 2 before binding anything, naming the path and what is wrong."""
    make, words = HOSTILE[case]
    run = tmp_path / "run"
    make(run)
    conf = tmp_path / "sipline.toml"
    write_config(conf, run, free_port(), free_port())
    for role in ("ingress", "worker", "stateplane", "timers"):
        done = subprocess.run([os.path.join(VENV_BIN, "sipline"), role], env=env_for(conf),
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 2, (role, done.stdout[-2000:], done.stderr[-2000:])
        assert f"sipline {role}: run directory error: {run}: " in done.stderr, done.stderr
        assert words in done.stderr, done.stderr
    for d in (run, run.with_name("elsewhere")):
        if d.is_dir() and os.access(d, os.R_OK):
            assert not list(d.glob("*.ipc")), f"something was bound in {d}"


def test_node_refuses_to_start_on_a_precreated_run_dir(tmp_path: Path) -> None:
    """A whole node (honcho) stops at once, with the message, when someone made its run
    directory first (here: nobody's, 0777 inside like an attacker would leave it)."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chown(run, NOBODY, NOBODY)
    conf = tmp_path / "sipline.toml"
    write_config(conf, run, free_port(), free_port())
    with pytest.raises(RuntimeError, match="node exited early") as info:
        Node.start(conf, run, free_port())
    assert f"run directory error: {run}: is owned by uid 65534 (nobody)" in str(info.value)


@pytest.fixture
def public_base() -> Iterator[Path]:
    """A directory nobody can enter (0755), so the run directory's own mode is the gate:
    tmp_path's parents are root's 0700 and would stop nobody before it."""
    base = Path(tempfile.mkdtemp(prefix="sl-local-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


#: run as nobody: what it gets trying to list, connect to and bind in the run directory
PROBE = r"""
import json, os, socket, sys
run, target = sys.argv[1], sys.argv[2]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "ok"
    except OSError as exc:
        out[name] = exc.errno
def connect():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(target)
def bind():
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(os.path.join(run, "worker-evil.1-1.ipc"))
attempt("list", lambda: os.listdir(run))
attempt("connect", connect)
attempt("bind", bind)
attempt("create", lambda: os.mkdir(os.path.join(run, "x")))
print(json.dumps(out))
"""


#: a Python another user can run (ours may live under root's 0700 home, as pyenv's does)
SYSTEM_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or ""
#: what that Python needs to import sipline: this tree and the venv's packages (same 3.x)
SITE = [str(p) for p in Path(sys.prefix).glob(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")]


def _probe(run: Path, target: Path, user: int | None) -> dict[str, Any]:
    done = subprocess.run([SYSTEM_PYTHON, "-I", "-c", PROBE, str(run), str(target)],
                          user=user, group=user, capture_output=True, text=True,
                          timeout=30, cwd="/", check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(not SYSTEM_PYTHON, reason="no python3 another user can run")
def test_another_user_cannot_reach_the_sockets(public_base: Path, uas: Any) -> None:
    """As nobody: the run directory cannot be listed, its sockets (ingress, ctl) cannot be
    connected to, nothing can be bound or made in it, and ``sipline ctl failback``/``sync``
    and ``sipline top`` are refused; the same probes as the owner get through, so the
    refusals are the modes'."""
    uas_port, _ = uas("u1")
    run, port = public_base / "run", free_port()
    conf = public_base / "sipline.toml"
    write_config(conf, run, port, uas_port)
    os.chmod(conf, 0o644)
    node = Node.start(conf, run, port, "worker=1")
    try:
        assert oct(os.lstat(run).st_mode & 0o777) == oct(0o700)
        socks = sorted(run.glob("*.ipc"))
        assert socks and all(p.lstat().st_mode & 0o777 == 0o600 for p in socks), [
            (p.name, oct(p.lstat().st_mode)) for p in socks]
        ingress = next(run.glob("ingress-*.ipc"))
        ctl = next(run.glob("ctl-*.ipc"))
        for target in (ingress, ctl):
            assert _probe(run, target, NOBODY) == {
                "list": 13, "connect": 13, "bind": 13, "create": 13}  # EACCES each
        owner = _probe(run, ingress, None)
        assert owner["list"] == owner["connect"] == "ok"
        os.rmdir(run / "x")
        os.unlink(run / "worker-evil.1-1.ipc")
        env = {**env_for(conf), "HOME": "/", "PYTHONPATH": os.pathsep.join([str(REPO), *SITE])}
        for verb in (["ctl", "failback"], ["ctl", "sync"], ["top", "--once"]):
            done = subprocess.run([SYSTEM_PYTHON, "-m", "sipline", *verb],
                                  env=env, user=NOBODY, group=NOBODY, cwd="/", capture_output=True,
                                  text=True, timeout=30, check=False)  # fmt: skip
            assert done.returncode == 2, (verb, done.stdout, done.stderr)
            assert (f"sipline {verb[0]}: cannot open the node's run directory {run} "
                    "(Permission denied)") in done.stderr, done.stderr
    finally:
        rc, output = node.stop()
    assert_clean_stop(rc, output)


def _forge(ctx: zmq.Context[Any], ep: str, header: list[str], times: int) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
    s.linger = 1000
    s.connect(ep)
    for _ in range(times):
        s.send_multipart(envelope.pack(envelope.KIND_HB, header))
    return s


def _drops(proc: Proc, who: str, key: str, at_least: int) -> list[dict[str, object]]:
    """``load_stats`` lines of processes named ``who*`` whose ``drops`` hold ``key`` >= n."""
    def ok(e: dict[str, object]) -> bool:
        drops = e.get("drops")
        return (str(e.get("proc", "")).startswith(who) and isinstance(drops, dict)
                and int(drops.get(key, 0)) >= at_least)  # fmt: skip
    return [e for e in proc.events("load_stats") if ok(e)]


def test_forged_heartbeat_is_ignored_then_calls_complete(start_node: StartNode, uas: Any,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """The owner's forged heartbeats, to the ingress and to the timers process, naming an
    endpoint outside the run directory are counted and ignored: nothing connects there, and
    200 sipp calls afterwards complete with none failed."""
    uas_port, _ = uas("u1")
    node = start_node(uas_port, scale="worker=2")
    trap_ep = f"ipc://{tmp_path}/trap.ipc"
    ctx: zmq.Context[Any] = zmq.Context()
    trap = ctx.socket(zmq.PULL)
    trap.linger = 0
    trap.bind(trap_ep)
    forged = ["worker.66-66", trap_ep, "up"]
    targets = [*sockets.list_endpoints(str(node.run_dir), "ingress").values(),
               *sockets.list_endpoints(str(node.run_dir), "timers").values()]  # fmt: skip
    assert len(targets) == 2, targets
    rogues = [_forge(ctx, ep, forged, 20) for ep in targets]
    try:
        refused = node.proc.wait_events("heartbeat_refused", 2, timeout_s=10)
        assert {str(e["proc"]).split(".")[0] for e in refused} == {"ingress", "timers"}
        assert all(e["endpoint"] == trap_ep for e in refused)
        end = 10.0
        while not (_drops(node.proc, "ingress", "drop_bad_endpoint", 20)
                   and _drops(node.proc, "timers", "drop_bad_endpoint", 20)) and end > 0:
            node.proc.wait_events("load_stats", len(node.proc.events("load_stats")) + 1, 1.0)
            end -= 1.0  # a load_stats line comes every 0.5 s per process
        assert _drops(node.proc, "ingress", "drop_bad_endpoint", 20)
        assert _drops(node.proc, "timers", "drop_bad_endpoint", 20)
        assert not [e for e in node.proc.events("worker_joined") if e["worker"] == "worker.66-66"]
        result = sipp_uac(node.port, "u1", 200, 100, tmp_path, timeout_s=60)
        assert (result.successful, result.failed) == (200, 0), result.output
        with pytest.raises(zmq.Again):
            trap.recv(zmq.NOBLOCK)
    finally:
        for s in (*rogues, trap):
            s.close(linger=0)
        ctx.term()
