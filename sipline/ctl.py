"""``sipline ctl``: what a running node's processes say about themselves (conf/control.py).

    sipline ctl stats          per process: busy ratio, counters, transactions, queues (with
                               the oldest queued message's wait; per pipe in --json), and
                               per worker the routing generation and digest it runs
    sipline ctl destinations   every destination of every set: health as the dispatcher sees it
    sipline ctl destinations set SET URI inactive|active
                               the operator's mark, in every worker, until the next restart
                               (a reload keeps it: docs/operations.md)
    sipline ctl reload         re-read the configuration and its tables, check them whole,
                               then every worker takes them as one new generation; a bad
                               file changes nothing and the answer says why (exit 1)
    sipline ctl dialogs        dialog counts per worker and for the node, and profile sizes
    sipline ctl dialogs --list N   and the N oldest live dialogs of each worker
    sipline ctl ratelimit      every [[ratelimit]] pipe per worker: rate, passed, dropped (a
                               shared pipe: the others' count and the participants)
    sipline ctl pike           sources pike blocks, per ingress (docs/protection.md)
    sipline ctl sync           the state plane asks every peer for a whole new snapshot
                               (OpenSIPS dlg_db_sync; docs/stateplane.md)
    sipline ctl failback       hand the virtual addresses this node holds as backup, and
                               their calls, back to the peer (docs/failover.md)

    sipline ctl VIEW --cluster the same of every node: this one and each [stateplane] peers
                               entry (stats, destinations, dialogs, pike, ratelimit; a
                               tcp:// peer over CURVE, docs/monitoring.md "The whole cluster")

``stats`` of the state plane carries its replication: dialogs it publishes and, per peer,
the dialogs it replicates (``--json``; the table shows them as ``replica <peer>`` lines).

A table by default, ``--json`` for one JSON document. Exit status 1 when no process answered,
2 when the run directory cannot be opened: its permissions (the node's user, and ``[node]
run_group``) are the only credential a verb needs, ``failback`` and ``sync`` included.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from typing import Any

from conf.control import ask
from conf.load import ConfigError, config_path, from_dict, load, load_or_report
from conf.settings import Settings

DEST_COLUMNS = ("set", "uri", "state", "fails", "last_status", "last_probe_age_s", "prober")
DIALOG_COLUMNS = ("proc", "active", "early", "processed", "expired", "failed", "cancelled",
                  "refused")  # fmt: skip
_COUNTS = DIALOG_COLUMNS[1:]
LIST_COLUMNS = ("call_id", "state", "proc", "source", "destination", "route", "profiles")
PIKE_COLUMNS = ("src", "proc", "remaining_s", "dropped", "origin")
#: the read-only views a peer node answers (stateplane/clusterctl.py)
CLUSTER_VERBS = frozenset({"stats", "destinations", "dialogs", "pike", "ratelimit"})
RATE_COLUMNS = ("pipe", "proc", "algorithm", "limit_per_s", "allowance", "in_window", "others",
                "participants", "passed", "dropped")  # fmt: skip


def refused_text(run_dir: str, exc: OSError, who: str = "sipline ctl") -> str:
    """Why ``who`` could not reach the node: the run directory's permissions are the only
    credential (docs/security.md, "Local users")."""
    return (f"{who}: cannot open the node's run directory {run_dir} ({exc.strerror}): "
            "only the node's user, and members of [node] run_group, may control it")


def main(args: argparse.Namespace) -> int:
    cluster = getattr(args, "cluster", False)
    settings = load_or_report(args.conf) if cluster else node_settings(args.conf, args.what)
    if settings is None:
        return 2
    listed = getattr(args, "list", 0) if args.what == "dialogs" else 0
    words = getattr(args, "words", None) or []
    if args.what == "reload" or words:
        return _change(settings, args, words)
    if getattr(args, "cluster", False):
        return _cluster(settings, args, listed)
    try:
        replies, silent = ask(settings.node.run_dir, args.what,
                              {"list": listed} if listed else None, timeout_s=args.timeout)
    except PermissionError as exc:
        print(refused_text(settings.node.run_dir, exc), file=sys.stderr)
        return 2
    if not replies:
        print(f"no process of node {settings.node.name!r} answered in {settings.node.run_dir}",
              file=sys.stderr)  # fmt: skip
        return 1
    replies.sort(key=lambda r: str(r.get("proc")))
    out = shape(args.what, replies)
    if args.json:
        print(json.dumps({"node": settings.node.name, args.what: out, "silent": silent}, indent=2))
    else:
        show(args.what, out, replies, listed)
    for ident in silent:
        print(f"{ident}: no answer", file=sys.stderr)
    return 0


def node_settings(cli_path: str | None, what: str) -> Settings | None:
    """The settings, or when the file is refused only its ``[node]`` table: a node runs on
    while its file is being edited, and ``reload`` still asks the workers, so each says (and
    logs) why the file is refused."""
    path = config_path(cli_path)
    try:
        return load(path)
    except ConfigError:
        pass
    try:
        with open(path, "rb") as f:
            node = tomllib.load(f).get("node", {})
        return from_dict({"node": node if isinstance(node, dict) else {}}, path)
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
        lead = "reload refused, nothing changed" if what == "reload" else "configuration error"
        print(f"{lead}: {exc}", file=sys.stderr)
        return None


def _change(settings: Settings, args: argparse.Namespace, words: list[str]) -> int:
    """``reload`` and ``destinations set ...``: verbs that change the node (sipline/reload.py)."""
    if args.what not in ("reload", "destinations") or (args.what == "reload" and words):
        print(f"sipline ctl: {args.what} takes no {' '.join(words)!r}", file=sys.stderr)
        return 2
    from sipline.reload import mark_destination, reload_node

    try:
        if args.what == "reload":
            rc, lines = reload_node(settings.node.run_dir, args.timeout)
        else:
            rc, lines = mark_destination(settings.node.run_dir, words, args.timeout)
    except PermissionError as exc:
        print(refused_text(settings.node.run_dir, exc), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"node": settings.node.name, args.what: lines, "ok": rc == 0}, indent=2))
    else:
        print("\n".join(lines), file=sys.stdout if rc == 0 else sys.stderr)
    return rc


def _cluster(settings: Settings, args: argparse.Namespace, listed: int) -> int:
    """``--cluster``: every node's answer (sipline/cluster.py), one section per node."""
    if args.what not in CLUSTER_VERBS:
        print(f"sipline ctl: {args.what} is not asked of the whole cluster "
              f"(--cluster takes {', '.join(sorted(CLUSTER_VERBS))})", file=sys.stderr)  # fmt: skip
        return 2
    from sipline.cluster import ask_cluster  # the state plane's cross-node codec

    answers = ask_cluster(settings, args.what, {"list": listed} if listed else None, args.timeout)
    doc = []
    for a in answers:
        a.replies.sort(key=lambda r: str(r.get("proc")))
        doc.append({"node": a.node, args.what: shape(args.what, a.replies), "silent": a.silent,
                    "error": a.error})  # fmt: skip
    if args.json:
        print(json.dumps({"node": settings.node.name, "cluster": doc}, indent=2))
    else:
        for a, entry in zip(answers, doc):
            print(f"== node {a.node}" + (f": {a.error}" if a.error else ""))
            if a.replies:
                show(args.what, entry[args.what], a.replies, listed)
            for ident in a.silent:
                print(f"{a.node} {ident}: no answer", file=sys.stderr)
    return 0 if any(a.replies for a in answers) else 1


