"""``sipline metrics``: a Prometheus ``/metrics`` endpoint for a running node.

Rules:
1. Nothing is cached: every scrape asks every process ``stats`` over the control channel
   (conf/control.py) through a custom collector, so a scrape shows the live node (a process
   that stopped is gone from the next scrape, not frozen at its last values).
2. Labels: ``node`` (``[node] name``), ``stage`` (the role: ``worker`` from ``worker.1``),
   ``proc`` (honcho's name, ``worker.1``; no pid, so a restart does not mint a new series).
3. Every process of the node answers ``stats`` (ingress, worker, stateplane, timers); one
   that does not answer within the scrape's deadline is counted in ``sipline_processes``.
4. It serves on loopback by default, and is not in the Procfile: honcho stops the whole node
   when one of its processes exits, and an exporter is not worth that.
5. ``--cluster``: every node of the cluster in one scrape, the ``node`` label the name this
   node's configuration gives each (``sipline ctl --cluster``, docs/monitoring.md), plus
   ``sipline_node_reached`` per node.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from conf.control import ask
from conf.load import load_or_report
from conf.settings import Settings

Ask = Callable[[str, str], tuple[list[dict[str, Any]], list[str]]]
LABELS = ("node", "stage", "proc")
#: dialog counters that are outcomes (``sipline_dialogs_ended_total{outcome=...}``)
DIALOG_OUTCOMES = ("processed", "expired", "failed", "cancelled", "refused")
#: a scrape waits this long for answers; under Prometheus's default 10 s scrape timeout
ASK_TIMEOUT_S = 1.0


def proc_label(ident: str) -> str:
    """``worker.1`` from the control ident ``worker.1-4242`` (rule 2)."""
    head, _, tail = ident.rpartition("-")
    return head if head and tail.isdigit() else ident


def stage_label(proc: str) -> str:
    """``worker`` from ``worker.1``, or ``edge.worker.1`` on a host of the TCP hop."""
    parts = proc.split(".")
    return next((p for p in parts if p in ("ingress", "worker", "stateplane", "timers")), parts[0])


class NodeCollector(Collector):
    """Builds every metric family from one round of ``stats`` answers (rule 1)."""

    def __init__(self, run_dir: str, node: str, ask_fn: Ask | None = None) -> None:
        self.run_dir = run_dir
        self.node = node
        self._ask: Ask = ask_fn or (lambda d, c: ask(d, c, timeout_s=ASK_TIMEOUT_S))

    def collect(self) -> Iterator[Metric]:
        replies, silent = self._ask(self.run_dir, "stats")
        fam = _Families()
        for r in replies:
            if r.get("ok", True):
                fam.add(self.node, r)
        yield from fam.all()
        up = GaugeMetricFamily("sipline_processes", "Processes of the node by answer to stats",
                               labels=["node", "answered"])  # fmt: skip
        up.add_metric([self.node, "yes"], len(replies))
        up.add_metric([self.node, "no"], len(silent))
        yield up


class ClusterCollector(Collector):
    """``--cluster`` (rule 5): one round of ``stats`` asked of every node (sipline/cluster.py),
    each node's processes labelled with the name our configuration gives that node."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        from sipline.cluster import ask_cluster  # zmq CURVE only when asked

        answers = ask_cluster(self.settings, "stats", timeout_s=ASK_TIMEOUT_S)
        fam = _Families()
        for a in answers:
            for r in a.replies:
                if r.get("ok", True):
                    fam.add(a.node, r)
        yield from fam.all()
        up = GaugeMetricFamily("sipline_processes", "Processes of the node by answer to stats",
                               labels=["node", "answered"])  # fmt: skip
        reached = GaugeMetricFamily("sipline_node_reached", "1 when the node answered ctl stats",
                                    labels=["node"])  # fmt: skip
        for a in answers:
            up.add_metric([a.node, "yes"], len(a.replies))
            up.add_metric([a.node, "no"], len(a.silent))
            reached.add_metric([a.node], 0.0 if a.error else 1.0)
        yield up
        yield reached


