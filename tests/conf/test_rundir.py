"""The run directory checks (conf/rundir.py): what a local user could pre-create is refused.

We run as root in CI, so a foreign owner is made with chown to nobody; each test works in
its own tmp_path (0700, root's), whose parents pass the ancestor rule.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conf import rundir
from conf.rundir import RunDirError, check, default_run_dir, prepare

NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """A umask that would leave a directory open to all: the modes must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


def refused(path: Path, gid: int | None = None) -> str:
    """The problem ``prepare`` names for the run directory ``path`` itself."""
    with pytest.raises(RunDirError) as info:
        prepare(str(path), gid)
    assert info.value.path == str(path)
    assert str(info.value).startswith(f"{path}: ")
    return info.value.problem


class TestCreation:
    def test_fresh_directory_is_0700(self, tmp_path: Path, wide_umask: None) -> None:
        """A missing run directory is created 0700, whatever the umask."""
        run = tmp_path / "run"
        prepare(str(run))
        assert mode(run) == 0o700
        assert os.lstat(run).st_uid == os.geteuid()

    @needs_root
    def test_fresh_directory_with_a_group_is_0750_and_the_groups(
        self, tmp_path: Path, wide_umask: None
    ) -> None:
        """With run_group, the directory is 0750 and belongs to that group."""
        run = tmp_path / "run"
        prepare(str(run), NOBODY)
        assert mode(run) == 0o750
        assert os.lstat(run).st_gid == NOBODY

    def test_missing_parents_are_made_not_open(self, tmp_path: Path, wide_umask: None) -> None:
        """Missing parents are created 0755 (never writable by others), then the run dir."""
        run = tmp_path / "a" / "b" / "run"
        prepare(str(run))
        assert mode(run) == 0o700
        assert mode(tmp_path / "a" / "b") & 0o022 == 0

    def test_a_good_existing_directory_is_used_as_it_is(self, tmp_path: Path) -> None:
        """Every process of the node calls prepare: the second finds the first's directory."""
        run = tmp_path / "run"
        prepare(str(run))
        (run / "worker-w.1-1.ipc").touch()
        prepare(str(run))
        assert (run / "worker-w.1-1.ipc").exists()


class TestRefused:
    def test_symlink(self, tmp_path: Path) -> None:
        """A run directory that is a symbolic link is refused, even to a good directory."""
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        link = tmp_path / "run"
        link.symlink_to(real)
        assert "symbolic link" in refused(link)

    def test_dangling_symlink(self, tmp_path: Path) -> None:
        """A link to nowhere is not followed to create the directory at its target."""
        link = tmp_path / "run"
        link.symlink_to(tmp_path / "elsewhere")
        assert "symbolic link" in refused(link)
        assert not (tmp_path / "elsewhere").exists()

    @needs_root
    def test_foreign_owner(self, tmp_path: Path) -> None:
        """A directory another user created first (here: nobody's) is refused, by name."""
        run = tmp_path / "run"
        run.mkdir(mode=0o700)
        os.chown(run, NOBODY, -1)
        problem = refused(run)
        assert "owned by uid 65534" in problem
        assert "nobody" in problem

    @pytest.mark.parametrize(("bits", "words"), [
        (0o770, "writable by its group"),
        (0o707, "writable by others"),
        (0o777, "writable by its group and others"),
        (0o1777, "writable by its group and others"),
    ])  # fmt: skip
    def test_group_or_world_writable(self, tmp_path: Path, bits: int, words: str) -> None:
        """Write access for anyone else is refused, sticky bit or not; the mode is named."""
        run = tmp_path / "run"
        run.mkdir()
        os.chmod(run, bits)
        problem = refused(run)
        assert words in problem
        assert f"mode {bits:04o}" in problem

    @pytest.mark.parametrize("bits", [0o750, 0o755, 0o705, 0o711])
    def test_open_without_a_group(self, tmp_path: Path, bits: int) -> None:
        """Without run_group even read or search access for others is refused, and left so:
        an open directory may already hold someone's sockets, it is not repaired."""
        run = tmp_path / "run"
        run.mkdir()
        os.chmod(run, bits)
        assert "run_group is not set" in refused(run)
        assert mode(run) == bits

    @needs_root
    def test_with_a_group(self, tmp_path: Path) -> None:
        """With run_group: 0750 of that group passes; others' access or another group does not."""
        run = tmp_path / "run"
        run.mkdir()
        os.chown(run, -1, NOBODY)
        os.chmod(run, 0o750)
        check(str(run), NOBODY)
        os.chmod(run, 0o755)
        assert "open to others" in refused(run, NOBODY)
        os.chmod(run, 0o750)
        assert "not to [node] run_group" in refused(run, 0)

    def test_not_a_directory(self, tmp_path: Path) -> None:
        run = tmp_path / "run"
        run.write_text("")
        assert "not a directory" in refused(run)


