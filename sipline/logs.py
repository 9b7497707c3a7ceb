"""``sipline logs``: filter and summarise a node's JSON log lines for an operator.

Rules:
1. Input is what ``honcho start`` prints (``HH:MM:SS proc.N | {json}``, possibly coloured) or
   raw JSON lines (a process's own stdout, a log file), from files or stdin.
2. A line that is not a JSON object (honcho's ``system | ... started``, a traceback, a cut
   line) is skipped, or shown as it is with ``--all``. No line can make the command fail.
3. Filters combine with AND; several ``--event`` globs combine with OR.
4. ``--follow`` keeps reading files as they grow, like ``tail -f``; ``--summary`` prints counts
   per event and per process and each process's last ``load_stats`` when the input ends.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import IO, Any

#: structlog's level names, lowest first; an unknown level ranks as info
LEVEL_ORDER = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: fields every line carries, or that the compact view shows in its own columns
_HIDDEN = frozenset(("timestamp", "proc", "level", "event", "pid", "node"))
#: a value longer than this is cut in the compact view (``--json`` keeps it whole)
MAX_VALUE_CHARS = 60
#: ``--follow`` polls a file this often when it has nothing new (a CLI reading a file: a
#: bounded sleep is simpler than inotify and costs nothing measurable)
FOLLOW_POLL_S = 0.2

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HONCHO = re.compile(r"^\d\d:\d\d:\d\d\s+(?P<proc>\S+)\s*\|\s?(?P<rest>.*)$")


@dataclass(frozen=True, slots=True)
class Line:
    """One input line: its event if it held a JSON object, and the honcho process name."""

    text: str
    event: dict[str, Any] | None
    proc: str | None


def parse_line(raw: str) -> Line:
    """Split a honcho prefix off and decode the JSON object; never raises (rule 2)."""
    text = _ANSI.sub("", raw).rstrip("\r\n")
    proc: str | None = None
    rest = text
    m = _HONCHO.match(text)
    if m:
        proc, rest = m.group("proc"), m.group("rest")
    rest = rest.strip()
    if not rest.startswith("{"):
        return Line(text, None, proc)
    try:
        ev = json.loads(rest)
    except ValueError:  # a cut or garbled line
        return Line(text, None, proc)
    if not isinstance(ev, dict):
        return Line(text, None, proc)
    if proc is not None:
        ev.setdefault("proc", proc)
    return Line(text, ev, proc)


@dataclass(frozen=True, slots=True)
class Filter:
    """What ``--event``, ``--proc``, ``--call-id`` and ``--level`` keep."""

    events: tuple[str, ...] = ()
    proc: str | None = None
    call_id: str | None = None
    level: str | None = None

    def keeps(self, ev: dict[str, Any]) -> bool:
        name = str(ev.get("event", ""))
        if self.events and not any(fnmatchcase(name, g) for g in self.events):
            return False
        if self.proc is not None and not fnmatchcase(str(ev.get("proc", "")), self.proc):
            return False
        if self.call_id is not None and str(ev.get("call_id", "")) != self.call_id:
            return False
        return self.level is None or _rank(ev.get("level")) >= _rank(self.level)


def _rank(level: object) -> int:
    return LEVEL_ORDER.get(str(level).lower(), LEVEL_ORDER["info"])


def render(ev: dict[str, Any]) -> str:
    """``time proc level event k=v ...``, long values cut to ``MAX_VALUE_CHARS``."""
    ts = str(ev.get("timestamp", ""))
    clock = ts[11:23] if len(ts) >= 19 and ts[10] == "T" else ts
    fields = " ".join(f"{k}={_short(v)}" for k, v in ev.items() if k not in _HIDDEN)
    head = f"{clock:<12} {ev.get('proc', '-')!s:<12} {ev.get('level', '-')!s:<7} "
    return (head + str(ev.get("event", "-")) + (" " + fields if fields else "")).rstrip()


def _short(v: object) -> str:
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    if isinstance(v, str) and (not s or " " in s or "=" in s):
        s = json.dumps(s)
    return s if len(s) <= MAX_VALUE_CHARS else s[: MAX_VALUE_CHARS - 1] + "…"


@dataclass
class Summary:
    """Counts per event and per process, and each process's last ``load_stats``."""

    events: Counter[str] = field(default_factory=Counter)
    procs: Counter[str] = field(default_factory=Counter)
    load: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, ev: dict[str, Any]) -> None:
        name, proc = str(ev.get("event", "-")), str(ev.get("proc", "-"))
        self.events[name] += 1
        self.procs[proc] += 1
        if name == "load_stats":
            self.load[proc] = ev

    def lines(self) -> list[str]:
        out = ["events:"]
        out += [f"  {n:>8}  {name}" for name, n in sorted(self.events.items(), key=_by_count)]
        out.append("processes:")
        out += [f"  {n:>8}  {proc}" for proc, n in sorted(self.procs.items(), key=_by_count)]
        if self.load:
            out.append("last load_stats:")
            out += ["  " + render(self.load[p]) for p in sorted(self.load)]
        return out

    def as_json(self) -> dict[str, Any]:
        return {"events": dict(self.events), "procs": dict(self.procs), "load_stats": self.load}


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def read_lines(files: list[IO[str]], follow: bool, deadline: float | None) -> Iterator[str]:
    """Every line of every file in turn; with ``follow``, then what is appended to them,
    until ``deadline`` (monotonic) if one is given. A partial last line waits for its end."""
    for f in files:
        yield from _complete_lines(f, follow)
    if not follow:
        return
    pending = {id(f): "" for f in files}
    while deadline is None or time.monotonic() < deadline:
        got = False
        for f in files:
            chunk = f.readline()
            if not chunk:
                continue
            got = True
            chunk = pending[id(f)] + chunk
            if chunk.endswith("\n"):
                pending[id(f)] = ""
                yield chunk
            else:
                pending[id(f)] = chunk
        if not got:
            time.sleep(FOLLOW_POLL_S)  # bounded poll of a growing file (rule 4)


