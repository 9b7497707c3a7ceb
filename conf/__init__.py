"""Configuration, and what every process of a node shares (sockets, the hop, the workers' set).

Three modules here are in the compiled build (conf/compiled.py): ``COMPILED_HERE``. The
build's finder must be in front of the import system before the first of them is imported,
in every process, whichever package imports it first: the timers and the state plane import
them without ``ingress``, ``workers`` or ``dialogstate``, whose ``__init__`` installs it, and a
module imported once interpreted and once compiled would be two modules with two classes of
each name. Installing costs a hash of every source of the build (~0.1 s), which ``sipline
ctl`` must not pay at each call (it imports other modules of this package only:
tests/test_cli.py), so this package installs the finder on the first import of one of those
three, not on its own import.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: the modules of this package in ``conf.compiled.MODULES`` (tests/test_compiled.py keeps the
#: two lists in step)
COMPILED_HERE = frozenset({"conf.envelope", "conf.pipe", "conf.workerset"})


class _InstallOnFirstUse(importlib.abc.MetaPathFinder):
    """Installs the compiled build's finder when one of ``COMPILED_HERE`` is first imported,
    and asks it for that module (it is put in front of this one, behind this lookup)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:  # fmt: skip
        if fullname not in COMPILED_HERE:
            return None
        from conf import compiled

        compiled.install()
        for finder in sys.meta_path:
            if isinstance(finder, compiled.CompiledFinder):
                return finder.find_spec(fullname, path, target)
        return None  # pure Python (SIPLINE_PURE, no build or a stale one): the usual import


sys.meta_path.insert(0, _InstallOnFirstUse())
