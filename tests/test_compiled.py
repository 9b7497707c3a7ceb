"""The compiled build (conf/compiled.py): which build a process loads, and that an edited
source is never shadowed by a binary built from the old one."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import typing
from pathlib import Path

import pytest

from conf import compiled
from conf.loadstats import LoadMeter

ROOT = compiled.ROOT
PROBE = (
    "import sys, ingress.sip.parser as p, workers.txn.table as t\n"
    "print(p.__file__); print(t.__file__); print(getattr(p, 'EDITED', False))\n"
)
#: what ./dev built for this run (tests/../dev, ensure_compiled); unset when pytest runs alone
EXPECTED = os.environ.get("SIPLINE_EXPECT_BUILD")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SIPLINE_PURE", "PYTHONPATH")}
    env.update(extra)
    return env


def _run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(**env), capture_output=True, text=True,
                          timeout=60, check=True)


def _parser_is_compiled() -> bool:
    from ingress.sip import parser

    return isinstance(parser.__loader__, importlib.machinery.ExtensionFileLoader)


def test_this_process_runs_the_build_dev_made() -> None:
    """Under ./dev the suite runs on the build it announced: compiled unless it said pure."""
    if EXPECTED is None:
        pytest.skip("not run by ./dev: no build announced")
    assert _parser_is_compiled() == (EXPECTED == "compiled")
    assert compiled.active() == (EXPECTED == "compiled")


def test_version_says_which_build_is_loaded() -> None:
    """`sipline --version` says compiled: true exactly when the codec came from the build."""
    out = _run([sys.executable, "-m", "sipline", "--version"], ROOT).stdout
    probe = _run([sys.executable, "-P", "-c", PROBE], ROOT).stdout.split("\n")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    built = compiled.check().usable
    assert ("compiled: true" if built else "compiled: false") in out
    for file, module in zip(probe, ("ingress.sip.parser", "workers.txn.table"), strict=False):
        if built and module in compiled.MODULES:
            assert file.endswith(suffix) and file.startswith(str(compiled.BUILD_DIR))
        else:
            assert file == str(compiled.source_path(module))


def test_pure_variable_forces_the_interpreted_modules() -> None:
    """SIPLINE_PURE=1 loads the .py files whatever is built, and --version says so."""
    out = _run([sys.executable, "-m", "sipline", "--version"], ROOT, SIPLINE_PURE="1").stdout
    assert "compiled: false (SIPLINE_PURE is set)" in out
    probe = _run([sys.executable, "-P", "-c", PROBE], ROOT, SIPLINE_PURE="1").stdout
    assert probe.split("\n")[:2] == [str(compiled.source_path("ingress.sip.parser")),
                                     str(compiled.source_path("workers.txn.table"))]


def test_stats_reply_says_which_build_runs() -> None:
    """Every process's `ctl stats` answer carries `compiled`, true iff the codec is compiled."""
    expected = _parser_is_compiled()
    assert LoadMeter(0.0).control("worker")["compiled"] is expected


