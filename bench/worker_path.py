"""CPU per message on a worker's path, in process, no sockets: sipp calls through ``_on_batch``.

    python -P bench/worker_path.py                         # stateless, 2 000 calls, min of 5
    python -P bench/worker_path.py --mode stateful         # + transactions, dialogs, CDR file
    python -P bench/worker_path.py --mode stateful --profile   # + time per stage (cProfile)
    python -P bench/worker_path.py --mode stateful --sample 3  # + time per stage (sampled)
    python -P bench/worker_path.py --routes 10             # 10 routing rules with header edits
    python -P bench/worker_path.py --prefixes 100000       # through a 100 000-prefix table

(``-P``: bench/timers.py would shadow the ``timers`` package.)

A real ``workers.service.Worker`` (as in bench/forged.py: its own run directory, no ingress,
no timer service) takes a sipp call's messages in batches of ``--batch`` calls, as
``IngressBus`` would hand them over: the UAC's INVITEs, then the UAS's 180s and 200s built
from the INVITEs the worker forwarded, the UAC's ACKs and BYEs built from the 200s it
relayed (Route from Record-Route, Request-URI from Contact), the UAS's 200s to the BYEs. What
the worker sends is captured in place of its pipes. CPU is ``time.process_time`` around the
``_on_batch`` calls only (building the peers' messages is not counted), divided by the
messages handed in, the minimum over ``--repeats`` runs of fresh calls: a noisy box only
adds time, so the minimum is the figure to compare.

``--profile`` runs the same calls once more under cProfile and splits the profiled time by
the module each function lives in (``STAGES``), scaled to the unprofiled figure: the
per-stage table of docs/benchmarks.md. cProfile weighs small calls more than large ones, so
read the split as a guide and the total as the measurement. ``--sample N`` splits it from
CPU-time samples instead (``Sampler``: SIGPROF every 0.5 ms of CPU over N more runs), which
costs nothing per call and so does not favour the few large calls; that is the split the
per-stage table of docs/benchmarks.md gives.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import random
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Self

import uvloop
import zmq

from conf import logging as logs
from conf import process
from conf.load import load
from conf.settings import HeaderEdit, HeaderMatch, PrefixTable, Route, Settings, Trusted
from workers.service import Worker

INGRESS = "ingress.1-100"
UAC = ("127.0.0.1", 5063)
UAS = ("127.0.0.1", 5080)

INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5063;branch=z9hG4bK-{r}-{i}-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5063>;tag={r}SIPpTag00{i}\r\n"
    "To: service <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: {i}-{r}@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5063\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length:   129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
SDP = INVITE[INVITE.index("\r\n\r\n") + 4 :].encode()

#: module path fragment -> stage; the first that matches a function's file wins
STAGES: list[tuple[str, str]] = [
    ("ingress/sip/", "worker parse"),
    ("workers/txn/", "transaction"),
    ("workers/transactions", "transaction"),
    ("workers/stateful", "transaction"),
    ("workers/timerc", "transaction"),
    ("workers/proxied", "transaction"),
    ("workers/coreevents", "transaction"),
    ("workers/dialogs/cdr", "CDR"),
    ("workers/dialog", "dialog"),
    ("dialogstate/", "dialog"),
    ("json/", "CDR"),
    ("structlog", "log"),
    ("logging/", "log"),
    ("conf/logs", "log"),
    ("conf/logging", "log"),
    ("workers/proxy", "routing"),
    ("workers/routing", "routing"),
    ("workers/listeners", "routing"),
    ("workers/refusals", "routing"),
    ("workers/conntag", "routing"),
    ("workers/ratelimit", "routing"),
    ("hashlib", "routing"),
    ("workers/service", "worker loop"),
    ("conf/loadstats", "worker loop"),
]


def _lines(raw: bytes, names: tuple[bytes, ...]) -> list[bytes]:
    """The header lines of ``raw`` whose lower-cased name is in ``names``, in order."""
    head = raw[: raw.index(b"\r\n\r\n")].split(b"\r\n")[1:]
    return [ln for ln in head if ln.split(b":", 1)[0].strip().lower() in names]


def _value(line: bytes) -> bytes:
    return line.split(b":", 1)[1].strip()


def uas_responses(fwd: bytes, tag: str) -> list[bytes]:
    """The UAS's answers to a forwarded request: 180 + 200 (with SDP) to an INVITE, else 200."""
    kept = _lines(fwd, (b"via", b"record-route", b"from", b"call-id", b"cseq"))
    to = _lines(fwd, (b"to",))[0]
    if b";tag=" not in to:
        to += f";tag={tag}".encode()
    head = b"\r\n".join([*kept, to, b"Contact: <sip:127.0.0.1:5080;transport=UDP>"])
    if fwd.startswith(b"INVITE "):
        return [
            b"SIP/2.0 180 Ringing\r\n" + head + b"\r\nContent-Length: 0\r\n\r\n",
            b"SIP/2.0 200 OK\r\n" + head + b"\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP,
        ]
    return [b"SIP/2.0 200 OK\r\n" + head + b"\r\nContent-Length: 0\r\n\r\n"]


