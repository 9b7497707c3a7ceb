"""The run directory: where a node's processes meet, and the gate that keeps local users out.

Every ipc:// socket of a node is a file in its run directory, and a process that can open
those files speaks for the node: a forged worker heartbeat makes an ingress push calls where
it says, an OUT envelope sends packets from our SIP sockets, ``sipline ctl failback`` moves
calls. File permissions are the credential, as for a Unix daemon's admin socket, so the
directory must be ours and closed to everyone else before any process binds in it.

Rules:
1. The default is private to the user, never a shared path another user could create
   first: ``$XDG_RUNTIME_DIR/sipline-<node>`` when that directory is set and ours, else
   ``/run/sipline/<node>`` for root, else ``/tmp/sipline-<uid>-<node>`` (checked like any
   other: someone who creates it first gets a refusal, not our sockets).
2. ``prepare`` creates the directory 0700 (0750 and owned by the group, with ``[node]
   run_group``) and refuses, raising ``RunDirError`` with the path and what is wrong, one that
   is a symbolic link, not a directory, not owned by our uid, writable by group or others, or
   open to others (or to the group, without ``run_group``). An existing directory is never
   repaired: one that was open may already hold another user's sockets.
3. Every ancestor (symbolic links resolved, so ``/var/run`` -> ``/run`` is fine) must be
   owned by root or us and writable by no one else unless sticky (``/tmp``): whoever can
   write a parent can rename our directory away after the check and put his own in its
   place (OpenSSH's StrictModes asks the same of a home directory).
4. ``prepare`` runs once in every process at start-up, before any socket is bound; the
   sockets' own modes (``conf.sockets.bind``) are the second fence, not the first.
5. A peer node's run directory (``[stateplane] peers``) is used, by the meshes each
   heartbeat and by the state plane before it connects, only while ``peer_problem`` finds
   nothing wrong: a real directory, writable by no one but its owner, owned by root or us
   (or by anyone, when it belongs to our own run directory's group: ``run_group`` members
   are trusted already), under parents that pass rule 3. One that does not exist yet is
   waited for: whoever creates it must pass the same check.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping

#: the modes ``prepare`` creates (rule 2); bits beyond them are refused
PRIVATE_MODE = 0o700
GROUP_MODE = 0o750


class RunDirError(Exception):
    """A run directory (or a parent of it) another local user could control."""

    def __init__(self, path: str, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"{path}: {problem}")


def default_run_dir(node: str, env: Mapping[str, str] | None = None, uid: int | None = None,
                    ) -> str:  # fmt: skip
    """Rule 1: where a node called ``node`` meets when ``[node] run_dir`` is not set."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and _owned_by(xdg, uid):
        return f"{xdg.rstrip('/')}/sipline-{node}"
    if uid == 0:
        return f"/run/sipline/{node}"
    return f"/tmp/sipline-{uid}-{node}"


