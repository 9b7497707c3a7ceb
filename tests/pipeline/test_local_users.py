"""What a process that holds our sockets can still not make us do (docs/security.md, "Local
users"): socket files are private, and an announced endpoint is used only when canonical."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import zmq

from conf import envelope, sockets
from conf.control import ControlServer
from conf.mesh import Mesh
from conf.refused import RefusalLog
from tests.pipeline.helpers import run, until
from tests.pipeline.test_bus import IN_META, Hop

NOBODY = 65534


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """umask 0: a socket bound without care would be 0777."""
    old = os.umask(0)
    yield
    os.umask(old)


def modes(run_dir: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in run_dir.glob("*.ipc")}


class TestSocketModes:
    def test_every_socket_is_0600(self, ctx: zmq.Context[Any], tmp_path: Path,
                                  wide_umask: None) -> None:  # fmt: skip
        """Bus, mesh and control sockets are 0600 in a private run directory, whatever the umask."""
        run_dir = tmp_path / "run"
        run_dir.mkdir(mode=0o700)

        async def body() -> None:
            hop = Hop(ctx, run_dir)
            mesh = Mesh(ctx, "pike", str(run_dir), "ingress.1-1", on_frame=lambda _: None)
            control = ControlServer(ctx, str(run_dir), "ingress.1-1", {})
            found = modes(run_dir)
            assert set(found) == {"ingress-ingress.1-1.ipc", "worker-worker.1-2.ipc",
                                  "pike-ingress.1-1.ipc", "ctl-ingress.1-1.ipc"}  # fmt: skip
            assert set(found.values()) == {0o600}, found
            control.close()
            mesh.close()
            hop.close()

        run(body)

    @pytest.mark.skipif(os.geteuid() != 0, reason="chown to another group needs root")
    def test_group_directory_gives_0660_sockets_of_its_group(
        self, ctx: zmq.Context[Any], tmp_path: Path, wide_umask: None
    ) -> None:
        """In a 0750 run directory (run_group) the sockets are 0660 and the directory's group."""
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        os.chown(run_dir, -1, NOBODY)
        os.chmod(run_dir, 0o750)

        async def body() -> None:
            control = ControlServer(ctx, str(run_dir), "w.1-1", {})
            path = run_dir / "ctl-w.1-1.ipc"
            assert stat.S_IMODE(path.lstat().st_mode) == 0o660
            assert path.lstat().st_gid == NOBODY
            control.close()

        run(body)


@pytest.mark.parametrize(("ident", "ok"), [
    ("worker.1-4242", True), ("stateplane-7", True), ("w_2", True),
    ("", False), ("../../tmp/x", False), ("a/b", False), (".hidden", False),
    ("x" * 65, False), ("w\x00", False), (7, False), ("w 1", False),
])  # fmt: skip
def test_valid_ident(ident: object, ok: bool) -> None:
    """An ident never names a file outside the run directory."""
    assert sockets.valid_ident(ident) is ok


def test_canonical_endpoint() -> None:
    """Only the endpoint computed from the run directory, role and ident is canonical."""
    run_dir = "/run/sipline/edge"
    good = sockets.endpoint(run_dir, "worker", "worker.1-9")
    assert sockets.canonical(run_dir, "worker", "worker.1-9", good)
    for ep in ("ipc:///tmp/evil.ipc", "tcp://127.0.0.1:9", good + "x",
               sockets.endpoint(run_dir, "worker", "worker.1-8"),
               sockets.endpoint(run_dir, "ingress", "worker.1-9"),
               sockets.endpoint("/run/sipline/other", "worker", "worker.1-9")):  # fmt: skip
        assert not sockets.canonical(run_dir, "worker", "worker.1-9", ep), ep
    traversal = "../../tmp/evil"
    assert not sockets.canonical(run_dir, "worker", traversal,
                                 sockets.endpoint(run_dir, "worker", traversal))  # fmt: skip


def _rogue(ctx: zmq.Context[Any], ep: str) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = ctx.socket(zmq.PUSH)
    s.linger = 0
    s.connect(ep)
    return s


