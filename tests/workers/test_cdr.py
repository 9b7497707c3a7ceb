"""The CDR file writer (workers/dialogs/cdr.py): batches, the fsync window on an injected clock,
rotation by rename, by delete and by SIGHUP, the mode and group of a created file, reading
back the keys already written, which CDRs the worker logs too ([dialogs] cdr_log,
workers/dialogs/cdrfile.py), and the [dialogs] CDR keys' configuration checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from conf.load import ConfigError, from_dict
from workers.dialogs.cdr import CdrWriter, cdr_key
from workers.dialogs.cdrfile import CdrFile

from .dialog_helpers import T0, W0, Call, table
from .test_dialogs import req


def cdr(n: int, tag: str = "ft") -> dict[str, Any]:
    return {"call_id": f"c{n}@example.com", "from_tag": tag, "cause": "bye", "talk_ms": n}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ids(path: Path) -> list[str]:
    return [json.loads(line)["call_id"] for line in path.read_text().splitlines()]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors os.fsync was called on (the real fsync still runs)."""
    calls: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


class TestBatches:
    def test_lines_wait_for_flush_then_go_in_one_write(self, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
        """Nothing reaches the file before ``flush``; a flush is one os.write of every line."""
        path = tmp_path / "cdr"
        w = CdrWriter(str(path))
        w.write(cdr(1))
        w.write(cdr(2))
        assert not path.exists() and w.pending == 2
        writes: list[int] = []
        real = os.write
        monkeypatch.setattr(os, "write", lambda fd, b: writes.append(len(b)) or real(fd, b))
        assert w.flush() == 2
        assert len(writes) == 1 and ids(path) == ["c1@example.com", "c2@example.com"]
        w.close()

    def test_never_raises_and_keeps_what_failed(self, tmp_path: Path) -> None:
        """An unwritable path and an unencodable CDR are counted, not raised; the buffer is
        bounded; once the path works the lines that waited are written."""
        w = CdrWriter(str(tmp_path), max_lines=3)  # a directory: open fails
        w.write({"x": object()})
        for n in range(5):
            w.write(cdr(n))
        assert w.flush() == 0
        assert w.pending == 3 and w.counters["dropped"] == 2 and w.counters["errors"] == 2
        w.path = str(tmp_path / "ok")
        assert w.flush() == 3
        w.close()
        assert len(ids(tmp_path / "ok")) == 3


def logged_cdrs(logs: list[dict[str, Any]]) -> list[str]:
    return [e["call_id"] for e in logs if e["event"] == "cdr"]


class TestCdrLog:
    """``[dialogs] cdr_log``: which CDRs the worker logs as ``cdr`` events besides the file.
    The loop is only held for the fsync timer."""

    @pytest.fixture
    def loop(self) -> Any:
        import asyncio

        loop = asyncio.new_event_loop()
        yield loop
        loop.close()

    def test_unwritten_logs_none_the_file_takes(self, tmp_path: Path, loop: Any) -> None:
        """The default: CDRs the file takes are not logged; each is in the file once."""
        f = CdrFile(CdrWriter(str(tmp_path / "cdr")), loop)
        with capture_logs() as logs:
            for n in range(3):
                f.write(cdr(n))
            f.flush()
            f.write(cdr(3))
            f.flush()
        f.cancel()
        f.close()
        assert logged_cdrs(logs) == []
        assert ids(tmp_path / "cdr") == [f"c{n}@example.com" for n in range(4)]

    def test_all_logs_every_cdr_once(self, tmp_path: Path, loop: Any) -> None:
        """``all``: every CDR is logged, and written to the file as well."""
        f = CdrFile(CdrWriter(str(tmp_path / "cdr")), loop, log_all=True)
        with capture_logs() as logs:
            for n in range(3):
                f.write(cdr(n))
            f.flush()
        f.cancel()
        f.close()
        assert logged_cdrs(logs) == [f"c{n}@example.com" for n in range(3)]
        assert len(ids(tmp_path / "cdr")) == 3

    def test_a_failed_write_logs_that_iterations_cdrs_once(self, tmp_path: Path,
                                                            loop: Any) -> None:  # fmt: skip
        """A file that cannot be written: the CDRs of each failed iteration are logged at its
        end, once (a later failed flush does not log the waiting ones again); those the full
        buffer refused are logged as they come; the file gets the waiting ones once it works."""
        w = CdrWriter(str(tmp_path), max_lines=3)  # a directory: open fails
        f = CdrFile(w, loop)
        with capture_logs() as logs:
            f.write(cdr(0))
            f.write(cdr(1))
            assert logged_cdrs(logs) == []  # not before the iteration's write fails
            f.flush()
            assert logged_cdrs(logs) == ["c0@example.com", "c1@example.com"]
            f.write(cdr(2))
            f.write(cdr(3))  # the buffer holds 3: refused, logged at once
            assert logged_cdrs(logs)[2:] == ["c3@example.com"]
            f.flush()
            assert logged_cdrs(logs)[2:] == ["c3@example.com", "c2@example.com"]
            w.path = str(tmp_path / "ok")
            f.write(cdr(4))
            assert w.pending == 3  # c4 refused as well, and logged
            f.flush()
            f.write(cdr(5))
            f.flush()
        f.cancel()
        f.close()
        assert logged_cdrs(logs) == [f"c{n}@example.com" for n in (0, 1, 3, 2, 4)]
        assert ids(tmp_path / "ok") == [f"c{n}@example.com" for n in (0, 1, 2, 5)]


class TestFsyncWindow:
    def test_a_line_is_fsynced_within_the_window(self, tmp_path: Path, fsyncs: list[int]) -> None:
        """The deadline is the oldest unsynced line's write plus the window; lines written
        later share that fsync; after it nothing waits."""
        clock = Clock()
        w = CdrWriter(str(tmp_path / "cdr"), fsync_s=0.05, clock=clock)
        assert w.sync_deadline() is None
        w.write(cdr(1))
        w.flush()
        assert w.sync_deadline() == pytest.approx(100.05) and fsyncs == []
        clock.now = 100.03
        w.write(cdr(2))
        w.flush()
        assert w.sync_deadline() == pytest.approx(100.05)  # the oldest line's deadline
        clock.now = 100.05
        assert w.sync() and len(fsyncs) == 1 and w.sync_deadline() is None
        clock.now = 100.2
        w.write(cdr(3))
        w.flush()
        assert w.sync_deadline() == pytest.approx(100.25)
        w.close()  # shutdown syncs what waits
        assert len(fsyncs) == 2 and w.counters["synced"] == 2

    def test_zero_fsyncs_every_batch(self, tmp_path: Path, fsyncs: list[int]) -> None:
        """``fsync_s = 0``: each flush is durable when it returns; no deadline is left."""
        w = CdrWriter(str(tmp_path / "cdr"), fsync_s=0, clock=Clock())
        for n in range(3):
            w.write(cdr(n))
            w.flush()
            assert len(fsyncs) == n + 1 and w.sync_deadline() is None
        w.close()
        assert len(fsyncs) == 3


class TestRotation:
    def test_renamed_file_is_left_and_the_path_created_again(self, tmp_path: Path,
                                                            fsyncs: list[int]) -> None:  # fmt: skip
        """logrotate's rename: the next flush syncs and closes the old file and writes a new
        one at the path; no line is lost or written twice."""
        path = tmp_path / "cdr"
        w = CdrWriter(str(path), clock=Clock())
        w.write(cdr(1))
        w.flush()
        path.rename(tmp_path / "cdr.1")
        w.write(cdr(2))
        w.flush()
        assert ids(tmp_path / "cdr.1") == ["c1@example.com"] and ids(path) == ["c2@example.com"]
        assert w.counters["reopened"] == 1 and len(fsyncs) == 1  # the old file, on leaving it
        w.close()

    def test_deleted_file_is_created_again(self, tmp_path: Path) -> None:
        path = tmp_path / "cdr"
        w = CdrWriter(str(path))
        w.write(cdr(1))
        w.flush()
        path.unlink()
        w.write(cdr(2))
        w.flush()
        assert ids(path) == ["c2@example.com"] and w.counters["reopened"] == 1
        w.close()

    def test_reopen_syncs_and_closes_now(self, tmp_path: Path, fsyncs: list[int]) -> None:
        """SIGHUP: what was written is fsynced and the file closed at once (so a rotation
        tool may compress it); the next flush opens whatever the path names then."""
        path = tmp_path / "cdr"
        w = CdrWriter(str(path), clock=Clock())
        w.write(cdr(1))
        w.flush()
        fd = w._fd
        assert fd is not None
        w.reopen()
        assert len(fsyncs) == 1 and fsyncs[0] == fd and w.sync_deadline() is None
        with pytest.raises(OSError):
            os.fstat(fd)  # closed
        os.replace(path, tmp_path / "cdr.1")
        path.write_text("")  # a copy-and-truncate tool's empty file, same name
        w.write(cdr(2))
        w.flush()
        assert ids(path) == ["c2@example.com"] and w.counters["reopened"] == 1
        w.close()


class TestMode:
    def test_created_owner_only_without_group(self, tmp_path: Path) -> None:
        old = os.umask(0)  # the mode must not depend on the umask
        try:
            w = CdrWriter(str(tmp_path / "cdr"))
            w.write(cdr(1))
            w.flush()
        finally:
            os.umask(old)
        w.close()
        assert stat.S_IMODE((tmp_path / "cdr").stat().st_mode) == 0o600

    def test_created_0640_for_the_group(self, tmp_path: Path) -> None:
        """With a group: 0640 and that group's (a supplementary group when we have one)."""
        gid = next((g for g in os.getgroups() if g != os.getgid()), os.getgid())
        w = CdrWriter(str(tmp_path / "cdr"), gid=gid)
        w.write(cdr(1))
        w.flush()
        w.close()
        st = (tmp_path / "cdr").stat()
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == gid

    def test_an_existing_file_keeps_its_mode(self, tmp_path: Path) -> None:
        path = tmp_path / "cdr"
        path.write_text("")
        path.chmod(0o644)
        w = CdrWriter(str(path), gid=os.getgid())
        w.write(cdr(1))
        w.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 and ids(path) == ["c1@example.com"]


class TestRecentKeys:
    def test_keys_written_by_any_writer_are_found(self, tmp_path: Path) -> None:
        """Another writer (another worker, or this one after a restart) reads back the keys
        of the CDRs in the file; a dialog of the same Call-ID with another From-tag is not one
        of them."""
        path = str(tmp_path / "cdr")
        a = CdrWriter(path)
        for n in range(50):
            a.write(cdr(n))
        a.close()
        b = CdrWriter(path)
        keys = b.recent_keys()
        assert cdr_key("c7@example.com", "ft") in keys and len(keys) == 50
        assert cdr_key("c7@example.com", "other") not in keys

    def test_new_lines_extend_a_reading_and_a_partial_line_waits(self, tmp_path: Path) -> None:
        path = tmp_path / "cdr"
        w = CdrWriter(str(path))
        w.write(cdr(1))
        w.flush()
        assert w.recent_keys() == {cdr_key("c1@example.com", "ft")}
        with open(path, "ab") as f:
            f.write(json.dumps(cdr(2), separators=(",", ":")).encode()[:20])  # torn
        w.write(cdr(3))
        w.flush()
        assert cdr_key("c3@example.com", "ft") not in w.recent_keys()  # glued to the torn one
        assert cdr_key("c1@example.com", "ft") in w.recent_keys()
        w.close()

    def test_only_the_tail_is_read(self, tmp_path: Path) -> None:
        path = str(tmp_path / "cdr")
        w = CdrWriter(path, recent_bytes=2000)
        for n in range(200):
            w.write(cdr(n))
        w.flush()
        keys = w.recent_keys()
        assert cdr_key("c199@example.com", "ft") in keys and cdr_key("c0@example.com", "ft") not in keys
        assert 10 < len(keys) < 40
        w.close()

    def test_rotated_file_held_peer_files_and_old_lines(self, tmp_path: Path) -> None:
        """The file we still hold after a rename, a peer's file, and a line without From-tag
        (an older version's: its Call-ID alone) all count; unreadable files are skipped."""
        path = tmp_path / "cdr"
        w = CdrWriter(str(path))
        w.write(cdr(1))
        w.flush()
        path.rename(tmp_path / "cdr.1")  # not written since: still held
        peer = tmp_path / "peer.cdr"
        peer.write_text(json.dumps({"cause": "bye", "call_id": "p1"}) + "\n"
                        + json.dumps({"from_tag": "x", "call_id": "p2"}) + "\n")  # fmt: skip
        keys = w.recent_keys([str(peer), str(tmp_path / "missing")])
        assert keys == {cdr_key("c1@example.com", "ft"), "p1", cdr_key("p2", "x")}
        w.close()


def test_a_dialog_that_came_back_with_its_cdr_written_is_forgotten() -> None:
    """What the worker does with an adopted record whose key is in the file: a mirror that
    still holds the dialog (its "t" was lost with the writer) drops it on the "t" that
    ``forget`` emits; the adopting table never holds it, so it can write no second CDR."""
    owner, mirror, adopter = table(), table(), table()
    c = Call()
    c.confirmed(owner)
    for delta in owner.take_deltas():
        mirror.apply(delta, T0, W0)
    req("BYE", 2, t=5)(owner, c)  # the CDR is written; the "t" never leaves (the kill)
    (written,) = owner.take_cdrs()
    (rec,) = mirror.snapshot(T0, W0)
    assert cdr_key(rec[0], rec[1]) == cdr_key(str(written["call_id"]), str(written["from_tag"]))
    adopter.forget(rec[0], rec[1], "cdr_written", W0 + 6)
    (t_delta,) = adopter.take_deltas()
    assert t_delta[0] == "t" and t_delta[3] == "cdr_written"
    mirror.apply(t_delta, T0 + 6, W0 + 6)
    assert len(mirror) == 0 and len(adopter) == 0 and adopter.take_cdrs() == []


BASE: dict[str, Any] = {
    "destination_set": [{"name": "uas", "destinations": ["sip:127.0.0.1:5080"]}],
    "route": [{"name": "default", "to": "uas", "mode": "stateful"}],
}


@pytest.mark.parametrize(("dialogs", "key", "expected"), [
    ({"cdr_fsync_ms": -1}, "dialogs.cdr_fsync_ms", "a number from 0"),
    ({"cdr_fsync_ms": 60_000}, "dialogs.cdr_fsync_ms", "to 10000"),
    ({"cdr_group": "wheel"}, "dialogs.cdr_group", "empty unless cdr_file"),
    ({"cdr_file": "/tmp/x.cdr", "cdr_group": "no-such-group-here"}, "dialogs.cdr_group",
     "an existing group"),
    ({"cdr_peer_files": ["/tmp/b.cdr"]}, "dialogs.cdr_peer_files[0]", "unless cdr_file"),
    ({"cdr_file": "/tmp/a.cdr", "cdr_peer_files": ["b.cdr"]}, "dialogs.cdr_peer_files[0]",
     "an absolute path"),
    ({"cdr_file": "/tmp/a.cdr", "cdr_peer_files": ["/tmp/b.cdr", "/tmp/./b.cdr"]},
     "dialogs.cdr_peer_files[1]", "each file once"),
    ({"cdr_log": "some"}, "dialogs.cdr_log", 'one of "unwritten", "all"'),
], ids=["fsync-negative", "fsync-large", "group-needs-file", "group-unknown", "peers-need-file",
        "peer-relative", "peer-twice", "log-unknown"])  # fmt: skip
def test_config_errors(dialogs: dict[str, Any], key: str, expected: str) -> None:
    """A bad CDR key stops start-up naming the key and what it wants."""
    with pytest.raises(ConfigError) as err:
        from_dict({**BASE, "dialogs": {"enabled": True, **dialogs}}, "sipline.toml")
    assert err.value.key == key and expected in err.value.expected, err.value


def test_config_defaults_and_a_shared_peer_list() -> None:
    """Defaults; both nodes of a pair may list both files (our own is read anyway)."""
    s = from_dict({**BASE, "dialogs": {"enabled": True, "cdr_file": "/tmp/a.cdr"}}, "x.toml")
    assert s.dialogs.cdr_fsync_ms == 20 and not s.dialogs.cdr_group
    assert s.dialogs.cdr_log == "unwritten"
    assert s.dialogs.cdr_peer_files == []
    both = ["/tmp/a.cdr", "/tmp/b.cdr"]
    s = from_dict({**BASE, "dialogs": {"enabled": True, "cdr_file": "/tmp/a.cdr",
                                       "cdr_peer_files": both}}, "x.toml")  # fmt: skip
    assert s.dialogs.cdr_peer_files == both