class _Families:
    """The metric families of one scrape, filled reply by reply."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.busy = g("sipline_busy_ratio", "Share of the last second spent working (1 s)",
                      labels=LABELS)  # fmt: skip
        self.messages = c("sipline_messages", "Messages received (in) and sent (out)",
                          labels=[*LABELS, "direction"])  # fmt: skip
        self.drops = c("sipline_drops", "Messages dropped, by reason", labels=[*LABELS, "reason"])
        self.rejected = c("sipline_rejected", "Input refused (malformed messages, TCP connections "
                          "closed or refused), by reason", labels=[*LABELS, "reason"])  # fmt: skip
        self.queued = g("sipline_queued_messages", "Messages queued toward the next stage",
                        labels=LABELS)  # fmt: skip
        self.txns = g("sipline_transactions", "Live transactions (stateful workers)",
                      labels=LABELS)  # fmt: skip
        self.txn_events = c("sipline_transaction_events", "Transaction layer counters",
                            labels=[*LABELS, "kind"])  # fmt: skip
        self.dialogs = g("sipline_dialogs", "Dialogs held now", labels=[*LABELS, "state"])
        # not ``sipline_dialogs_total``: in OpenMetrics that counter's family is
        # ``sipline_dialogs``, the gauge's name, and a scrape would fail on the clash
        self.outcomes = c("sipline_dialogs_ended", "Dialogs ended, by outcome",
                          labels=[*LABELS, "outcome"])  # fmt: skip
        self.timers = g("sipline_timers_armed", "Long timers a worker has armed", labels=LABELS)
        self.routing = g("sipline_routing_generation", "Routing generation a worker runs "
                         "(ctl reload), labelled by the digest of its files",
                         labels=[*LABELS, "digest"])  # fmt: skip
        hop = [*LABELS, "peer"]
        self.hop_queued = g("sipline_hop_queued_messages",
                            "Messages in the backlog of the pipe to one peer", labels=hop)
        self.hop_oldest = g("sipline_hop_oldest_queued_seconds",
                            "Wait of the oldest message in the backlog of the pipe to one peer",
                            labels=hop)
        self.hop_sent = c("sipline_hop_messages", "Messages sent on the pipe to one peer",
                          labels=hop)  # fmt: skip

    def add(self, node: str, r: dict[str, Any]) -> None:
        proc = proc_label(str(r.get("proc", "")))
        lab = [node, str(r.get("role") or stage_label(proc)), proc]
        counters = r.get("counters") or {}
        self.busy.add_metric(lab, float(r.get("busy_1s") or 0.0))
        for direction in ("in", "out"):
            self.messages.add_metric([*lab, direction], float(counters.get(f"msgs_{direction}", 0)))
        for k, v in sorted(counters.items()):
            if k.startswith("drop_"):
                self.drops.add_metric([*lab, k.removeprefix("drop_")], float(v))
        for k, v in sorted((r.get("rejected") or {}).items()):
            self.rejected.add_metric([*lab, k], float(v))
        if "queued_out" in r:
            self.queued.add_metric(lab, float(r["queued_out"]))
        if "transactions" in r:
            self.txns.add_metric(lab, float(r["transactions"]))
        for k, v in sorted((r.get("txn") or {}).items()):
            if isinstance(v, int | float):
                self.txn_events.add_metric([*lab, k], float(v))
        if isinstance(g := r.get("routing"), dict) and isinstance(g.get("generation"), int):
            self.routing.add_metric([*lab, str(g.get("digest", ""))], float(g["generation"]))
        if isinstance(t := r.get("timers"), dict) and "armed" in t:
            self.timers.add_metric(lab, float(t["armed"]))
        for peer, h in sorted((r.get("hops") or {}).items()):
            if isinstance(h, dict):
                hl = [*lab, proc_label(str(peer))]
                self.hop_queued.add_metric(hl, float(h.get("queued", 0)))
                self.hop_oldest.add_metric(hl, float(h.get("oldest_ms", 0)) / 1000)
                self.hop_sent.add_metric(hl, float(h.get("sent", 0)))
        if isinstance(d := r.get("dialogs"), dict):
            for state in ("active", "early"):
                self.dialogs.add_metric([*lab, state], float(d.get(state, 0)))
            for outcome in DIALOG_OUTCOMES:
                if outcome in d:
                    self.outcomes.add_metric([*lab, outcome], float(d[outcome]))

    def all(self) -> Iterator[Metric]:
        yield from (self.busy, self.messages, self.drops, self.rejected, self.queued, self.txns,
                    self.txn_events, self.dialogs, self.outcomes, self.timers, self.routing,
                    self.hop_queued, self.hop_oldest, self.hop_sent)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    settings = load_or_report(args.conf)
    if settings is None:
        return 2
    registry = CollectorRegistry(auto_describe=False)
    if getattr(args, "cluster", False):
        registry.register(ClusterCollector(settings))
    else:
        registry.register(NodeCollector(settings.node.run_dir, settings.node.name))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server, thread = start_http_server(args.port, args.address, registry)
    except OSError as exc:
        print(f"sipline metrics: cannot listen on {args.address}:{args.port}: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"sipline metrics: http://{args.address}:{server.server_port}/metrics "
          f"(node {settings.node.name!r}, {settings.node.run_dir})", flush=True)  # fmt: skip
    stop.wait()
    server.shutdown()
    server.server_close()
    thread.join(5)
    return 0