def _complete_lines(f: IO[str], follow: bool) -> Iterator[str]:
    """Lines up to the end of ``f``; when following, a last line without its newline is
    read again later rather than taken cut (seek back to its start)."""
    while True:
        pos = f.tell() if follow and f.seekable() else None
        line = f.readline()
        if not line:
            return
        if follow and pos is not None and not line.endswith("\n"):
            f.seek(pos)
            return
        yield line


@dataclass
class Options:
    filter: Filter
    as_json: bool = False
    show_all: bool = False
    summary: bool = False
    max_events: int | None = None


def run(lines: Iterable[str], opts: Options, out: IO[str], summary: Summary) -> None:
    """Print what ``opts`` keeps of ``lines``, counting it in ``summary``."""
    shown = 0
    for raw in lines:
        line = parse_line(raw)
        if line.event is None:
            if opts.show_all and not opts.summary and line.text:
                print(line.text, file=out, flush=True)
            continue
        if not opts.filter.keeps(line.event):
            continue
        summary.add(line.event)
        if not opts.summary:
            text = json.dumps(line.event, default=str) if opts.as_json else render(line.event)
            print(text, file=out, flush=True)
        shown += 1
        if opts.max_events is not None and shown >= opts.max_events:
            break


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="log files (default: stdin)")
    p.add_argument("--event", action="append", default=[], help="event name or glob (repeatable)")
    p.add_argument("--proc", help="process name or glob, e.g. 'worker*'")
    p.add_argument("--call-id", help="only events of this Call-ID")
    p.add_argument("--level", choices=sorted(LEVEL_ORDER, key=LEVEL_ORDER.__getitem__),
                   help="minimum level")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print kept lines as JSON")
    p.add_argument("--all", action="store_true", help="also print lines that are not JSON")
    p.add_argument("-f", "--follow", action="store_true", help="keep reading files as they grow")
    p.add_argument("--summary", action="store_true",
                   help="counts per event and process, and the last load_stats of each")  # fmt: skip
    p.add_argument("--max-events", type=int, help="stop after this many kept events")
    p.add_argument("--timeout", type=float, help="with --follow: stop after this many seconds")


def main(args: argparse.Namespace) -> int:
    opts = Options(Filter(tuple(args.event), args.proc, args.call_id, args.level), args.json,
                   args.all, args.summary, args.max_events)  # fmt: skip
    files: list[IO[str]] = []
    try:
        for name in args.files:
            files.append(Path(name).open(encoding="utf-8", errors="replace"))  # noqa: SIM115
    except OSError as exc:
        print(f"sipline logs: {exc}", file=sys.stderr)
        for f in files:
            f.close()
        return 2
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    summary = Summary()
    try:
        source = read_lines(files, args.follow, deadline) if files else sys.stdin
        run(source, opts, sys.stdout, summary)
    except KeyboardInterrupt:  # the usual end of --follow
        pass
    finally:
        for f in files:
            f.close()
    if args.summary:
        if args.json:
            print(json.dumps(summary.as_json(), default=str))
        else:
            print("\n".join(summary.lines()))
    return 0
