"""Hostile network peers of the state plane (docs/security.md "Network peers of the state
plane"): an active/backup pair whose state planes replicate over tcp:// on 127.0.0.1 with
CURVE, attacked the ways an outsider who reaches ``[stateplane] bind`` could; after each
attack a sipp run through the pair's address completes with no failed call."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from conf import curve
from conf import envelope as env
from stateplane import updates as up

from .conftest import StartNode
from .node import LOCALHOST, VENV_BIN, Proc, UacRun, free_port, free_run, sipp_uac
from .test_ctl import ctl
from .test_failover import VIRTUAL, pair_config, replica_of_a, role_of, virtual_listen
from .test_replication import HELD_TIMEOUT_S, HOLD_MS, live_dialogs, poll, stateplane

pytestmark = pytest.mark.e2e

Uas = Callable[..., tuple[int, Proc]]
Sock = zmq.Socket[bytes]
CALLS = 20


def keygen(path: Path) -> None:
    """``sipline keygen`` as an operator runs it."""
    out = subprocess.run([os.path.join(VENV_BIN, "sipline"), "keygen", str(path)], check=True,
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    assert "public_key = " in out.stdout


def free_pair() -> int:
    """A port P on 127.0.0.1 with P + 1 taken from the pool too (a state plane's ``bind`` is
    its PUB, P + 1 its snapshot ROUTER): the pool hands ports in order, so checking that P + 1
    is free now would not stop the next ``free_pair`` from handing it out again."""
    return free_run(LOCALHOST, 2)


def curve_config(me: str, peer: str, peer_endpoint: str, keys: Path) -> str:
    return f"""
[curve]
secret_key_file = "{keys / me}.key_secret"

[[peer]]
name = "{peer}"
stateplane = "{peer_endpoint}"
public_key_file = "{keys / peer}.key"
"""


class Pair:
    """A (primary) and B (backup) replicating over CURVE; the keys an attacker lacks."""

    def __init__(self, start_node: StartNode, tmp_path: Path, dport: int) -> None:
        self.keys = tmp_path / "keys"
        self.keys.mkdir()
        for name in ("node-a", "node-b"):
            keygen(self.keys / name)
        self.port_a, self.port_b = free_pair(), free_pair()
        self.vport = free_port()
        ep_a, ep_b = f"tcp://127.0.0.1:{self.port_a}", f"tcp://127.0.0.1:{self.port_b}"
        cfg_a = pair_config("primary", ep_b, tmp_path / "a.cdr", bind=f"127.0.0.1:{self.port_a}")
        cfg_b = pair_config("backup", ep_a, tmp_path / "b.cdr", bind=f"127.0.0.1:{self.port_b}")
        self.a = start_node(dport, "worker=2", cfg_a + curve_config("node-a", "node-b", ep_b, self.keys),
                            name="node-a", listen_first=virtual_listen(self.vport))  # fmt: skip
        assert self.a.proc.wait_events("virtual_bound", 1, timeout_s=5), self.a.proc.text()[-3000:]
        self.b = start_node(dport, "worker=1", cfg_b + curve_config("node-b", "node-a", ep_a, self.keys),
                            name="node-b", listen_first=virtual_listen(self.vport))  # fmt: skip
        assert poll(lambda: role_of(self.b, VIRTUAL) == "passive", 5), stateplane(self.b)
        self.a_public = curve.load_public(f"{self.keys}/node-a.key")
        self.b_keys = curve.load_secret(f"{self.keys}/node-b.key_secret")
        self.ctx: zmq.Context[Sock] = zmq.Context()

    def calls(self, tmp_path: Path, calls: int = CALLS, rate: int = 50) -> None:
        """A sipp run through the pair's address: every call completes."""
        res = sipp_uac(self.vport, "u1", calls, rate, tmp_path, host=VIRTUAL, timeout_s=60)
        assert (res.successful, res.failed) == (calls, 0), res.output

    def alive(self) -> None:
        """A's state plane answers, A still holds the address, and B still replicates it."""
        assert role_of(self.a, VIRTUAL) == "active"
        assert role_of(self.b, VIRTUAL) == "passive"
        assert replica_of_a(self.b).get("alive") is True, stateplane(self.b)
        assert not self.a.proc.events("split_brain") and not self.b.proc.events("split_brain")

    def socket(self, kind: int, ep: str, keys: curve.KeyPair | None = None, rcvhwm: int = 1000,
               ) -> Sock:  # fmt: skip
        s = self.ctx.socket(kind)
        s.linger, s.rcvhwm = 0, rcvhwm
        if keys is not None:
            curve.connect_curve(s, keys, self.a_public)
        if kind == zmq.SUB:
            s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(ep)
        return s

    def close(self) -> None:
        self.ctx.destroy(linger=0)