def shape(what: str, replies: list[dict[str, Any]]) -> Any:
    """The document ``what`` shows, from the processes' replies."""
    if what == "destinations":
        return destinations(replies)
    if what == "dialogs":
        return dialogs(replies)
    if what == "pike":
        return pike(replies)
    if what == "ratelimit":
        return [{**row, "proc": r["proc"]} for r in replies for row in r.get("ratelimit", ())]
    if what == "sync":  # only state planes know the verb; the others' refusals go
        return [{"proc": r["proc"], "peers": r["sync"]} for r in replies if r.get("ok")]
    if what == "failback":
        return [{"proc": r["proc"], "addresses": r["failback"]} for r in replies if r.get("ok")]
    return replies


def show(what: str, out: Any, replies: list[dict[str, Any]], listed: int) -> None:
    """``out`` as the tables of ``what``."""
    if what == "destinations":
        print(table(out, DEST_COLUMNS))
    elif what == "pike":
        print(table(out["blocked"], PIKE_COLUMNS))
        if not out["enabled"]:
            print("pike is not enabled ([pike] enabled = false)")
    elif what == "ratelimit":
        print(table(out, RATE_COLUMNS) if out else "no [[ratelimit]] pipes")
    elif what == "dialogs":
        print(table(out["workers"] + [{"proc": "node", **out["node"]}], DIALOG_COLUMNS))
        for name, size in sorted(out["profiles"].items()):
            print(f"profile {name}: {size}")
        for row in out["workers"]:  # what each worker admits new calls against
            if row["limits"]:
                seen = ", ".join(f"{k} {n}" for k, n in sorted(row["limits"].items()))
                print(f"{row['proc']} counts against limits: {seen}")
        if listed:
            print(table(out["list"], LIST_COLUMNS) if out["list"] else "no live dialogs")
    elif what == "sync":
        for row in out:
            print(f"{row['proc']}: resnapshot asked of {', '.join(row['peers']) or 'no peer'}")
    elif what == "failback":
        for row in out:
            print(f"{row['proc']}: handed back {', '.join(row['addresses']) or 'nothing'}")
    else:
        print(table([_stats_row(r) for r in replies], ("proc", "busy_1s", "msgs_in", "msgs_out",
                                                       "transactions", "queued_out",
                                                       "oldest_ms", "drops", "routing",
                                                       "compiled")))  # fmt: skip
        for r in replies:
            for name, rep in ((r.get("stateplane") or {}).get("replicas") or {}).items():
                print(f"replica {name}: {rep.get('dialogs', 0)} dialogs, seq {rep.get('seq', 0)}")