def test_forged_heartbeat_is_ignored_and_counted(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """A heartbeat naming an endpoint outside the run directory (or a traversing ident) joins
    no worker and connects nothing; it is counted, and logged once, not per frame."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    outside = tmp_path / "outside"
    outside.mkdir()

    async def body() -> None:
        hop = Hop(ctx, run_dir)
        trap = ctx.socket(zmq.PULL)  # where the forger wants our calls to go
        trap.linger = 0
        trap.bind(f"ipc://{outside}/trap.ipc")
        rogue = _rogue(ctx, hop.ingress.endpoint)
        forged = [
            ["worker.9-9", f"ipc://{outside}/trap.ipc", "up"],
            ["../outside/trap", sockets.endpoint(str(run_dir), "worker", "../outside/trap"), "up"],
        ]
        with structlog.testing.capture_logs() as logs:
            for _ in range(50):
                for header in forged:
                    rogue.send_multipart(envelope.pack(envelope.KIND_HB, header))
            # the same connection, so it arrives after the forged ones: a canonical endpoint
            rogue.send_multipart(envelope.pack(envelope.KIND_HB, [
                "worker.8-8", sockets.endpoint(str(run_dir), "worker", "worker.8-8"), "up"]))
            await until(lambda: "worker.8-8" in hop.ingress.workers)
        counters = hop.ingress._meter.counters
        assert counters["drop_bad_endpoint"] == 100
        assert hop.ingress.workers.idents == ["worker.8-8"]
        refusals = [e for e in logs if e["event"] == "heartbeat_refused"]
        assert len(refusals) == 1 and refusals[0]["refused"] == 1
        await hop.joined()
        calls = [b"call-%d" % i for i in range(100)]
        for c in calls:
            hop.ingress.submit(c, IN_META, c)
        hop.ingress.flush()
        mine = [c for c in calls if hop.ingress.workers.owner(c) == "worker.1-2"]
        await until(lambda: len(hop.to_worker) == len(mine))  # the batch has been delivered
        with pytest.raises(zmq.Again):
            trap.recv(zmq.NOBLOCK)
        rogue.close()
        trap.close()
        hop.close()

    run(body)


def test_in_envelope_naming_a_traversing_ingress_is_dropped(ctx: zmq.Context[Any],
                                                            tmp_path: Path) -> None:  # fmt: skip
    """A worker answers the ingress an IN envelope names: an ident that is not a plain name is
    refused (counted), so replies never go to a socket outside the run directory."""

    async def body() -> None:
        hop = Hop(ctx, tmp_path)
        rogue = _rogue(ctx, hop.worker.endpoint)
        rogue.send_multipart(envelope.pack(envelope.KIND_IN, ["../../x/ingress", [IN_META]],
                                           [b"INVITE"]))  # fmt: skip
        rogue.send_multipart(envelope.pack(envelope.KIND_IN, ["ingress.7-7", [IN_META]],
                                           [b"OPTIONS"]))  # fmt: skip
        await until(lambda: len(hop.to_worker) == 1)
        assert hop.to_worker[0][0] == "ingress.7-7"
        assert hop.worker._meter.counters["drop_bad_ident"] == 1
        rogue.close()
        hop.close()

    run(body)


def test_refusal_log_is_bounded() -> None:
    """The first refusal is logged at once; then one line per interval, with the count."""
    rl = RefusalLog("x_refused", interval_s=10.0)
    with structlog.testing.capture_logs() as logs:
        for i in range(1000):
            rl.note(i * 0.01, n=i)  # 1000 in 10 s
        rl.note(10.5, n=-1)
    assert [(e["refused"], e["n"]) for e in logs] == [(1, 0), (1000, -1)]


def test_mesh_skips_a_peer_directory_others_can_write(ctx: zmq.Context[Any],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """A peer run directory anyone could have filled is not scanned: its members are not
    connected (and dropped if they were) until it is closed again; refused once in the log."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(mode=0o700)
    b.mkdir(mode=0o700)

    async def body() -> None:
        inside = Mesh(ctx, "t", str(a), "a1-1", on_frame=lambda _: None)
        mine = Mesh(ctx, "t", str(b), "b1-1", peer_dirs=(str(a),), on_frame=lambda _: None)
        mine.refresh()
        assert list(mine.members.values()) == [f"{a}:a1-1"]
        os.chmod(a, 0o777)
        with structlog.testing.capture_logs() as logs:
            mine.refresh()
            mine.refresh()
        assert mine.members == {}
        refused = [e for e in logs if e["event"] == "peer_dir_refused"]
        assert len(refused) == 1 and "writable by its group and others" in refused[0]["problem"]
        os.chmod(a, 0o700)
        mine.refresh()
        assert list(mine.members.values()) == [f"{a}:a1-1"]
        mine.close()
        inside.close()

    run(body)
