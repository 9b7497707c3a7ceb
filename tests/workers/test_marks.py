"""The operator's inactive marks kept in the run directory (workers/routing/marks.py) and
taken by a worker at start and at each swap (workers/reloading.py rule 6): real files in
tmp_path, the client's side (sipline/reload.py) with no worker to ask."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sipline.reload import mark_destination
from workers.reloading import Reloader
from workers.routing import marks

from .test_reload import UAS1, UAS2, UAS3, Files, conf_text, new_dispatcher

A1, A2, C3 = f"sip:{UAS1}", f"sip:{UAS2}", f"sip:{UAS3}"


def run_conf(tmp_path: Path, **kw: str) -> str:
    return conf_text(**kw).replace('run_dir = "/tmp/sipline-reload-test"',
                                   f'run_dir = "{tmp_path}"')  # fmt: skip


def states(r: Reloader) -> dict[tuple[str, str], str]:
    return {(row["set"], row["uri"]): row["state"] for row in r.table.dispatcher.status(5.0)}


class TestFile:
    def test_update_adds_and_removes_and_says_whether_it_changed(self, tmp_path: Path) -> None:
        d = str(tmp_path)
        assert marks.read(d) == []
        assert marks.update(d, ("a", A1), True) is True
        assert marks.update(d, ("a", A1), True) is False  # already there: not written twice
        assert marks.update(d, ("c", C3), True) is True
        assert marks.read(d) == [("a", A1), ("c", C3)]
        assert marks.update(d, ("a", A1), False) is True
        assert marks.update(d, ("a", A1), False) is False
        assert marks.read(d) == [("c", C3)]
        assert (tmp_path / marks.FILE).stat().st_mode & 0o777 == 0o600
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    @pytest.mark.parametrize("data", [
        b"{", b"[]", b'{"inactive": 3}', b'{"inactive": [["a"]]}', b'{"inactive": [["a", 1]]}',
        b'{"inactive": [["", "x"]]}', json.dumps({"inactive": [["a", "x" * 2000]]}).encode(),
        json.dumps({"inactive": [["a", str(i)] for i in range(marks.MAX_MARKS + 1)]}).encode(),
        b" " * (marks.MAX_BYTES + 1), b"[" * 100_000,
    ])  # fmt: skip
    def test_a_damaged_or_forged_file_is_refused_not_raised_through(self, data: bytes) -> None:
        with pytest.raises(marks.MarksError):
            marks.parse(data)

    def test_update_replaces_a_file_that_does_not_parse(self, tmp_path: Path) -> None:
        (tmp_path / marks.FILE).write_bytes(b"garbage")
        assert marks.update(str(tmp_path), ("a", A1), True)
        assert marks.read(str(tmp_path)) == [("a", A1)]

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run ctl as root")
    def test_ctl_run_as_root_leaves_files_the_workers_user_can_read(self, tmp_path: Path) -> None:
        """The run directory belongs to the workers' user (65534 here); ``sudo sipline ctl``
        writes the marks and the lock as that user's, else the workers could not read them."""
        run = tmp_path / "run"
        run.mkdir(mode=0o700)
        os.chown(run, 65534, 65534)
        marks.update(str(run), ("a", A1), True)
        owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in run.iterdir()}
        assert owners == {marks.FILE: (65534, 65534), marks.LOCK: (65534, 65534)}, owners

    def test_an_unwritable_run_dir_is_an_error(self, tmp_path: Path) -> None:
        with pytest.raises(marks.MarksError):
            marks.update(str(tmp_path / "nosuch"), ("a", A1), True)


class TestWorker:
    def test_a_worker_started_after_a_mark_takes_it(self, tmp_path: Path) -> None:
        """The mark is in the file before the worker exists; its ``apply_marks`` (what a
        worker runs right after binding its control socket) disables it, and passes over a
        mark of a destination this routing does not list."""
        marks.update(str(tmp_path), ("a", A1), True)
        marks.update(str(tmp_path), ("a", "sip:127.0.0.1:9"), True)
        f = Files(tmp_path, run_conf(tmp_path))
        r = Reloader(f.routing, True, new_dispatcher, lambda _: None, lambda: 5.0)
        with capture_logs() as logs:
            assert r.apply_marks() == 1
        assert states(r)[("a", A1)] == "disabled" and states(r)[("a", A2)] == "up"
        assert all(r.table.sets["a"].select(f"c{i}").uri == A2 for i in range(20))
        assert [e["marked"] for e in logs if e["event"] == "destination_marks_taken"] == [1]
        assert r.apply_marks() == 0  # taken already: nothing more

    def test_a_destination_a_reload_brings_back_is_marked_again(self, tmp_path: Path) -> None:
        """a lists UAS1 and UAS2, UAS1 marked; a reload drops UAS1, another lists it again:
        the swap takes the file's marks, so it comes back disabled, as a worker started then
        would have it."""
        marks.update(str(tmp_path), ("a", A1), True)
        f = Files(tmp_path, run_conf(tmp_path))
        r = Reloader(f.routing, True, new_dispatcher, lambda _: None, lambda: 5.0)
        r.apply_marks()
        h = r.handlers()
        for text in (run_conf(tmp_path, a=f'"{A2}"'), run_conf(tmp_path)):
            f.path.write_text(text)
            p = h["reload_prepare"]({})
            assert p["reload"] == "prepared", p
            assert (
                h["reload_commit"]({"digest": p["digest"], "generation": r.current.generation + 1})[
                    "reload"
                ]
                == "committed"
            )
        assert states(r)[("a", A1)] == "disabled"

    def test_an_unreadable_file_is_logged_and_marks_nothing(self, tmp_path: Path) -> None:
        (tmp_path / marks.FILE).write_bytes(b'{"inactive": [["a"]]}')
        f = Files(tmp_path, run_conf(tmp_path))
        r = Reloader(f.routing, True, new_dispatcher, lambda _: None, lambda: 5.0)
        with capture_logs() as logs:
            assert r.apply_marks() == 0
        assert [e["event"] for e in logs] == ["destination_marks_unreadable"]
        assert set(states(r).values()) == {"up"}


class TestClient:
    def test_a_mark_no_worker_took_is_not_kept_but_active_always_clears(
        self, tmp_path: Path
    ) -> None:
        """No worker answers (the node is down, or the URI a typo): the inactive mark is
        taken back out of the file; ``active`` removes a mark even then (a stale one, of a
        destination a reload removed, can be cleared)."""
        d = str(tmp_path)
        rc, lines = mark_destination(d, ["set", "a", A1, "inactive"], 0.2)
        assert rc == 1 and marks.read(d) == [], lines
        marks.update(d, ("gone", "sip:127.0.0.1:9"), True)
        mark_destination(d, ["set", "gone", "sip:127.0.0.1:9", "active"], 0.2)
        assert marks.read(d) == []
        assert mark_destination(d, ["set", "a", A1, "down"], 0.2)[0] == 2