def destinations(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per destination: the view of the worker that probes it, else the first one."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in replies:
        for d in r.get("destinations", ()):
            key = (d["set"], d["uri"])
            if key not in rows or d.get("probed_here"):
                rows[key] = {**d, "prober": r["proc"] if d.get("probed_here") else ""}
    return [rows[k] for k in sorted(rows)]


def dialogs(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Per worker counts, their sum for the node, and profile sizes summed across workers."""
    rows, node = [], dict.fromkeys(_COUNTS, 0)
    profiles: dict[str, Any] = {}
    for r in replies:
        d = r.get("dialogs")
        if not d:
            continue
        rows.append({"proc": r["proc"], **{k: d.get(k, 0) for k in _COUNTS},
                     "limits": d.get("limits", {})})  # fmt: skip
        for k in _COUNTS:
            node[k] += int(d.get(k, 0))
        for name, size in d.get("profiles", {}).items():
            if isinstance(size, dict):
                merged = profiles.setdefault(name, {})
                for value, n in size.items():
                    merged[value] = merged.get(value, 0) + n
            else:
                profiles[name] = profiles.get(name, 0) + size
    listed = sorted((dict(row, proc=r["proc"]) for r in replies for row in r.get("list", ())),
                    key=lambda row: row["start"])  # fmt: skip
    return {"workers": rows, "node": node, "profiles": profiles, "list": listed}


def pike(replies: list[dict[str, Any]]) -> dict[str, Any]:
    """Every ingress's blocks, one row per (source, ingress), sorted by source; only
    ingresses answer ``pike`` (the others' unknown-command replies are skipped)."""
    rows: list[dict[str, Any]] = []
    enabled = False
    ingresses = []
    for r in replies:
        p = r.get("pike")
        if not r.get("ok") or not isinstance(p, dict):
            continue
        ingresses.append(r["proc"])
        enabled = enabled or bool(p.get("enabled"))
        rows += [{**b, "proc": r["proc"]} for b in p.get("blocked", ())]
    rows.sort(key=lambda b: (str(b.get("src")), str(b["proc"])))
    return {"enabled": enabled, "ingresses": ingresses, "blocked": rows}


def _stats_row(r: dict[str, Any]) -> dict[str, Any]:
    c = r.get("counters", {})
    drops = sum(v for k, v in c.items() if k.startswith("drop_"))
    return {"proc": r.get("proc"), "busy_1s": r.get("busy_1s"), "msgs_in": c.get("msgs_in", 0),
            "msgs_out": c.get("msgs_out", 0), "transactions": r.get("transactions", ""),
            "queued_out": r.get("queued_out", ""), "oldest_ms": r.get("queued_oldest_ms", ""),
            "drops": drops, "routing": _generation(r.get("routing")),
            "compiled": r.get("compiled", "")}  # fmt: skip


def _generation(routing: Any) -> str:
    """A worker's routing generation and digest (docs/operations.md "Reload without restart")."""
    if not isinstance(routing, dict):
        return ""
    return f"gen {routing.get('generation')} {routing.get('digest')}"


def table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