def send(sock: Sock, frames: list[bytes] | list[bytearray]) -> None:
    """An attacker's send: never blocks (a refused handshake leaves a socket no pipe to
    queue on, and a blocking send would wait forever)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
    except zmq.Again:
        pass  # not even queued: the attack is refused before it starts


def heard(socks: list[Sock], seconds: float) -> list[bool]:
    """Whether each socket received anything within ``seconds`` (A publishes every 0.1 s)."""
    got = [False] * len(socks)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, s in enumerate(socks):
            try:
                s.recv_multipart(zmq.NOBLOCK)
                got[i] = True
            except zmq.Again:
                pass
        time.sleep(0.02)  # polling step, bounded by ``seconds``
    return got


def test_curve_pair_replicates_and_outsiders_get_nothing(start_node: StartNode, uas: Uas,
                                                         tmp_path: Path) -> None:  # fmt: skip
    """Calls replicate over CURVE as over ipc; a client with an unknown key, and one with no
    key, can neither subscribe (no heartbeat heard while B's key hears them) nor get a
    snapshot; an asker that never reads a large answer does not stop B's own resync;
    oversize and malformed frames on every state-plane socket leave A whole. After each
    attack, sipp calls through the pair complete with 0 failures."""
    dport, _ = uas("u1")
    pair = Pair(start_node, tmp_path, dport)
    b = pair.b
    try:
        # held past the whole test on a loaded box (40 s were not: the attacks took 100 s there,
        # and the calls ended under it); whole at A and at B's replica at the end, then killed
        run = UacRun.start(pair.vport, "u1", CALLS, 20, tmp_path, timeout_s=HELD_TIMEOUT_S,
                           host=VIRTUAL, extra=("-d", str(HOLD_MS)))  # fmt: skip
        try:
            assert poll(lambda: replica_of_a(b).get("dialogs") == CALLS, 10), replica_of_a(b)
            _outsiders(pair)
            pair.calls(tmp_path, 500, 200)  # also fills A's backlog for the next attack
            _asker_that_never_reads(pair)
            pair.calls(tmp_path)
            _oversize_and_malformed(pair)
            pair.calls(tmp_path)
            assert replica_of_a(b).get("dialogs") == CALLS, replica_of_a(b)
            assert live_dialogs(pair.a) == CALLS and run.popen.poll() is None
        finally:
            run.kill()
        pair.alive()
    finally:
        pair.close()


def _outsiders(pair: Pair) -> None:
    pub, snap = f"tcp://127.0.0.1:{pair.port_a}", f"tcp://127.0.0.1:{pair.port_a + 1}"
    stranger = curve.KeyPair(*zmq.curve_keypair())
    refused0 = int(stateplane(pair.a).get("curve_refused", 0))
    subs = [pair.socket(zmq.SUB, pub, pair.b_keys), pair.socket(zmq.SUB, pub, stranger),
            pair.socket(zmq.SUB, pub)]  # fmt: skip
    askers = [pair.socket(zmq.DEALER, snap, stranger), pair.socket(zmq.DEALER, snap)]
    st = stateplane(pair.a)
    for i, d in enumerate(askers):
        send(d, up.pack(up.Icanhaz("node-a", 900 + i, 0, 0)))
    assert heard(subs, 2.0) == [True, False, False]
    assert heard(askers, 0.5) == [False, False]
    after = stateplane(pair.a)
    assert int(after.get("curve_refused", 0)) - refused0 >= 2, after  # the stranger's two
    assert after.get("snapshots", 0) == st.get("snapshots", 0), after
    for s in subs + askers:
        s.close(linger=0)
    pair.alive()


def _asker_that_never_reads(pair: Pair) -> None:
    """A local asker (ipc, no key needed) asks for a replay of A's whole backlog and never
    reads it; meanwhile ``ctl sync`` on B makes B's replica ask A again over CURVE, and the
    answer must arrive (before, one full pipe held up every answer)."""
    st = stateplane(pair.a)
    assert int(st["seq"]) > 1000, st  # the answer is larger than the pipe and socket buffers
    hostile = pair.socket(zmq.DEALER, f"ipc://{pair.a.run_dir}/{env.STATEPLANE_SNAP}", rcvhwm=1)
    send(hostile, up.pack(up.Icanhaz("node-a", 1, int(st["epoch"]), 1)))
    assert poll(lambda: int(stateplane(pair.a).get("snapshots", 0)) > int(st.get("snapshots", 0)), 5)
    synced = len(pair.b.proc.events("replica_synced"))
    ctl(pair.b.conf, "sync")
    (ev,) = pair.b.proc.wait_events("replica_synced", synced + 1, timeout_s=5)[synced:]
    assert ev["dialogs"] == CALLS, ev
    assert poll(lambda: int(stateplane(pair.a).get("asker_stalled", 0)) == 1, 10), stateplane(pair.a)
    hostile.close(linger=0)
    pair.alive()


def _oversize_and_malformed(pair: Pair) -> None:
    """Every socket of A's state plane: its two tcp endpoints (raw bytes; and frames from a
    holder of B's key: oversize, garbage) and its ipc ones (deltas, updates, snapshots, kv)."""
    run = pair.a.run_dir
    bad0 = int(stateplane(pair.a).get("bad_ask", 0))
    for port in (pair.port_a, pair.port_a + 1):
        for junk in (os.urandom(4096), b"\xff" + b"\x00" * 8 + b"\x7f" + os.urandom(64)):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                raw.sendall(junk)
    keyed = pair.socket(zmq.DEALER, f"tcp://127.0.0.1:{pair.port_a + 1}", pair.b_keys)
    send(keyed, [b"ICANHAZ", b"\x00" * (2 << 20)])  # past MAXMSGSIZE: dropped link
    keyed2 = pair.socket(zmq.DEALER, f"tcp://127.0.0.1:{pair.port_a + 1}", pair.b_keys)
    for frames in ([b"ICANHAZ", b"\xc1"], [b"UPD", b"\x90" * 1000], [b"x"] * 5):
        send(keyed2, frames)
    xsub = pair.ctx.socket(zmq.XSUB)
    xsub.linger = 0
    curve.connect_curve(xsub, pair.b_keys, pair.a_public)
    xsub.connect(f"tcp://127.0.0.1:{pair.port_a}")
    send(xsub, [b"\x01" + b"t" * (64 << 10)])  # a subscription past the PUB's limit
    socks = [keyed, keyed2, xsub]
    for name, kind, frames_list in (
        (env.STATEPLANE_DELTAS, zmq.PUSH, [[env.KIND_DELTAS, b"\xc1"],
                                           [env.KIND_DELTAS, b"\x92\xa1w\x91\x92\xa1c\x00"],
                                           [b"\x01NOPE", b""]]),
        (env.STATEPLANE_SNAP, zmq.DEALER, [[b"ICANHAZ", b"\x90" * (4 << 10)], [b"\xc1"]]),
        ("stateplane-kv.ipc", zmq.DEALER, [[b"\xc1"] * 4, [b"x" * (3 << 20)]]),
    ):  # fmt: skip
        s = pair.socket(kind, f"ipc://{run}/{name}")
        for frames in frames_list:
            send(s, frames)
        socks.append(s)
    deltas = pair.socket(zmq.PUSH, f"ipc://{run}/{env.STATEPLANE_DELTAS}")
    big = bytearray(65 << 20)  # one frame past the deltas PULL's 64 MiB
    send(deltas, [bytearray(env.KIND_DELTAS), big])
    socks.append(deltas)
    assert poll(lambda: int(stateplane(pair.a).get("bad_ask", 0)) > bad0, 5)
    for s in socks:
        s.close(linger=0)
    del big
    pair.alive()


def test_a_forged_peer_without_its_key_changes_nothing(start_node: StartNode, uas: Uas,
                                                       tmp_path: Path) -> None:  # fmt: skip
    """B dies and an attacker takes its address (its state-plane port) without B's key: its
    heartbeats say B is active in a far newer epoch (A would yield to it) and its updates
    make dialogs. A's state plane never completes a handshake with it (the key is not B's):
    A stays active, no split brain, its replica of B stays empty, and calls complete."""
    dport, _ = uas("u1")
    pair = Pair(start_node, tmp_path, dport)
    try:
        pair.calls(tmp_path)
        pair.b.kill()
        assert pair.a.proc.wait_events("replica_peer_silent", 1, timeout_s=5)
        forger = curve.KeyPair(*zmq.curve_keypair())
        pub = pair.ctx.socket(zmq.PUB)
        pub.linger = 0
        curve.serve_curve(pub, forger)  # no ZAP handler here: it would admit anyone
        pub.bind(f"tcp://127.0.0.1:{pair.port_b}")
        plain = pair.ctx.socket(zmq.PUB)  # and one without CURVE on the snapshot port
        plain.linger = 0
        plain.bind(f"tcp://127.0.0.1:{pair.port_b + 1}")
        record = ["t", "forged@x", "f", "bye", "proxy", 1.0]
        forged: list[up.Message] = [up.Hugz("node-b", 2**62, 5, f"{VIRTUAL}=active"),
                  up.Update("node-b", 2**62, 1, "dialog", record)]  # fmt: skip
        end = time.monotonic() + 3.0  # A reconnects every 0.1 s: ~30 attempts
        while time.monotonic() < end:
            for s in (pub, plain):
                for m in forged:
                    s.send_multipart(up.pack(m))
            time.sleep(0.05)  # the forger's pace, bounded by ``end``
        assert role_of(pair.a, VIRTUAL) == "active"
        assert not pair.a.proc.events("split_brain")
        assert not pair.a.proc.events("replica_peer_back")
        replica = stateplane(pair.a)["replicas"].get("node-b", {})
        assert replica.get("dialogs", 0) == 0 and replica.get("epoch") != 2**62, replica
        pub.close(linger=0)
        plain.close(linger=0)
        pair.calls(tmp_path)
    finally:
        pair.close()
