"""The compiled build of the hot modules (mypyc): what is compiled, where it lives, when it is used.

The modules in ``MODULES`` are compiled by mypyc from the same typed sources the interpreter
runs; ``./dev`` builds them (``python -m conf.build_compiled``) into ``build/mypyc/`` of the
checkout, and :func:`install` (called by ``ingress/__init__.py``, ``workers/__init__.py`` and
``dialogstate/__init__.py``, so before any of their modules is imported, and by
``conf/__init__.py``'s hook on the first import of one of this package's) puts a finder in front of
``sys.meta_path`` that loads the compiled files instead of the ``.py`` ones. Figures: docs/benchmarks.md, "The compiled build".

Rules:

1. The sources are the truth. The build's manifest records the sha256 of every file in
   ``sources()`` (the compiled modules and the uncompiled ones whose types they were compiled
   against); the compiled modules are loaded only if every one still matches the file on
   disk, the build is for this interpreter and holds exactly ``MODULES``. One edited file
   sends all of them back to the interpreter: compiled modules call each other in C, so a
   compiled parser beside an interpreted, edited message.py would run the old message.py.
   The reason is printed once on stderr, never silently shadowing an edit.
2. ``SIPLINE_PURE=1`` (any value but empty or ``0``) forces the interpreted modules.
3. Nothing here may fail an import: a missing, partial or foreign build means pure Python.
4. ``ingress/sip/errors.py`` stays interpreted: its exception classes are subclassed and
   raised across the codebase, and compiled it changed which error a mutated message got
   (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

#: the modules compiled, measured one set at a time with bench/worker_path.py (benchmarks.md)
MODULES: tuple[str, ...] = (
    "ingress.sip.grammar",
    "ingress.sip.headers",
    "ingress.sip.message",
    "ingress.sip.parser",
    "ingress.sip.serialize",
    # the ingress's own path: every datagram is scanned (and TCP framed) before a worker sees it
    "ingress.sip.scan",
    "ingress.sip.framer",
    "ingress.udp",
    # every message of the hop between ingress and worker, both ways (seventh sitting): the
    # batch's pack and send, the receive, unpack and the metas' checks; and the ingress's
    # own per-datagram path around them
    "conf.envelope",
    "conf.pipe",
    "ingress.bus",
    "ingress.service",
    # which worker owns a Call-ID: every message the ingress takes, a loop over the workers
    # (interpreted, 1.2 µs a message with two workers, 3.4 with four)
    "conf.workerset",
    "workers.txn.client",
    "workers.txn.events",
    "workers.txn.held",
    "workers.txn.keys",
    "workers.txn.machine",
    "workers.txn.messages",
    "workers.txn.server",
    "workers.txn.table",
    "workers.txn.timers",
    "workers.proxy",
    # the proxy's Inbound, Out and Plan (re-exported by workers.proxy)
    "workers.proxytypes",
    # what the stateless proxy asks of every message: whether an address is ours, where a
    # request is routed (#16, sixth sitting)
    "workers.listeners",
    "workers.routing.table",
    # the stateful core's own code (not its dialog table): what every stateful message runs
    "workers.stateful",
    "workers.admission",
    "workers.proxied",
    "workers.targets",
    "workers.timerc",
    # the dialog table every stateful message with dialogs runs through (and the state
    # plane's mirror): its State is read back as a plain int compiled, so it is compared
    # with == (dialogstate/record.py)
    "dialogstate.profiles",
    "dialogstate.record",
    "dialogstate.msgs",
    "dialogstate.store",
    "dialogstate.table",
    # the stateful core's dialog work: ``absent`` runs for every message of a stateful call,
    # ``forwarded`` for every INVITE; interpreted, each was a call out of compiled code
    "workers.dialogs.duty",
)
#: interpreted modules whose classes the compiled ones were type-checked against: an edit to
#: one of them may change what the compiled code assumes, so it makes the build stale too
DEPENDS: tuple[str, ...] = (
    "ingress.sip.errors",
    # what workers/proxy.py imports from the project: Settings, and the section classes its
    # fields are typed with (conf/sections/, re-exported by conf.settings)
    "conf.settings",
    "conf.sections.auth",
    "conf.sections.bus",
    "conf.sections.dialogs",
    "conf.sections.dns",
    "conf.sections.fields",
    "conf.sections.listen",
    "conf.sections.log",
    "conf.sections.node",
    "conf.sections.protection",
    "conf.sections.proxy",
    "conf.sections.registrar",
    "conf.sections.routing",
    "conf.sections.stateplane",
    "conf.sections.timers",
    "workers.auth.admit",
    "workers.conntag",
    "workers.nat",
    "workers.ratelimit.pipes",
    "workers.refusals",
    "workers.routing.prefix_route",
    # where prefix_route's PrefixChoice is defined (a field of workers.proxy's Plan)
    "workers.routing.prefixes",
    "workers.routing.rules",
    # what the routing table imports from the project (conf.load re-exports
    # parse_status_codes from conf.checks.common)
    "conf.load",
    "conf.checks.common",
    "workers.routing.trusted",
    # what the hop and the ingress's service import from the project
    "conf.bustcp",
    "conf.control",
    "conf.guard",
    "conf.loadstats",
    "conf.process",
    "conf.refused",
    "conf.rejects",
    "conf.sockets",
    "ingress.pike",
    "ingress.pikeshare",
    "ingress.shedding",
    "ingress.tcp",
    "ingress.tls",
    "ingress.virtual",
    # what the stateful core imports from the project
    "workers.coreevents",
    "workers.registrar.natping",
    "workers.registrar.register",
    "workers.routing.dispatcher",
    "workers.routing.probes",
    "workers.transactions",
)

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build" / "mypyc"
MANIFEST = "manifest.json"
#: bump when the manifest's meaning changes: an older build is then stale
FORMAT = 1
PURE_ENV = "SIPLINE_PURE"


@dataclass(frozen=True, slots=True)
class BuildState:
    """Whether the compiled modules can be used, and if not why."""

    usable: bool
    reason: str
    #: module name -> compiled file, for every module the finder serves (empty unless usable)
    files: dict[str, str]


def source_path(module: str, root: Path = ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sources() -> tuple[str, ...]:
    return MODULES + DEPENDS


def pure_forced(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return environ.get(PURE_ENV, "") not in ("", "0")


def check(build_dir: Path = BUILD_DIR, root: Path = ROOT) -> BuildState:
    """Read the manifest and compare it with the sources on disk (rule 1)."""
    path = build_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return BuildState(False, "not built", {})
    except (OSError, ValueError) as exc:
        return BuildState(False, f"unreadable manifest ({exc})", {})
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return BuildState(False, "built by another version of conf/compiled.py", {})
    if manifest.get("ext_suffix") != sysconfig.get_config_var("EXT_SUFFIX"):
        return BuildState(False, f"built for another interpreter ({manifest.get('ext_suffix')})", {})
    if manifest.get("modules") != list(MODULES):
        return BuildState(False, "built from another list of modules", {})
    hashes = manifest.get("sha256")
    if not isinstance(hashes, dict):
        return BuildState(False, "manifest without hashes", {})
    for module in sources():
        src = source_path(module, root)
        try:
            now = digest(src)
        except OSError:
            return BuildState(False, f"{src.relative_to(root)} unreadable", {})
        if hashes.get(module) != now:
            return BuildState(False, f"{src.relative_to(root)} changed since the build", {})
    files = manifest.get("files")
    if not isinstance(files, dict):
        return BuildState(False, "manifest without files", {})
    resolved = {name: str(build_dir / rel) for name, rel in files.items() if isinstance(rel, str)}
    missing = [f for f in resolved.values() if not os.path.isfile(f)]
    if missing or set(MODULES) - set(resolved):
        return BuildState(False, "compiled files missing", {})
    return BuildState(True, "up to date", resolved)


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Serves the build's extension modules for exactly the names of its manifest."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        # only for the package of the checkout the build was made from: a module of the same
        # name imported from another tree (a mutation-testing copy, an older checkout on
        # PYTHONPATH) keeps its own source
        if path is not None and not any(_same(p, _package_dir(fullname)) for p in path):
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, file)
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _package_dir(fullname: str) -> Path:
    return ROOT.joinpath(*fullname.split(".")[:-1])


def _same(a: str, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


#: what install() decided, once per process
STATE: BuildState | None = None


def install() -> BuildState:
    """Put the finder in front of sys.meta_path if the build is usable; idempotent."""
    global STATE
    if STATE is not None:
        return STATE
    if pure_forced():
        STATE = BuildState(False, f"{PURE_ENV} is set", {})
        return STATE
    try:
        STATE = check()
    except Exception as exc:  # noqa: BLE001 - rule 3: whatever is wrong with it, run pure Python
        STATE = BuildState(False, f"build check failed ({exc!r})", {})
    if STATE.usable:
        sys.meta_path.insert(0, CompiledFinder(STATE.files))
    elif STATE.reason != "not built":
        # rule 1: an edit made the build stale; say so rather than run pure Python unannounced
        print(f"sipline: compiled build not used: {STATE.reason}; running pure Python "
              "(./dev rebuilds it)", file=sys.stderr)
    return STATE


def loaded() -> dict[str, bool]:
    """For each compiled module already imported: whether it came from the compiled build."""
    out = {}
    for name in MODULES:
        module = sys.modules.get(name)
        if module is not None:
            out[name] = isinstance(
                getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
    return out


def active() -> bool:
    """True if this process runs the compiled modules (all that it has imported of them)."""
    flags = loaded()
    if not flags:  # none imported yet: what the finder will serve
        return STATE is not None and STATE.usable
    return all(flags.values())


def describe() -> str:
    """One line for ``sipline --version`` and ``ctl stats``: which build this process runs."""
    import ingress.sip  # noqa: F401  (loads the codec modules, through the finder if any)

    state = install()
    flags = loaded()
    if flags and all(flags.values()):  # the rest are served by the same finder when imported
        return f"compiled: true ({len(MODULES)} modules, mypyc)"
    if any(flags.values()):
        return "compiled: partial (" + ", ".join(n for n, c in flags.items() if c) + ")"
    return f"compiled: false ({state.reason})"