def uac_request(ok: bytes, method: str, cseq: int, branch: str) -> bytes:
    """The UAC's ACK or BYE in the dialog a relayed 200 set up (sipp's ``[routes]``)."""
    rr = [v for ln in _lines(ok, (b"record-route",)) for v in _value(ln).split(b",")]
    contact = _value(_lines(ok, (b"contact",))[0])
    target = contact[contact.index(b"<") + 1 : contact.index(b">")]
    lines = [f"{method} ".encode() + target + b" SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:5063;branch={branch}".encode()]  # fmt: skip
    lines += [b"Route: " + v.strip() for v in reversed(rr)]
    lines += _lines(ok, (b"from", b"to", b"call-id"))
    lines += [f"CSeq: {cseq} {method}".encode(), b"Contact: sip:sipp@127.0.0.1:5063",
              b"Max-Forwards: 70", b"Subject: Performance Test", b"Content-Length: 0", b"", b""]  # fmt: skip
    return b"\r\n".join(lines)


class Driver:
    """Feeds calls to a worker and plays both sipps from what it sends."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.sent: list[tuple[str, list[Any], bytes]] = []
        self.cpu = 0.0
        #: the least CPU per message seen for each step of a call (a batch of INVITEs, of
        #: 180/200s ...): a short batch that no other process interrupted
        self.best: dict[str, float] = {}
        self.msgs = 0
        #: profiles the worker's handling only, not the peers' messages built here
        self.prof: cProfile.Profile | None = None
        self.sampler: Sampler | None = None
        worker.bus.send = self._capture  # type: ignore[method-assign]

    def _capture(self, ingress: str, meta: list[Any], data: bytes) -> bool:
        self.sent.append((ingress, meta, data))
        return True

    def feed(self, step: str, src: tuple[str, int], payloads: list[bytes]) -> list[bytes]:
        """Hand ``payloads`` to the worker as one batch from ``src``; returns what it sent."""
        self.sent.clear()
        meta: list[Any] = ["udp", src[0], src[1], 0, "127.0.0.1", 5060, time.monotonic()]
        metas = [meta] * len(payloads)
        if self.prof is not None:
            self.prof.enable()
        if self.sampler is not None:
            self.sampler.active = True
        t0 = time.process_time()
        self.worker._on_batch(INGRESS, metas, payloads)
        took = time.process_time() - t0
        if self.sampler is not None:
            self.sampler.active = False
        self.cpu += took
        per_msg = took / max(1, len(payloads))
        self.best[step] = min(self.best.get(step, per_msg), per_msg)
        if self.prof is not None:
            self.prof.disable()
        self.msgs += len(payloads)
        return [data for _, _, data in self.sent]

    def calls(self, run: str, first: int, count: int) -> None:
        """``count`` calls, numbered from ``first``, all six messages of each one batch at a
        time (every call's INVITE, then every 180/200, ...), as sipp at a steady rate."""
        ids = range(first, first + count)
        invites = [INVITE.format(r=run, i=i).encode() for i in ids]
        fwd = _requests(self.feed("invite", UAC, invites), b"INVITE")
        answers = [r for i, f in zip(ids, fwd) for r in uas_responses(f, f"{run}UAS{i}")]
        relayed = [m for m in self.feed("180+200", UAS, answers) if m.startswith(b"SIP/2.0 200")]
        acks = [uac_request(ok, "ACK", 1, f"z9hG4bK-{run}-{i}-5") for i, ok in zip(ids, relayed)]
        self.feed("ack", UAC, acks)
        byes = [uac_request(ok, "BYE", 2, f"z9hG4bK-{run}-{i}-7") for i, ok in zip(ids, relayed)]
        fwd_byes = _requests(self.feed("bye", UAC, byes), b"BYE")
        self.feed(
            "bye 200",
            UAS,
            [r for i, f in zip(ids, fwd_byes) for r in uas_responses(f, f"{run}UAS{i}")],
        )
        if len(relayed) != count or len(fwd_byes) != count:
            raise SystemExit(f"calls did not complete: {len(relayed)} 200s, {len(fwd_byes)} BYEs "
                             f"of {count}; counters {dict(self.worker.meter.counters)}")  # fmt: skip


def _requests(sent: list[bytes], method: bytes) -> list[bytes]:
    return [m for m in sent if m.startswith(method + b" ")]


def run_calls(worker: Worker, run: str, calls: int, batch: int,
              prof: cProfile.Profile | None = None, sampler: Sampler | None = None,
              ) -> tuple[float, dict[str, float]]:  # fmt: skip
    """µs of worker CPU per message over ``calls`` fresh calls, and the least µs per message
    of each step of a call over its batches."""
    d = Driver(worker)
    d.prof = prof
    d.sampler = sampler
    for first in range(0, calls, batch):
        d.calls(run, first, min(batch, calls - first))
    worker.stats(1.0)  # flushes the CDR file, as the worker's stats timer does
    return d.cpu / d.msgs * 1e6, {k: v * 1e6 for k, v in d.best.items()}


#: messages of each step in one call
PER_CALL = {"invite": 1, "180+200": 2, "ack": 1, "bye": 1, "bye 200": 1}


#: functions whose stage is not their module's: the CDR is built in dialogstate/msgs.py
FUNCTION_STAGES = {"make_cdr": "CDR", "iso": "CDR", "iso_datetime": "CDR"}


def stage_of(filename: str, function: str = "") -> str:
    if function in FUNCTION_STAGES and "dialogstate/msgs" in filename:
        return FUNCTION_STAGES[function]
    for frag, stage in STAGES:
        if frag in filename:
            return stage
    return "other"


class Sampler:
    """CPU-time sampling (``ITIMER_PROF``, every ``interval`` s of this process's CPU): each
    sample goes to the stage of the innermost frame whose module has one (``STAGES``), so a
    built-in or a dataclass ``__init__`` counts for its caller. Unlike cProfile it adds no
    cost per call, so many small calls (the parse) are not weighed more than few large ones;
    only samples taken inside ``_on_batch`` (``active``) count."""

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.active = False
        self.counts: dict[str, int] = {}

    def _sample(self, _signum: int, frame: Any) -> None:
        if not self.active:
            return
        stage = "other"
        f = frame
        while f is not None:
            code = f.f_code
            # json/ serves both the CDR file and the log line: its caller says which
            found = "other" if "json/" in code.co_filename else stage_of(code.co_filename,
                                                                          code.co_name)  # fmt: skip
            if found != "other":
                stage = found
                break
            if code.co_name == "_on_batch":
                stage = "worker loop"
                break
            f = f.f_back
        self.counts[stage] = self.counts.get(stage, 0) + 1

    def __enter__(self) -> Self:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def shares(self) -> dict[str, float]:
        total = sum(self.counts.values()) or 1
        return {k: v / total for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1])}


