"""``sipline top``: load per stage of a running node, refreshed in place.

Rules:
1. Each refresh asks every process ``stats`` over the control channel (conf/control.py).
   Every process answers; a stateplane found by its socket files that does not answer is
   listed as "no control socket" (its numbers are in ``load_stats``: ``sipline logs --event
   load_stats``).
2. Rates are counter deltas between two refreshes over the time between them; the first
   table has none ("-"). A process that restarted (a counter went down) starts afresh.
3. Bounded: ``--once`` prints one table, ``--count N`` N of them; otherwise until Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from conf import sockets
from conf.control import ask
from conf.load import load_or_report
from sipline.ctl import refused_text, table

STAGES = ("ingress", "worker", "stateplane", "timers")
COLUMNS = ("proc", "busy_1s", "in_per_s", "out_per_s", "msgs_in", "msgs_out", "queued_out",
           "drops")  # fmt: skip
#: clear the screen and home the cursor (ANSI), so a refresh replaces the last table
_CLEAR = "\x1b[H\x1b[2J"


def stage_of(proc: str) -> str:
    """``worker`` from ``worker.1``, ``worker.1-4242`` or, on a host of the TCP hop,
    ``edge.worker.1-4242`` (``conf.bustcp`` rule 4: the node name comes first)."""
    head = proc.rpartition("-")[0] if "-" in proc else proc
    parts = head.split(".")
    return next((p for p in parts if p in STAGES), parts[0])


@dataclass
class Rates:
    """Counters seen at the last refresh, per process, to turn them into rates (rule 2)."""

    _last: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def update(self, proc: str, now: float, msgs_in: int, msgs_out: int) -> tuple[str, str]:
        prev = self._last.get(proc)
        self._last[proc] = (now, msgs_in, msgs_out)
        if prev is None or now <= prev[0] or msgs_in < prev[1] or msgs_out < prev[2]:
            return "-", "-"
        dt = now - prev[0]
        return f"{(msgs_in - prev[1]) / dt:.1f}", f"{(msgs_out - prev[2]) / dt:.1f}"


def row(reply: dict[str, Any], rates: Rates, now: float) -> dict[str, Any]:
    c = reply.get("counters") or {}
    m_in, m_out = int(c.get("msgs_in", 0)), int(c.get("msgs_out", 0))
    r_in, r_out = rates.update(str(reply.get("proc")), now, m_in, m_out)
    return {"proc": reply.get("proc"), "busy_1s": reply.get("busy_1s", ""), "in_per_s": r_in,
            "out_per_s": r_out, "msgs_in": m_in, "msgs_out": m_out,
            "queued_out": reply.get("queued_out", ""),
            "drops": sum(int(v) for k, v in c.items() if k.startswith("drop_"))}  # fmt: skip


def render(node: str, replies: list[dict[str, Any]], silent: list[str], quiet: list[str],
           rates: Rates, now: float) -> str:  # fmt: skip
    """One table per stage; ``quiet`` are processes with no control socket (rule 1)."""
    by_stage: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
    for r in sorted(replies, key=lambda r: str(r.get("proc"))):
        stage = str(r.get("role") or stage_of(str(r.get("proc"))))
        by_stage.setdefault(stage, []).append(row(r, rates, now))
    out = [f"node {node}  {time.strftime('%H:%M:%S')}  {len(replies)} processes answered"]
    for stage, rows in by_stage.items():
        out.append("")
        out.append(f"[{stage}]")
        if rows:
            out.append(table(rows, COLUMNS))
        for ident in sorted(quiet):
            if stage_of(ident) == stage:
                out.append(f"{ident}: no control socket (see its load_stats)")
        for ident in silent:
            if stage_of(ident) == stage:
                out.append(f"{ident}: no answer")
        if not rows and not any(stage_of(i) == stage for i in (*quiet, *silent)):
            out.append("(none running)")
    return "\n".join(out)


def quiet_processes(run_dir: str) -> list[str]:
    """Running processes with no control socket, found by their other socket files (rule 1)."""
    answering = sockets.live_endpoints(run_dir, "ctl")
    if sockets.list_endpoints(run_dir, "stateplane") and not any(
            k.startswith("stateplane") for k in answering):  # fmt: skip
        return ["stateplane"]
    return []


def main(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    settings = load_or_report(args.conf)
    if settings is None:
        return 2
    run_dir = settings.node.run_dir
    count = 1 if args.once else args.count
    rates = Rates()
    clear = out.isatty() and count != 1
    n = 0
    try:
        while count is None or n < count:
            if n:
                time.sleep(args.interval)  # the refresh period of an interactive view
            try:
                replies, silent = ask(run_dir, "stats", timeout_s=args.timeout)
                quiet = quiet_processes(run_dir)
            except PermissionError as exc:
                print(refused_text(run_dir, exc, "sipline top"), file=sys.stderr)
                return 2
            text = render(settings.node.name, replies, silent, quiet, rates, time.monotonic())
            print((_CLEAR if clear else "") + text, file=out, flush=True)
            n += 1
            if n == 1 and not replies and count == 1:
                return 1
    except KeyboardInterrupt:
        pass
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.add_argument("--count", type=int, help="print this many tables and exit")
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for answers")
