"""``sipline ctl reload`` and ``sipline ctl destinations set``: the operator's side of
``workers/reloading.py`` (docs/operations.md, "Reload without restart").

``reload`` runs two phases over the node's control sockets (``workers/routing/reload.py``
rule 5): every worker prepares (reads and checks everything, answers a digest of the bytes
it read); when one refuses, does not answer, or read other bytes, every worker drops its
candidate and nothing changes; else all commit as one new generation. Only workers answer
these verbs: the other processes' "unknown command" replies are left out.
"""

from __future__ import annotations

import contextlib
from typing import Any

from conf.control import ask

#: a worker reading a big prefix table takes seconds (docs/prefix_tables.md): prepare may take
#: this long at least, whatever ``--timeout`` says
PREPARE_TIMEOUT_S = 30.0


def _is_worker(ident: str) -> bool:
    """``worker.1-123``, or ``node.worker.1-123`` on a TCP hop (conf/bustcp.py)."""
    return "worker" in ident.rpartition("-")[0]


def _workers(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((r for r in replies if "reload" in r), key=lambda r: str(r.get("proc")))


def reload_node(run_dir: str, timeout_s: float) -> tuple[int, list[str]]:
    """(exit status, lines to print): 0 when every worker took the new generation."""
    replies, silent = ask(run_dir, "reload_prepare", timeout_s=max(timeout_s, PREPARE_TIMEOUT_S))
    silent = [s for s in silent if _is_worker(s)]
    workers = _workers(replies)
    refused = [r for r in workers if r["reload"] != "prepared"]
    digests = {r.get("digest") for r in workers} - {None}
    why = [f"{r['proc']}: refused: {r.get('error')}" for r in refused]
    why += [f"{ident}: no answer" for ident in silent]
    if not workers and not silent:
        return 1, ["no worker answered: is the node running?"]
    if len(digests) > 1:
        why.append("workers read different files (" + ", ".join(
            f"{r['proc']} {r.get('digest')}" for r in workers if r.get("digest")) + ")")  # fmt: skip
    if why:
        ask(run_dir, "reload_abort", timeout_s=timeout_s)
        return 1, ["reload refused, nothing changed:", *why]
    generation = 1 + max(int(r.get("generation", 0)) for r in workers)
    replies, silent = ask(run_dir, "reload_commit",
                          {"digest": digests.pop(), "generation": generation}, timeout_s)  # fmt: skip
    done = [r for r in _workers(replies) if r["reload"] == "committed"]
    lines = [f"{r['proc']}: generation {r['generation']} (digest {r['digest']}): "
             f"{r['routes']} routes, {r['destination_sets']} destination sets, "
             f"{r['trusted']} trusted, {r['prefix_tables']} prefix tables" for r in done]  # fmt: skip
    late = [f"{r['proc']}: not committed: {r.get('error')}" for r in _workers(replies)
            if r["reload"] != "committed"]  # fmt: skip
    late += [f"{ident}: no answer to commit (see ctl stats)" for ident in silent
             if _is_worker(ident)]  # fmt: skip
    return (1 if late or not done else 0), lines + late


def mark_destination(run_dir: str, words: list[str], timeout_s: float) -> tuple[int, list[str]]:
    """``destinations set SET URI inactive|active``: (exit status, lines to print)."""
    if len(words) != 4 or words[0] != "set" or words[3] not in ("inactive", "active"):
        return 2, ["usage: sipline ctl destinations set SET URI inactive|active"]
    # workers.routing.marks: importing ``workers`` loads the compiled build (conf/compiled.py),
    # which every other ``sipline ctl`` verb would pay for at start-up
    from workers.routing import marks

    _, name, uri, state = words
    # kept first, then asked: a worker not yet listed reads it at start (marks.py rule 1)
    inactive, kept = state == "inactive", ""
    try:
        changed = marks.update(run_dir, (name, uri), inactive)
    except marks.MarksError as exc:
        changed, kept = False, f"not kept for workers started later: {exc}"
    replies, silent = ask(run_dir, "destination_state", {"set": name, "uri": uri, "state": state},
                          timeout_s)  # fmt: skip
    rows = sorted((r for r in replies if r.get("ok")), key=lambda r: str(r["proc"]))
    if changed and inactive and not any("state" in r for r in rows):
        # no worker has it (a typo, or the node is down): keep no mark of it; an ``active``
        # always stays removed, so a mark of a destination a reload removed can be cleared
        with contextlib.suppress(marks.MarksError):
            marks.update(run_dir, (name, uri), False)
    lines = [f"{r['proc']}: {r['set']} {r['uri']} is {r['state']}" if "state" in r
             else f"{r['proc']}: {r.get('error')}" for r in rows]  # fmt: skip
    lines += [f"{ident}: no answer" for ident in silent if _is_worker(ident)]
    lines += [kept] if kept else []
    ok = rows and all("state" in r for r in rows) and not kept and not any(
        _is_worker(s) for s in silent)  # fmt: skip
    return (0 if ok else 1), lines