def profile(prof: cProfile.Profile) -> dict[str, float]:
    """Share of profiled time (tottime) per stage; a built-in's time (``bytes.split``,
    ``json.dumps``' C encoder) goes to the stages of its callers, as they called it."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    for (filename, _, name), (_, _, tottime, _, callers) in stats.items():
        if filename != "~":
            key = stage_of(filename, name)
            out[key] = out.get(key, 0.0) + tottime
            continue
        for (cfile, _, cname), (_, _, ctt, _) in callers.items():
            key = stage_of(cfile, cname)
            out[key] = out.get(key, 0.0) + ctt
    total = sum(out.values()) or 1.0
    return {k: v / total for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def rules(settings: Settings, count: int) -> Settings:
    """``count`` rules in front of the shipped route (docs/routing.md), as a trunk would have:
    ``count - 3`` that do not match (a method, a Request-URI user regex and a header
    condition each, so every one is evaluated), one that rejects untrusted sources (the UAC
    is trusted), one ``continue_routing`` rule that prefixes the user and sets a
    P-Asserted-Identity from the From domain and removes Subject, then the shipped route."""
    to = settings.route[-1].to
    out = [Route(name=f"miss{i}", to=to, methods=["INVITE"], ruri_user=rf"00{i}\d+",
                 header=[HeaderMatch(name="X-Carrier", regex=f"c{i}")])
           for i in range(count - 3)]  # fmt: skip
    out.append(Route(name="untrusted", untrusted=True, reject=403))
    out.append(Route(name="edits", continue_routing=True, ruri_user="serv.*", prefix_user="+",
                     header_edit=[HeaderEdit(name="P-Asserted-Identity", action="set",
                                             value="<sip:+15551234@{from_host}>"),
                                  HeaderEdit(name="Subject", action="remove")]))  # fmt: skip
    out.append(dataclasses.replace(settings.route[-1], ruri_user=r"\+serv.*"))
    return dataclasses.replace(settings, route=out, trusted=[Trusted(cidr="127.0.0.1")])


def prefix_table(settings: Settings, count: int, run_dir: str) -> Settings:
    """The shipped route sent through a ``[[prefix_table]]`` of ``count`` prefixes
    (docs/prefix_tables.md) instead of straight to its set: random ``+`` and digit prefixes
    of 3 to 10 characters, and ``+44207``, which the calls' numbers (``+44207946{i}``)
    start with; every row names the shipped route's set."""
    global INVITE
    INVITE = INVITE.replace("sip:service@", "sip:+44207946{i}@")
    group = settings.route[-1].to
    rnd = random.Random(1)
    prefixes = {"+44207"}
    while len(prefixes) < count:
        prefixes.add(rnd.choice(("+", "")) + str(rnd.randrange(10**2, 10**rnd.randint(3, 9))))
    path = f"{run_dir}/prefixes.csv"
    with open(path, "w") as fh:
        fh.writelines(f"{p},{group},0,1\n" for p in prefixes)
    route = dataclasses.replace(settings.route[-1], to="", prefix_table="bench")
    return dataclasses.replace(settings, route=[*settings.route[:-1], route],
                               prefix_table=[PrefixTable(name="bench", file=path)])  # fmt: skip


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    worker = Worker(settings, f"bench-{id(settings)}", ctx)
    process._tune_gc()  # as a worker process runs (conf/process.py)
    try:
        run_calls(worker, "w", args.batch * 4, args.batch)  # warm caches, as a running worker has
        runs = [run_calls(worker, f"r{k}", args.calls, args.batch) for k in range(args.repeats)]
        results = [mean for mean, _ in runs]
        best = min(results)
        steps = {k: min(r[1][k] for r in runs) for k in PER_CALL}
        quiet = sum(steps[k] * n for k, n in PER_CALL.items()) / sum(PER_CALL.values())
        print(f"{settings.proxy.mode}{' + dialogs' if settings.dialogs.enabled else ''}"
              f"{f' + {len(settings.route)} routes' if len(settings.route) > 1 else ''}"
              f"{' + a prefix table' if settings.prefix_table else ''}"
              f"{' + CDR file' if settings.dialogs.cdr_file else ''}: {args.calls} calls x 6 "
              f"messages, batches of {args.batch} calls")  # fmt: skip
        print(f"  worker CPU per message: {best:6.2f} µs (min of {args.repeats}; runs "
              f"{', '.join(f'{r:.2f}' for r in results)}); per call {best * 6:.0f} µs")  # fmt: skip
        print(f"  quietest batches: {quiet:6.2f} µs per message, {quiet * 6:.0f} µs per call ("
              + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()) + ")")  # fmt: skip
        if args.profile or args.top:
            prof = cProfile.Profile()
            run_calls(worker, "p", args.calls, args.batch, prof)
            shares = profile(prof)
            print("  per stage (cProfile share x the quietest figure):")
            for stage, share in shares.items():
                print(f"    {stage:14s} {share * quiet:6.2f} µs/msg  {share * 100:5.1f} %")
            if args.top:
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
        if args.sample:
            with Sampler() as sampler:
                for k in range(args.sample):
                    run_calls(worker, f"s{k}", args.calls, args.batch, sampler=sampler)
            print(f"  per stage (CPU-time samples every 0.5 ms, {sum(sampler.counts.values())} "
                  "in _on_batch, share x the quietest figure):")  # fmt: skip
            for stage, share in sampler.shares().items():
                print(f"    {stage:14s} {share * quiet:6.2f} µs/msg {share * quiet * 6:7.1f} µs/call"
                      f"  {share * 100:5.1f} %")  # fmt: skip
    finally:
        worker.close()
        ctx.destroy(linger=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conf", default="conf/sipline.toml")
    ap.add_argument("--calls", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=16, help="calls per batch handed in")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mode", choices=["stateless", "stateful"], default="stateless",
                    help="stateful: with dialogs and a CDR file, as issue #16's second row")  # fmt: skip
    ap.add_argument("--no-dialogs", action="store_true", help="stateful without dialogs")
    ap.add_argument("--routes", type=int, default=0,
                    help="N >= 4 routing rules with header edits in front (docs/routing.md)")
    ap.add_argument("--prefixes", type=int, default=0,
                    help="route through a prefix table of N prefixes (docs/prefix_tables.md)")
    ap.add_argument("--profile", action="store_true", help="split the time by stage")
    ap.add_argument("--top", type=int, default=0, help="print the N costliest functions")
    ap.add_argument("--sample", type=int, default=0, metavar="RUNS",
                    help="split the time by stage from CPU-time samples over RUNS more runs")  # fmt: skip
    args = ap.parse_args()
    # the worker's log lines go through the worker's own logging set-up (conf/logging.py),
    # so their cost counts; only the output is thrown away
    real_stdout, sys.stdout = sys.stdout, open(os.devnull, "w")  # noqa: SIM115
    logs.configure("info", "worker.bench", "bench")
    sys.stdout = real_stdout
    settings = load(args.conf)
    run_dir = tempfile.mkdtemp(prefix="sipline-bench-path-")
    node = dataclasses.replace(settings.node, run_dir=run_dir)
    proxy = dataclasses.replace(settings.proxy, mode=args.mode)
    dialogs = settings.dialogs
    if args.mode == "stateful" and not args.no_dialogs:
        dialogs = dataclasses.replace(dialogs, enabled=True, cdr_file=f"{run_dir}/cdr.jsonl")
    # the bench's clock hardly moves, so no transaction ends: room for every run's (4 a call)
    runs = args.repeats + args.sample + 2
    txns = dataclasses.replace(settings.transactions, max_transactions=max(
        settings.transactions.max_transactions, 2 * 4 * args.calls * runs))  # fmt: skip
    settings = dataclasses.replace(settings, node=node, proxy=proxy, dialogs=dialogs,
                                   transactions=txns)  # fmt: skip
    if args.routes:
        settings = rules(settings, args.routes)
    if args.prefixes:
        settings = prefix_table(settings, args.prefixes, run_dir)
    try:
        uvloop.run(bench(settings, args))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