def _tree_copy(dst: Path) -> Path:
    for pkg in ("conf", "ingress", "workers", "dialogstate"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_an_edited_source_is_loaded_not_the_old_binary(tmp_path: Path) -> None:
    """A copy of the checkout with its build loads the build; edit one compiled module's
    source and every compiled module goes back to its .py, with the reason on stderr."""
    if not compiled.check().usable:
        pytest.skip("no up-to-date compiled build in this checkout (./dev builds it)")
    tree = _tree_copy(tmp_path)
    shutil.copytree(compiled.BUILD_DIR, tree / "build" / "mypyc")
    first = _run([sys.executable, "-P", "-c", PROBE], tree, PYTHONPATH=str(tree))
    assert all(f.startswith(str(tree / "build" / "mypyc")) for f in first.stdout.split("\n")[:2])
    assert first.stderr == ""
    with open(tree / "ingress" / "sip" / "headers.py", "a") as f:
        f.write("\nEDITED = True\n")
    with open(tree / "ingress" / "sip" / "parser.py", "a") as f:
        f.write("\nEDITED = True\n")
    second = _run([sys.executable, "-P", "-c", PROBE], tree, PYTHONPATH=str(tree))
    assert second.stdout.split("\n") == [str(compiled.source_path("ingress.sip.parser", tree)),
                                         str(compiled.source_path("workers.txn.table", tree)),
                                         "True", ""]
    assert "ingress/sip/headers.py changed since the build" in second.stderr


def test_the_build_of_another_checkout_is_not_used(tmp_path: Path) -> None:
    """A tree without its own build never loads this checkout's binaries."""
    tree = _tree_copy(tmp_path)
    probe = _run([sys.executable, "-P", "-c", PROBE], tree, PYTHONPATH=str(tree))
    assert probe.stdout.split("\n")[:2] == [str(compiled.source_path("ingress.sip.parser", tree)),
                                            str(compiled.source_path("workers.txn.table", tree))]
    assert probe.stderr == ""  # never built: nothing to warn about


def _fake_build(tmp_path: Path) -> tuple[Path, Path]:
    """A source tree and a manifest that matches it (the files are not real binaries)."""
    root, build = tmp_path / "src", tmp_path / "build"
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    files = {}
    for module in compiled.sources():
        src = compiled.source_path(module, root)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(f"# {module}\n")
    for module in compiled.MODULES:
        rel = module.replace(".", "/") + suffix
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_bytes(b"")
        files[module] = rel
    manifest = {"format": compiled.FORMAT, "ext_suffix": suffix, "modules": list(compiled.MODULES),
                "sha256": {m: compiled.digest(compiled.source_path(m, root))
                           for m in compiled.sources()},
                "files": files}
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    return root, build


def test_check_accepts_only_a_build_of_these_sources(tmp_path: Path) -> None:
    """Each source, compiled or a dependency, its hash, the interpreter and the module list
    decide; any difference makes the build unusable, naming why."""
    root, build = _fake_build(tmp_path)
    assert compiled.check(build, root).usable
    manifest = json.loads((build / compiled.MANIFEST).read_text())
    for module in compiled.sources():
        src = compiled.source_path(module, root)
        text = src.read_text()
        src.write_text(text + "x = 1\n")
        state = compiled.check(build, root)
        assert not state.usable and state.files == {}
        assert state.reason == f"{src.relative_to(root)} changed since the build"
        src.write_text(text)
    assert compiled.check(build, root).usable
    for key, value, reason in (("ext_suffix", ".cpython-39.so", "built for another interpreter"),
                               ("modules", ["ingress.sip.parser"], "another list of modules"),
                               ("format", 0, "another version of conf/compiled.py")):
        (build / compiled.MANIFEST).write_text(json.dumps({**manifest, key: value}))
        assert reason in compiled.check(build, root).reason
    (build / compiled.MANIFEST).write_text(json.dumps(manifest))
    next(iter(build.rglob("*" + sysconfig.get_config_var("EXT_SUFFIX")))).unlink()
    assert compiled.check(build, root).reason == "compiled files missing"
    (build / compiled.MANIFEST).write_text("{")
    assert compiled.check(build, root).reason.startswith("unreadable manifest")
    (build / compiled.MANIFEST).unlink()
    assert compiled.check(build, root).reason == "not built"


def test_a_build_by_another_mypyc_is_rebuilt(tmp_path: Path) -> None:
    """The manifest names the mypyc that made the build; ./dev rebuilds when the lock's
    differs (mypyc 1.20.2's builds leaked, tests/test_compiled_leak.py), and a manifest from
    before it was recorded counts as another mypyc."""
    from importlib.metadata import version

    from conf import build_compiled

    root, build = _fake_build(tmp_path)
    state = compiled.check(build, root)
    assert state.usable
    manifest = json.loads((build / compiled.MANIFEST).read_text())
    for recorded in (version("mypy"), "1.20.2", None):
        (build / compiled.MANIFEST).write_text(json.dumps({**manifest, "mypy": recorded}))
        after = build_compiled._with_mypyc(state, build)
        assert after.usable == (recorded == version("mypy")), after.reason
        if not after.usable:
            assert after.reason.startswith("built by mypyc") and after.files == {}


def _project_imports(module: str) -> set[str]:
    tree = ast.parse(compiled.source_path(module).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from workers import nat` imports the module workers.nat
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if compiled.source_path(n).is_file()}


def test_conf_installs_the_build_for_each_of_its_compiled_modules() -> None:
    """``conf/__init__.py`` installs the finder on the first import of each module of the
    package in the build, and of no other (``sipline ctl`` must not pay for the hash)."""
    import conf

    assert conf.COMPILED_HERE == {m for m in compiled.MODULES if m.startswith("conf.")}


def test_a_process_importing_the_hop_first_runs_it_compiled() -> None:
    """A process that imports ``conf.pipe`` before any package that installs the finder (the
    timers, the state plane) runs the same build as the rest: never half of it."""
    probe = ("from conf.pipe import PushPipe\nimport ingress.bus\nfrom conf import compiled\n"
             "print(PushPipe is ingress.bus.PushPipe, sorted(compiled.loaded().items()))\n")
    out = _run([sys.executable, "-P", "-c", probe], ROOT).stdout
    same, flags = out.split(" ", 1)
    # one class: the bus's compiled code and the process's own PushPipe are the same
    assert same == "True", out
    loaded = dict(ast.literal_eval(flags))
    assert set(loaded) >= {"conf.pipe", "conf.envelope", "conf.workerset", "ingress.bus"}
    assert set(loaded.values()) == {compiled.check().usable}, out


def test_every_project_module_a_compiled_one_imports_is_hashed() -> None:
    """An edit to anything the compiled modules were type-checked against makes the build
    stale: each project module they import is compiled too or listed in DEPENDS."""
    for module in compiled.MODULES:
        missing = _project_imports(module) - set(compiled.sources())
        assert not missing, f"{module} imports {sorted(missing)}: add them to DEPENDS"


def _defining_modules(obj: object, seen: set[type]) -> set[str]:
    """The modules ``obj`` is defined in: a class or function's own, and for a dataclass also
    those of the classes its fields are typed with (``Settings.dialogs: Dialogs``)."""
    out = {getattr(obj, "__module__", None) or ""}
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj not in seen:
        seen.add(obj)
        try:
            hints = typing.get_type_hints(obj)
        except NameError:
            hints = {}  # typed with names imported only for the type checker: not followed
        for hint in hints.values():
            for arg in (hint, *typing.get_args(hint)):
                if isinstance(arg, type):
                    out |= _defining_modules(arg, seen)
    return {m for m in out if m and compiled.source_path(m).is_file()}


def test_what_a_compiled_module_imports_is_hashed_where_it_is_defined() -> None:
    """A name a compiled module imports from a module that re-exports it (conf.settings
    gathers conf/sections/, conf.load re-exports conf/checks/) is hashed in the module that
    defines it, with the classes a dataclass's fields are typed with: an edit there makes the
    build stale too."""
    for module in compiled.MODULES:
        tree = ast.parse(compiled.source_path(module).read_text())
        for node in ast.walk(tree):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and compiled.source_path(node.module).is_file()):
                continue
            imported = importlib.import_module(node.module)
            for alias in node.names:
                obj = getattr(imported, alias.name)
                missing = _defining_modules(obj, set()) - set(compiled.sources())
                assert not missing, (f"{module} imports {alias.name} from {node.module}, "
                                     f"defined in {sorted(missing)}: add them to DEPENDS")


def test_a_missing_compiler_is_named_with_its_debian_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a C compiler on PATH the build says so and names the package ./dev installs."""
    from conf import build_compiled

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no cc, no gcc
    assert (build_compiled.missing_toolchain() or "").startswith("no C compiler")
    assert build_compiled.debian_packages() == ["gcc"]
    assert build_compiled.main(["--needs"]) == 0
