"""Prefix tables: load time, memory and lookup cost for 100 000 and 1 000 000 prefixes.

    python -P bench/prefix.py                       # 100k and 1M, the packed table
    python -P bench/prefix.py --sizes 1000000 --structure dict   # the alternative measured

(``-P``: bench/timers.py would shadow the ``timers`` package.)

A CSV file of N distinct prefixes is written first (seeded: the same file every run):
2 to 10 digits after a first digit of 1-9, half with a leading ``+``, each to one of 20
groups with a priority of 0-2 and a weight of 1, 10, 50 or 100, and one prefix in 20
with a second group at priority 3 (a few thousand distinct rule sets, as a carrier table
has a few gateway lists repeated over many prefixes). Each size then runs in a child process of its own, so its memory is the table's
alone:

- load: ``prefix_csv.load_file`` wall and CPU time (reading, checking every line,
  sorting, packing); on a shared box the CPU time is the figure to compare;
- rss: the child's resident set after the load less before it (``/proc/self/status``
  VmRSS), and its peak (``ru_maxrss``) which includes the parse's transient dictionary;
- lookup: median over 200 batches of 1 000 keys of the CPU time per ``PrefixTable.lookup``
  (validation included). Keys are 11-12 digit numbers, half with ``+``: like Request-URI
  users of a trunk; most match a prefix of 3 to 6 characters.

``--structure dict`` measures the alternative the table was chosen against: a Python dict
of prefix strings probed from the longest length present down (what the docs compare).
The box may be shared: compare figures of one run, and take the medians.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GROUPS = [f"carrier{i}" for i in range(20)]
WEIGHTS = (1, 1, 1, 10, 50, 100)
BATCHES, BATCH = 200, 1000


def write_csv(path: Path, n: int, seed: int = 1) -> None:
    rnd = random.Random(seed)
    seen: set[str] = set()
    with path.open("w") as fh:
        fh.write("prefix,group,priority,weight\n")
        while len(seen) < n:
            digits = str(rnd.randint(1, 9)) + "".join(
                rnd.choice("0123456789") for _ in range(rnd.randint(2, 10))
            )
            p = ("+" if rnd.random() < 0.5 else "") + digits
            if p in seen:
                continue
            seen.add(p)
            g = rnd.sample(GROUPS, 2)
            fh.write(f"{p},{g[0]},{rnd.randint(0, 2)},{rnd.choice(WEIGHTS)}\n")
            if rnd.random() < 0.05:
                fh.write(f"{p},{g[1]},3,1\n")


def keys(n: int, seed: int = 2) -> list[str]:
    rnd = random.Random(seed)
    return [("+" if rnd.random() < 0.5 else "") + str(rnd.randint(10**10, 10**12))
            for _ in range(n)]  # fmt: skip


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class DictTable:
    """The alternative: ``{prefix: rows}`` probed from the longest length present."""

    def __init__(self, path: str) -> None:
        self.d: dict[str, tuple[str, ...]] = {}
        interned: dict[tuple[str, ...], tuple[str, ...]] = {}
        for line in Path(path).read_text().splitlines()[1:]:
            p, rest = line.split(",", 1)
            rows = self.d.get(p, ()) + (rest,)
            self.d[p] = interned.setdefault(rows, rows)
        self.lengths = sorted({len(p) for p in self.d}, reverse=True)

    def lookup(self, key: str) -> tuple[str, ...] | None:
        if len(key) > 32 or not key.lstrip("+").isdigit():
            return None
        for n in self.lengths:
            if n <= len(key):
                v = self.d.get(key[:n])
                if v is not None:
                    return v
        return None


def child(path: str, structure: str) -> dict[str, float]:
    from workers.routing import prefix_csv
    from workers.routing.prefix_route import trim_heap

    gc.collect()
    before = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    if structure == "packed":
        table: object = prefix_csv.load_file(path, "bench", GROUPS, 20_000_000)
        trim_heap()  # as load_tables does in a worker
    else:
        table = DictTable(path)
    load_s, load_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    after = rss_mb()
    lookup = table.lookup  # type: ignore[attr-defined]
    ks = keys(BATCHES * BATCH)
    matched = sum(lookup(k) is not None for k in ks[:BATCH])
    per: list[float] = []
    for b in range(BATCHES):
        batch = ks[b * BATCH : (b + 1) * BATCH]
        t = time.process_time()
        for k in batch:
            lookup(k)
        per.append((time.process_time() - t) / BATCH * 1e6)
    return {
        "prefixes": _n(table),
        "load_s": round(load_s, 2),
        "load_cpu_s": round(load_cpu_s, 2),
        "rss_mb": round(after - before, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "bytes_per_prefix": round((after - before) * 2**20 / max(1, _n(table))),
        "arrays_mb": round(table.nbytes() / 2**20, 1) if structure == "packed" else 0,  # type: ignore[attr-defined]
        "rulesets": len(table.rulesets) if structure == "packed" else 0,  # type: ignore[attr-defined]
        "lookup_us_median": round(statistics.median(per), 2),
        "lookup_us_p90": round(sorted(per)[int(len(per) * 0.9)], 2),
        "matched_share": matched / BATCH,
    }


def _n(table: object) -> int:
    return len(table.d) if isinstance(table, DictTable) else len(table)  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--structure", choices=["packed", "dict"], default="packed")
    ap.add_argument("--json", help="write the results here too")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.structure)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            path = Path(tmp) / f"p{n}.csv"
            write_csv(path, n)
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            out = subprocess.run(
                [sys.executable, "-P", __file__, "--child", str(path), "--structure", args.structure],
                check=True, capture_output=True, text=True, env=env, timeout=600,
            )  # fmt: skip
            r = {"structure": args.structure, "file_mb": round(path.stat().st_size / 2**20, 1),
                 **json.loads(out.stdout)}  # fmt: skip
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
