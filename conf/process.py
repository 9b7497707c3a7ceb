"""What every sipline process does around its own work: config, logging, loop, signals.

A process module's ``main`` is then a few lines: ``run(role, serve, conf_path)`` where
``serve(settings, stop)`` runs until ``stop`` is set by SIGTERM or SIGINT and returns an exit
code. Shutdown must finish well inside honcho's 5 s before SIGKILL (honcho/manager.py).

No exception ends a process (``conf.guard``): ``run`` makes the guard the loop's exception
handler, and ``every`` reports what its function raises and keeps its schedule. ``run`` also
raises the soft open-file limit to the hard one (``raise_fd_limit``): 1 024 descriptors are
the usual default, and an ingress holds one per TCP connection (``connection_cap``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable

import structlog
import uvloop

from conf import logging as sl_logging
from conf import rundir
from conf.guard import GUARD
from conf.load import config_path, load_or_report
from conf.settings import Settings

Serve = Callable[[Settings, asyncio.Event], Awaitable[int]]

#: time given to a process to drain on SIGTERM; honcho SIGKILLs at 5 s
SHUTDOWN_S = 3.0


def proc_name(role: str) -> str:
    """honcho names processes ``worker.1``; one started by hand is ``worker``."""
    return os.environ.get("HONCHO_PROCESS_NAME") or role


#: a SIGTERM or SIGINT that came during start-up, before the loop's handlers (``hold_early_signals``)
_EARLY: list[int] = []


def hold_early_signals() -> None:
    """Called first by a process: until its loop serves, a SIGTERM or SIGINT is kept and
    stops it as soon as it does, and a SIGHUP is ignored. Their default actions would end a
    process in the middle of its start (imports and config take a good fraction of a second),
    and ``systemctl reload`` sends SIGHUP to every process of the node."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: _EARLY.append(signum))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def run(role: str, serve: Serve, conf: str | None = None) -> int:
    path = config_path(conf)
    settings = load_or_report(path, f"sipline {role}: ")
    if settings is None:
        return 2
    try:  # before any socket is bound (conf/rundir.py rule 4)
        rundir.prepare(settings.node.run_dir, rundir.group_id(settings.node.run_group))
    except rundir.RunDirError as exc:
        print(f"sipline {role}: run directory error: {exc}", file=sys.stderr)
        return 2
    sl_logging.configure(settings.log.level, proc_name(role), settings.node.name)
    log = structlog.get_logger()
    fd_limit = raise_fd_limit()
    log.info("process_starting", role=role, conf=path, fd_limit=fd_limit)
    _tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        code = runner.run(_serve(serve, settings))
    log.info("process_stopped", role=role, code=code)
    return code


#: descriptors an ingress keeps for what is not a TCP connection: its ZeroMQ sockets (each
#: holds a mailbox and one descriptor per peer connected), listeners, log and journal files
FD_RESERVE = 256


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses an infinite NOFILE: nr_open caps it
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = int(f.read())
        except (OSError, ValueError):
            return soft
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (OSError, ValueError):
        return soft
    return want


def connection_cap(wanted: int, fd_limit: int, reserve: int = FD_RESERVE) -> int:
    """The connections a process may hold: ``wanted``, but at most ``fd_limit`` less
    ``reserve`` descriptors for everything else (at least 1)."""
    return max(1, min(wanted, fd_limit - reserve))


def fd_limit() -> int:
    """The soft open-file limit in force."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


#: a hot loop allocates a few dozen objects per message and almost never a cycle; with the
#: default (700) the youngest generation is collected every few messages
GC_GEN0_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Move start-up objects out of the collector's way and collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def _serve(serve: Serve, settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    GUARD.install(loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads workers (workers/main.py replaces this); a HUP sent to every process of
    # the node must not end the others, as its default action would
    loop.add_signal_handler(signal.SIGHUP, _sighup_ignored)
    if _EARLY:  # stopped while starting: serve sets up and stops at once
        stop.set()
    return await serve(settings, stop)


def _sighup_ignored() -> None:
    structlog.get_logger().info("sighup_ignored", reason="only workers reload (docs/operations.md)")


async def every(period_s: float, stop: asyncio.Event, fn: Callable[[], None]) -> None:
    """Call ``fn`` on a fixed schedule (deadlines advance by the period, so no drift). What
    ``fn`` raises is reported (``conf.guard``) and the schedule goes on."""
    where = "every:" + getattr(fn, "__qualname__", type(fn).__name__)
    loop = asyncio.get_running_loop()
    deadline = loop.time()
    while not stop.is_set():
        deadline += period_s
        delay = deadline - loop.time()
        if delay < 0:  # we fell behind: skip missed ticks rather than burst
            deadline = loop.time()
            delay = 0
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
        except TimeoutError:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - no exception ends a process (conf.guard)
                GUARD.report(where, exc)


async def until_quiet(progress: Callable[[], int], quiet_s: float = 0.1, max_s: float = 1.0) -> None:
    """Wait until ``progress()`` stops changing for ``quiet_s`` (at most ``max_s``): used on
    shutdown to let messages already in flight through before the sockets close."""
    loop = asyncio.get_running_loop()
    end = loop.time() + max_s
    last, since = progress(), loop.time()
    while loop.time() < end and loop.time() - since < quiet_s:
        await asyncio.sleep(quiet_s / 5)
        now_value = progress()
        if now_value != last:
            last, since = now_value, loop.time()