def _owned_by(path: str, uid: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def group_id(name: str) -> int | None:
    """``[node] run_group`` as a gid: None when empty; a number as it is; else a group name.

    Raises:
        KeyError: no such group.
    """
    if not name:
        return None
    if name.isdigit():
        return int(name)
    return grp.getgrnam(name).gr_gid


def prepare(path: str, gid: int | None = None) -> None:
    """Create the run directory if missing (rule 2), then check it and its parents.

    Raises:
        RunDirError: the directory or a parent fails a check; nothing may be bound in it.
    """
    parent = os.path.dirname(path.rstrip("/")) or "/"
    old = os.umask(0o022)  # the modes we create must not depend on the caller's umask
    try:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise RunDirError(parent, f"cannot create the parent directory ({exc.strerror})") from None
    finally:
        os.umask(old)
    check_ancestors(parent)
    if _mkdir(path) and gid is not None:
        # 0700 until both are done: the group never sees a half-made directory
        try:
            os.chown(path, -1, gid)
            os.chmod(path, GROUP_MODE)
        except OSError as exc:
            raise RunDirError(path, f"cannot give the run directory to group {_group(gid)} "
                                    f"({exc.strerror})") from None
    check(path, gid)


def _mkdir(path: str) -> bool:
    """Create ``path`` 0700 whatever the umask; False when something was there already."""
    old = os.umask(0o077)
    try:
        os.mkdir(path, PRIVATE_MODE)
    except FileExistsError:
        return False  # another process of the node was first, or someone else was: check
    except OSError as exc:
        raise RunDirError(path, f"cannot create the run directory ({exc.strerror})") from None
    finally:
        os.umask(old)
    return True


def check(path: str, gid: int | None = None) -> None:
    """Rule 2, for an existing run directory.

    Raises:
        RunDirError: what is wrong with it, and what would be right.
    """
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RunDirError(path, f"cannot examine the run directory ({exc.strerror})") from None
    if stat.S_ISLNK(st.st_mode):
        raise RunDirError(path, "is a symbolic link; the run directory must be a real "
                                "directory (a link can be pointed elsewhere by its owner)")
    if not stat.S_ISDIR(st.st_mode):
        raise RunDirError(path, "is not a directory")
    me = os.geteuid()
    if st.st_uid != me:
        raise RunDirError(path, f"is owned by {_user(st.st_uid)}, not by {_user(me)} that runs "
                                "this process: its owner could put his own sockets in it")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise RunDirError(path, f"is writable by {_who(mode & 0o022)} (mode {mode:04o}); it "
                                f"must be {_wanted(gid)}")
    if gid is None and mode & 0o077:
        raise RunDirError(path, f"is open to {_who(mode & 0o077)} (mode {mode:04o}) and [node] "
                                f"run_group is not set; it must be {_wanted(gid)}")
    if gid is not None and mode & 0o007:
        raise RunDirError(path, f"is open to others (mode {mode:04o}); it must be {_wanted(gid)}")
    if gid is not None and mode & 0o070 and st.st_gid != gid:
        raise RunDirError(path, f"belongs to group {_group(st.st_gid)}, not to [node] run_group "
                                f"{_group(gid)}")


def check_ancestors(path: str) -> None:
    """Rule 3 for ``path`` (the run directory's parent) and every directory above it.

    Raises:
        RunDirError: an ancestor someone other than root or us could change.
    """
    me = os.geteuid()
    p = os.path.realpath(path)
    while True:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise RunDirError(p, f"cannot examine a parent of the run directory "
                                 f"({exc.strerror})") from None
        if st.st_uid not in (0, me):
            raise RunDirError(p, f"a parent of the run directory is owned by {_user(st.st_uid)}, "
                                 f"who could replace the run directory; use a path whose "
                                 f"parents belong to root or {_user(me)}")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise RunDirError(p, f"a parent of the run directory is writable by "
                                 f"{_who(mode & 0o022)} without the sticky bit (mode {mode:04o}), "
                                 f"so they could replace the run directory")
        if p == "/":
            return
        p = os.path.dirname(p)


#: ``peer_problem`` of a peer run directory that does not exist (yet): wait, do not warn
MISSING = "does not exist (yet)"


def peer_problem(path: str, own_run_dir: str) -> str | None:
    """Rule 5: why another node's run directory ``path`` must not be used now, or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return MISSING
    except OSError as exc:
        return f"cannot examine it ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    mode = stat.S_IMODE(st.st_mode)
    try:
        own = os.stat(own_run_dir)
        our_group = bool(own.st_mode & 0o070) and st.st_gid == own.st_gid
    except OSError:
        our_group = False
    if mode & 0o002 or (mode & 0o020 and not our_group):
        return f"is writable by {_who(mode & 0o022)} (mode {mode:04o})"
    if st.st_uid not in (0, os.geteuid()) and not our_group:
        return f"is owned by {_user(st.st_uid)}"
    try:
        check_ancestors(os.path.dirname(path.rstrip("/")) or "/")
    except RunDirError as exc:
        return str(exc)
    return None


def _wanted(gid: int | None) -> str:
    if gid is None:
        return f"{PRIVATE_MODE:04o} (chmod {PRIVATE_MODE:o} it, or remove it and let sipline create it)"
    return (f"{GROUP_MODE:04o} or {PRIVATE_MODE:04o}, group {_group(gid)} (remove it and let "
            "sipline create it)")


def _who(bits: int) -> str:
    return " and ".join(w for w, m in (("its group", 0o070), ("others", 0o007)) if bits & m)


def _user(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{gid} ({grp.getgrgid(gid).gr_name})"
    except KeyError:
        return str(gid)
