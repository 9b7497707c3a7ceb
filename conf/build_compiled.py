"""Build the compiled modules (conf/compiled.py) with the locked mypyc: ``./dev`` runs this.

    python -m conf.build_compiled            build if stale (exit 0), or say why it cannot
    python -m conf.build_compiled --force    build even if up to date
    python -m conf.build_compiled --check    exit 0 if up to date, 1 if not (builds nothing)
    python -m conf.build_compiled --needs    the Debian packages missing to build, if any

Exit codes: 0 built or up to date, 1 stale (--check), 3 no C compiler or no Python headers
(``./dev`` then installs them or runs pure Python), 4 the build failed.

Rules: the new build is made in a temporary directory beside ``build/mypyc`` and swapped in
whole, under a lock, so a process starting meanwhile sees the old build or the new one, never
half of one; the sources are hashed before mypyc reads them and again after, and a file
edited during the build fails it (its hash would name sources the binary was not built from).
The manifest also names the mypy (mypyc) version that made the build, and a build made by
another one than the installed is stale here (mypyc 1.20.2's builds leaked memory:
docs/benchmarks.md, "The compiled build").
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import json
import os
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

from conf.compiled import (
    BUILD_DIR,
    FORMAT,
    MANIFEST,
    MODULES,
    ROOT,
    BuildState,
    check,
    digest,
    source_path,
    sources,
)


def missing_toolchain() -> str | None:
    """What is missing to compile C extensions for this interpreter, or None."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        return f"no Python headers ({include}/Python.h)"
    return None


def debian_packages() -> list[str]:
    """The Debian packages that would supply what missing_toolchain() finds missing."""
    lacking = missing_toolchain() or ""
    return [pkg for word, pkg in (("compiler", "gcc"), ("headers", "python3-dev"))
            if word in lacking]


def _hashes() -> dict[str, str]:
    return {m: digest(source_path(m)) for m in sources()}


def _mypyc_version() -> str:
    return importlib.metadata.version("mypy")


def _with_mypyc(state: BuildState, build_dir: Path = BUILD_DIR) -> BuildState:
    """``state``, stale if the build was made by another mypyc than the installed one.

    The generated C is mypyc's as much as ours: mypyc 1.20.2 leaked the left operand of every
    ``bytes + bytes`` (mypyc/mypyc#1192), and a build it made stayed "up to date" after the
    lock moved to a mypy with the fix, until a source changed. Only the build checks this;
    a running node loads whatever build matches its sources (conf/compiled.py rule 1), and
    ``./dev`` runs this before it starts one."""
    if not state.usable:
        return state
    try:
        built_by = json.loads((build_dir / MANIFEST).read_text()).get("mypy")
        installed = _mypyc_version()
    except (OSError, ValueError, AttributeError, importlib.metadata.PackageNotFoundError):
        return state  # the loader's own check already read it; nothing to rebuild with
    if built_by != installed:
        return BuildState(False, f"built by mypyc {built_by or '(unrecorded)'}, not {installed}",
                          {})  # fmt: skip
    return state


def build(out: Path, opt_level: str = "3") -> dict[str, str]:
    """Compile MODULES into ``out``; return module -> file relative to ``out``."""
    # imported here: only the build needs mypyc and setuptools, never a running node
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    paths = [str(source_path(m).relative_to(ROOT)) for m in MODULES]
    work = out / "_work"
    exts = mypycify(paths, opt_level=opt_level, target_dir=str(work / "c"))
    dist = Distribution({"name": "sipline-compiled", "ext_modules": exts})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_lib = str(out)
    cmd.build_temp = str(work / "obj")
    cmd.inplace = False
    dist.run_command("build_ext")
    shutil.rmtree(work)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    files = {}
    for so in out.rglob("*" + suffix):
        rel = so.relative_to(out)
        name = ".".join(rel.parts)[: -len(suffix)]
        files[name] = str(rel)
    return files


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m conf.build_compiled", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="build even if up to date")
    p.add_argument("--check", action="store_true", help="only say whether it is up to date")
    p.add_argument("--needs", action="store_true",
                   help="print the Debian packages missing to build (gcc, python3-dev)")
    args = p.parse_args(argv)
    if args.needs:
        print(" ".join(debian_packages()))
        return 0
    os.chdir(ROOT)  # mypyc reads pyproject.toml's [tool.mypy] from the working directory
    state = _with_mypyc(check())
    if args.check or (state.usable and not args.force):
        print(f"compiled build: {state.reason}")
        return 0 if state.usable else 1
    lacking = missing_toolchain()
    if lacking:
        print(f"compiled build: cannot build: {lacking}")
        return 3
    BUILD_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR.parent / ".mypyc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another ./dev in this checkout builds the same
        if _with_mypyc(check()).usable and not args.force:
            print("compiled build: up to date (built meanwhile)")
            return 0
        print(f"compiled build: {state.reason}: compiling {len(MODULES)} modules with mypyc")
        started = time.monotonic()
        before = _hashes()
        tmp = Path(tempfile.mkdtemp(prefix="mypyc.", dir=BUILD_DIR.parent))
        try:
            files = build(tmp)
            if _hashes() != before:
                print("compiled build: a source changed during the build; not used")
                return 4
            manifest = {"format": FORMAT, "ext_suffix": sysconfig.get_config_var("EXT_SUFFIX"),
                        "modules": list(MODULES), "sha256": before, "files": files,
                        "mypy": _mypyc_version()}  # fmt: skip
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            old = BUILD_DIR.with_name("mypyc.old")
            shutil.rmtree(old, ignore_errors=True)
            if BUILD_DIR.exists():
                BUILD_DIR.rename(old)
            tmp.rename(BUILD_DIR)
            shutil.rmtree(old, ignore_errors=True)
        # mypyc exits on a type error, setuptools raises on a compiler error: either way
        # ./dev runs pure Python and says so
        except (Exception, SystemExit) as exc:  # noqa: BLE001
            print(f"compiled build: failed: {exc!r}")
            return 4
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"compiled build: done in {time.monotonic() - started:.0f} s ({BUILD_DIR})")
    return 0 if check().usable else 4


if __name__ == "__main__":
    raise SystemExit(main())
