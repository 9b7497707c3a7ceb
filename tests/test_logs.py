"""``sipline logs`` (parsing honcho output, filters, summary, follow) and the pure parts of
``sipline top`` and ``sipline metrics``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from sipline import cli, logs, metrics, top


def _ev(event: str, proc: str, level: str = "info", **fields: Any) -> str:
    body = {"event": event, "proc": proc, "pid": 1, "node": "n", "level": level,
            "timestamp": "2024-05-01T12:00:01.123456Z", **fields}  # fmt: skip
    return json.dumps(body)


SAMPLE = [
    "12:00:00 system    | ingress.1 started (pid=10)",
    f"12:00:01 worker.1  | {_ev('load_stats', 'worker.1', busy_1s=0.1)}",
    f"12:00:01 worker.2  | {_ev('load_stats', 'worker.2', busy_1s=0.2)}",
    f"\x1b[32m12:00:01 ingress.1 | \x1b[0m{_ev('message_dropped', 'ingress.1', 'warning', reason='bad_via', call_id='c1')}",
    '12:00:02 worker.1  | {"event": "cut',  # a line cut mid-object
    "12:00:02 worker.1  | [1, 2, 3]",  # JSON, but not an object
    "12:00:02 worker.1  | Traceback (most recent call last):",
    "",
    "\x00\xff garbage",
    f"12:00:03 worker.1  | {_ev('load_stats', 'worker.1', busy_1s=0.3)}",
    _ev("dialog_ended", "worker.2", call_id="c1", cdr={"duration_s": 3, "x": "y" * 200}),
    f"12:00:04 worker.1  | {_ev('control_failed', 'worker.1', 'error', cmd='stats')}",
]


def run(lines: list[str], **kw: Any) -> tuple[str, logs.Summary]:
    opts = logs.Options(logs.Filter(**{k: kw.pop(k) for k in list(kw) if k in
                                       ("events", "proc", "call_id", "level")}), **kw)  # fmt: skip
    out, summary = io.StringIO(), logs.Summary()
    logs.run([line + "\n" for line in lines], opts, out, summary)
    return out.getvalue(), summary


class TestParse:
    def test_honcho_prefix_and_colour_are_stripped(self) -> None:
        """A honcho line, coloured or not, gives the JSON object; proc comes from the JSON."""
        line = logs.parse_line(SAMPLE[3])
        assert line.event is not None and line.event["event"] == "message_dropped"
        assert line.proc == "ingress.1"

    def test_raw_json_line(self) -> None:
        """A raw JSON line (a process's own stdout) parses with no prefix."""
        line = logs.parse_line(SAMPLE[10])
        assert line.event is not None and line.proc is None and line.event["proc"] == "worker.2"

    def test_proc_from_prefix_when_the_object_has_none(self) -> None:
        """An object without ``proc`` takes honcho's process name."""
        line = logs.parse_line('12:00:00 timers.1 | {"event": "x"}')
        assert line.event == {"event": "x", "proc": "timers.1"}

    @pytest.mark.parametrize("raw", [SAMPLE[0], *SAMPLE[4:9], "{", "{}}", "12:00 x | {", "\ud800"])
    def test_non_json_lines_have_no_event(self, raw: str) -> None:
        """honcho's own lines, cut objects, arrays, tracebacks and garbage: no event, no error."""
        assert logs.parse_line(raw).event is None


class TestFilters:
    def test_everything_json_by_default(self) -> None:
        """Without filters every JSON event is shown, one compact line each, others skipped."""
        text, summary = run(SAMPLE)
        assert sum(summary.events.values()) == 6
        assert len(text.splitlines()) == 6
        assert "started" not in text and "Traceback" not in text

    def test_all_keeps_non_json_lines(self) -> None:
        """``--all`` prints the lines that are not JSON as they are."""
        text, _ = run(SAMPLE, show_all=True)
        assert "system    | ingress.1 started (pid=10)" in text and "Traceback" in text

    def test_event_globs_or_together(self) -> None:
        """Several ``--event`` globs keep events matching any of them."""
        _, summary = run(SAMPLE, events=("load_*", "dialog_ended"))
        assert dict(summary.events) == {"load_stats": 3, "dialog_ended": 1}

    def test_proc_glob(self) -> None:
        """``--proc 'worker*'`` keeps only workers' events."""
        _, summary = run(SAMPLE, proc="worker*")
        assert set(summary.procs) == {"worker.1", "worker.2"}

    def test_call_id(self) -> None:
        """``--call-id`` keeps the events of that call only."""
        _, summary = run(SAMPLE, call_id="c1")
        assert dict(summary.events) == {"message_dropped": 1, "dialog_ended": 1}

    def test_level_is_a_minimum(self) -> None:
        """``--level warning`` keeps warnings and errors."""
        _, summary = run(SAMPLE, level="warning")
        assert dict(summary.events) == {"message_dropped": 1, "control_failed": 1}

    def test_filters_combine(self) -> None:
        """Filters combine with AND."""
        _, summary = run(SAMPLE, events=("load_stats",), proc="worker.1")
        assert dict(summary.procs) == {"worker.1": 2}

    def test_json_passes_objects_through(self) -> None:
        """``--json`` prints each kept event as one JSON object."""
        text, _ = run(SAMPLE, as_json=True, events=("dialog_ended",))
        assert json.loads(text)["cdr"]["x"] == "y" * 200

    def test_compact_line_cuts_long_values(self) -> None:
        """The compact view shows time, proc, level, event, then key=value, long values cut."""
        text, _ = run(SAMPLE, events=("dialog_ended",))
        assert text.startswith("12:00:01.123 worker.2")
        assert "dialog_ended call_id=c1 cdr=" in text and text.rstrip().endswith("…")
        assert len(text.rstrip()) < 150

    def test_max_events(self) -> None:
        """``--max-events`` stops after that many kept events."""
        _, summary = run(SAMPLE, max_events=2)
        assert sum(summary.events.values()) == 2


class TestSummary:
    def test_counts_and_last_load_stats(self) -> None:
        """Counts per event and per proc, and each process's last load_stats."""
        _, summary = run(SAMPLE, summary=True)
        assert summary.events["load_stats"] == 3
        assert summary.procs == {"worker.1": 3, "worker.2": 2, "ingress.1": 1}
        assert summary.load["worker.1"]["busy_1s"] == 0.3
        text = "\n".join(summary.lines())
        assert "last load_stats:" in text and "busy_1s=0.3" in text

    def test_cli_summary_from_stdin(self) -> None:
        """``sipline logs --summary`` over stdin prints only the summary."""
        done = subprocess.run([sys.executable, "-m", "sipline", "logs", "--summary"],
                              input="\n".join(SAMPLE) + "\n", capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "       3  load_stats" in done.stdout
        assert "last load_stats:" in done.stdout

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A file that cannot be opened is an error message and status 2, not a traceback."""
        assert cli.main(["logs", str(tmp_path / "nope.log")]) == 2
        assert "nope.log" in capsys.readouterr().err


def _bytes_read(pid: int) -> int:
    """What process ``pid`` has read so far with read(2) and kin (``rchar``, proc(5))."""
    io_stats = Path(f"/proc/{pid}/io").read_text()
    return int(io_stats.split("rchar:", 1)[1].split()[0])


class TestFollow:
    def test_follow_reads_what_is_appended(self, tmp_path: Path) -> None:
        """``--follow`` prints lines appended after it started, a line written in two parts
        once whole, and stops at ``--max-events``."""
        path = tmp_path / "node.log"
        path.write_text(SAMPLE[1] + "\n")
        argv = [sys.executable, "-m", "sipline", "logs", "--follow", "--max-events", "3",
                "--timeout", "20", "--event", "load_stats", str(path)]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert "worker.1" in proc.stdout.readline()  # what was there before
            second = _ev("load_stats", "worker.2", busy_1s=0.5)
            half = "12:00:05 worker.2  | " + second[:20]
            before = _bytes_read(proc.pid)
            with path.open("a") as f:
                f.write(half)
                f.flush()
                # the follower has read the first half alone before the rest is written
                end = time.monotonic() + 10
                while _bytes_read(proc.pid) < before + len(half.encode()):
                    assert time.monotonic() < end, "the follower never read the first half"
                    time.sleep(0.01)  # polling step, bounded by the deadline
                f.write(second[20:] + "\n" + "garbage\n" + SAMPLE[9] + "\n")
            rest = proc.communicate(timeout=20)[0]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
        assert proc.returncode == 0
        assert rest.splitlines()[0].split()[1:4] == ["worker.2", "info", "load_stats"]
        assert "busy_1s=0.5" in rest and "busy_1s=0.3" in rest

    def test_follow_timeout_ends_with_summary(self, tmp_path: Path) -> None:
        """``--follow --timeout`` ends on its own and prints the summary of what it saw."""
        path = tmp_path / "node.log"
        path.write_text("\n".join(SAMPLE) + "\n")
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "sipline", "logs", "-f", "--timeout", "0.5",
                               "--summary", str(path)], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0 and time.monotonic() - t0 < 15
        assert "       3  load_stats" in done.stdout


class TestTop:
    def test_stage_of(self) -> None:
        """The stage is the role part of an ident."""
        assert [top.stage_of(p) for p in ("worker.1-42", "ingress-7", "timers.2", "stateplane")
                ] == ["worker", "ingress", "timers", "stateplane"]  # fmt: skip

    def test_rates_from_counter_deltas(self) -> None:
        """Rates are counter deltas over time; none on the first refresh or after a restart."""
        rates = top.Rates()
        assert rates.update("w", 10.0, 100, 50) == ("-", "-")
        assert rates.update("w", 12.0, 300, 150) == ("100.0", "50.0")
        assert rates.update("w", 13.0, 5, 5) == ("-", "-")

    def test_render_groups_by_stage(self) -> None:
        """One table per stage; processes without a control socket are named as such."""
        replies: list[dict[str, Any]] = [{"proc": "worker.1-9", "role": "worker", "busy_1s": 0.25,
                    "counters": {"msgs_in": 10, "drop_bug": 2}, "queued_out": 0},
                   {"proc": "ingress.1-8", "role": "ingress", "counters": {}}]  # fmt: skip
        text = top.render("n", replies, ["worker.2-7"], ["timers.1-6", "stateplane"],
                          top.Rates(), 1.0)  # fmt: skip
        assert text.index("[ingress]") < text.index("ingress.1-8") < text.index("[worker]")
        assert "worker.2-7: no answer" in text
        assert "timers.1-6: no control socket" in text and "stateplane: no control socket" in text
        row = next(ln for ln in text.splitlines() if ln.startswith("worker.1-9")).split()
        assert row == ["worker.1-9", "0.25", "-", "-", "10", "0", "0", "2"]


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text exposition, by name and label set."""
    return {key(s.name, **s.labels): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


class TestMetrics:
    REPLIES: ClassVar[list[dict[str, Any]]] = [
        {"ok": True, "proc": "worker.1-4242", "role": "worker", "busy_1s": 0.5,
         "counters": {"msgs_in": 7, "msgs_out": 6, "drop_no_worker": 1}, "queued_out": 3,
         "transactions": 2, "txn": {"timeout": 1},
         "dialogs": {"active": 4, "early": 1, "processed": 9, "expired": 0, "failed": 1,
                     "profiles": {}}, "routing": {"generation": 3, "digest": "ab12"}},
        {"ok": True, "proc": "ingress.1-4243", "role": "ingress", "busy_1s": 0.1,
         "counters": {"msgs_in": 8, "msgs_out": 7}, "queued_out": 0,
         "hops": {"worker.1-4242": {"queued": 12, "oldest_ms": 250.0, "sent": 40}},
         "rejected": {"bad_request": 5, "tcp_idle": 2}},
        {"ok": False, "proc": "worker.2-4244", "error": "boom"},
    ]  # fmt: skip

    def scrape(self) -> str:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(metrics.NodeCollector("/nonexistent", "n1",
                                           lambda d, c: (self.REPLIES, ["timers.1-1"])))
        return generate_latest(reg).decode()

    def test_labels_and_values(self) -> None:
        """Each answer becomes samples labelled node, stage and proc (no pid)."""
        got = samples(self.scrape())
        w = {"node": "n1", "stage": "worker", "proc": "worker.1"}
        i = {"node": "n1", "stage": "ingress", "proc": "ingress.1"}
        assert got[key("sipline_messages_total", **w, direction="in")] == 7
        assert got[key("sipline_messages_total", **i, direction="out")] == 7
        assert got[key("sipline_busy_ratio", **w)] == 0.5
        assert got[key("sipline_drops_total", **w, reason="no_worker")] == 1
        assert got[key("sipline_queued_messages", **w)] == 3
        assert got[key("sipline_transactions", **w)] == 2
        assert got[key("sipline_transaction_events_total", **w, kind="timeout")] == 1
        assert got[key("sipline_dialogs", **w, state="active")] == 4
        assert got[key("sipline_dialogs", **w, state="early")] == 1
        assert got[key("sipline_dialogs_ended_total", **w, outcome="processed")] == 9
        assert got[key("sipline_processes", node="n1", answered="no")] == 1
        assert got[key("sipline_rejected_total", **i, reason="bad_request")] == 5
        assert got[key("sipline_rejected_total", **i, reason="tcp_idle")] == 2
        assert got[key("sipline_routing_generation", **w, digest="ab12")] == 3

    def test_hops(self) -> None:
        """Each pipe an answer lists is a series per peer (no pid): depth, oldest wait in
        seconds, messages sent."""
        got = samples(self.scrape())
        h = {"node": "n1", "stage": "ingress", "proc": "ingress.1", "peer": "worker.1"}
        assert got[key("sipline_hop_queued_messages", **h)] == 12
        assert got[key("sipline_hop_oldest_queued_seconds", **h)] == 0.25
        assert got[key("sipline_hop_messages_total", **h)] == 40

    def test_failed_answers_are_skipped(self) -> None:
        """A process that answered with an error contributes no samples."""
        assert "worker.2" not in self.scrape()

    def test_proc_label(self) -> None:
        """The pid is cut off a control ident; a name without one is kept whole."""
        assert metrics.proc_label("worker.1-4242") == "worker.1"
        assert metrics.proc_label("worker") == "worker"
        # a host on the TCP hop puts its node name first (conf/bustcp.py rule 4)
        assert metrics.proc_label("edge.ingress.1-4242") == "edge.ingress.1"
        assert metrics.stage_label("edge.ingress.1") == "ingress"
        assert metrics.stage_label("worker.2") == "worker"
        assert top.stage_of("b.worker.1-4242") == "worker" and top.stage_of("b.worker-7") == "worker"