class TestParents:
    def test_writable_parent_without_sticky_bit(self, tmp_path: Path) -> None:
        """A parent anyone may write could swap the run directory after the check."""
        parent = tmp_path / "shared"
        parent.mkdir()
        os.chmod(parent, 0o777)
        with pytest.raises(RunDirError) as info:
            prepare(str(parent / "run"))
        assert info.value.path == str(parent)
        assert "without the sticky bit" in info.value.problem
        assert not (parent / "run").exists()

    def test_sticky_parent_like_tmp(self, tmp_path: Path) -> None:
        """A world-writable sticky parent (/tmp) is fine: others cannot rename our entries."""
        parent = tmp_path / "tmp"
        parent.mkdir()
        os.chmod(parent, 0o1777)
        prepare(str(parent / "run"))

    @needs_root
    def test_parent_owned_by_another_user(self, tmp_path: Path) -> None:
        """A parent another user owns is his to rearrange: refused."""
        parent = tmp_path / "home"
        parent.mkdir(mode=0o755)
        os.chown(parent, NOBODY, -1)
        with pytest.raises(RunDirError) as info:
            prepare(str(parent / "run"))
        assert "owned by uid 65534" in info.value.problem

    def test_symlinked_parent_is_resolved(self, tmp_path: Path) -> None:
        """A parent reached through a symbolic link (/var/run -> /run) is checked where it
        leads; only the run directory itself must not be a link."""
        real = tmp_path / "real"
        real.mkdir(mode=0o755)
        (tmp_path / "alias").symlink_to(real)
        prepare(str(tmp_path / "alias" / "run"))
        assert mode(real / "run") == 0o700


class TestDefault:
    def test_xdg_runtime_dir_when_ours(self, tmp_path: Path) -> None:
        assert default_run_dir("edge", {"XDG_RUNTIME_DIR": str(tmp_path)}, os.geteuid()) == (
            f"{tmp_path}/sipline-edge"
        )

    def test_xdg_runtime_dir_of_someone_else_is_ignored(self, tmp_path: Path) -> None:
        """An inherited XDG_RUNTIME_DIR (sudo) that is not ours is not used."""
        other = os.geteuid() + 1
        env = {"XDG_RUNTIME_DIR": str(tmp_path)}
        assert default_run_dir("edge", env, other) == f"/tmp/sipline-{other}-edge"

    def test_root_without_xdg(self) -> None:
        assert default_run_dir("edge", {}, 0) == "/run/sipline/edge"

    def test_user_without_xdg(self) -> None:
        """Per user, so one user's node never meets in a directory another user made."""
        assert default_run_dir("edge", {}, 1000) == "/tmp/sipline-1000-edge"


def test_group_id() -> None:
    assert rundir.group_id("") is None
    assert rundir.group_id("0") == 0
    assert rundir.group_id("root") == 0
    with pytest.raises(KeyError):
        rundir.group_id("no-such-group-here")


class TestPeerDirectory:
    """Rule 5: another node's run directory, as the meshes and the state plane use it."""

    def test_missing_is_waited_for(self, tmp_path: Path) -> None:
        assert rundir.peer_problem(str(tmp_path / "b"), str(tmp_path)) == rundir.MISSING

    def test_a_closed_directory_of_ours_or_roots(self, tmp_path: Path) -> None:
        peer = tmp_path / "b"
        peer.mkdir(mode=0o755)  # a peer may let others in to read; not to write
        assert rundir.peer_problem(str(peer), str(tmp_path)) is None

    @pytest.mark.parametrize(("bits", "words"), [(0o777, "writable by its group and others"),
                                                 (0o775, "writable by its group")])  # fmt: skip
    def test_writable_by_others(self, tmp_path: Path, bits: int, words: str) -> None:
        peer = tmp_path / "b"
        peer.mkdir()
        os.chmod(peer, bits)
        problem = rundir.peer_problem(str(peer), str(tmp_path))
        assert problem is not None and words in problem

    def test_symlink(self, tmp_path: Path) -> None:
        (tmp_path / "real").mkdir(mode=0o700)
        (tmp_path / "b").symlink_to(tmp_path / "real")
        assert rundir.peer_problem(str(tmp_path / "b"), str(tmp_path)) == "is a symbolic link"

    @needs_root
    def test_foreign_owner_unless_our_group(self, tmp_path: Path) -> None:
        """Another user's directory is refused, unless it is our run_group's (whose members
        are trusted already): two users' nodes peering through one group."""
        own, peer = tmp_path / "a", tmp_path / "b"
        own.mkdir(mode=0o700)
        peer.mkdir(mode=0o750)
        os.chown(peer, NOBODY, NOBODY)
        assert "owned by uid 65534" in str(rundir.peer_problem(str(peer), str(own)))
        os.chown(own, -1, NOBODY)
        os.chmod(own, 0o750)
        assert rundir.peer_problem(str(peer), str(own)) is None

    def test_under_a_parent_others_can_write(self, tmp_path: Path) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        os.chmod(shared, 0o777)
        (shared / "b").mkdir(mode=0o700)
        problem = rundir.peer_problem(str(shared / "b"), str(tmp_path))
        assert problem is not None and "without the sticky bit" in problem
