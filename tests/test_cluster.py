"""sipline/cluster.py: ``--cluster`` asks this node and every configured peer; a peer it
cannot ask, or that does not answer, is reported with why, under its configured name."""

from __future__ import annotations

import os
from pathlib import Path

from conf import curve
from conf.settings import Curve, Node, Peer, Settings, StatePlane
from sipline.cluster import ask_cluster
from tests.e2e.node import free_port


def cluster(tmp_path: Path, secret_mode: int) -> Settings:
    secret, _, _ = curve.keygen(str(tmp_path / "a"))
    _, public, _ = curve.keygen(str(tmp_path / "b"))
    os.chmod(secret, secret_mode)
    peer = f"tcp://127.0.0.1:{free_port()}"  # nothing listens at port + 3
    return Settings(node=Node(name="node-a", run_dir=str(tmp_path / "run-a")),
                    curve=Curve(secret_key_file=str(secret)),
                    stateplane=StatePlane(peers=[peer, str(tmp_path / "run-c")]),
                    peer=[Peer(name="node-b", stateplane=peer, public_key_file=str(public))])  # fmt: skip


def test_each_node_is_reported_under_its_configured_name(tmp_path: Path) -> None:
    """This node first, then the peers in order: a tcp:// peer that does not answer within the
    timeout says so; a run-directory peer (here without processes) answers nothing."""
    answers = ask_cluster(cluster(tmp_path, 0o600), "stats", timeout_s=0.2)
    assert [(a.node, a.replies, a.error) for a in answers] == [
        ("node-a", [], ""), ("node-b", [], "no answer within 0.2 s"),
        (str(tmp_path / "run-c"), [], "")]  # fmt: skip


def test_a_key_this_user_cannot_use_is_reported_not_raised(tmp_path: Path) -> None:
    """A secret key others may read is not used (conf/curve.py rule 2): the tcp:// peer is
    reported with why, and the other nodes are still asked."""
    answers = ask_cluster(cluster(tmp_path, 0o644), "stats", timeout_s=0.2)
    assert [a.node for a in answers] == ["node-a", "node-b", str(tmp_path / "run-c")]
    assert answers[1].error == ("cannot use [curve] secret_key_file: mode 0644: others may read "
                                "the secret key (chmod 600)")  # fmt: skip
    assert answers[0].error == answers[2].error == ""


def test_acting_verbs_are_not_asked_of_the_cluster(tmp_path: Path) -> None:
    """``sync`` and ``failback`` stay with each node's own user: ``--cluster`` refuses them
    (exit 2) before asking anyone."""
    from tests.test_cli import run

    conf = tmp_path / "sipline.toml"
    conf.write_text(f"[node]\nrun_dir = '{tmp_path / 'run'}'\n", encoding="utf-8")
    for verb in ("sync", "failback"):
        done = run(["ctl", verb, "--cluster"], env={"SIPLINE_CONF": str(conf)})
        assert done.returncode == 2, done
        assert done.stderr.startswith(f"sipline ctl: {verb} is not asked of the whole cluster"), done
