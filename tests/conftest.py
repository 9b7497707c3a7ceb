"""Fixtures every test package shares: a ZeroMQ context that cannot outlive its test, and a
``tmp_path`` short enough to hold a node's run directory.

Modelled on pyzmq's own tests/conftest.py (``sockets`` closed with linger 0,
``term_context`` bounded by a thread join instead of hanging the session).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, settings

#: for ``./dev mutate`` (tests/mutate.py): the same examples on every run and no deadline, so
#: whether a mutant is killed depends on the tests alone, not on chance or a loaded machine;
#: mutmut runs a test method again in one process, on a new instance of its (stateless) class
settings.register_profile("mutation", derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.differing_executors])  # fmt: skip

#: characters of the test's name in its ``tmp_path``: a run directory under it must stay within
#: conf/rundir.py's 76 bytes (ipc paths are short), and under pytest-xdist the base adds
#: ``popen-gwN/`` to ``/tmp/pytest-of-<user>/pytest-<n>/``
TMP_NAME_CHARS = 16


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pytest's ``tmp_path`` (same base, numbering and retention) with a shorter name."""
    name = re.sub(r"\W", "_", request.node.name)[:TMP_NAME_CHARS]
    return tmp_path_factory.mktemp(name, numbered=True)


#: ``term()`` after every socket is closed with linger 0 takes milliseconds; past this, a
#: socket the context does not track (or a thread the test left running) still holds it
TERM_TIMEOUT_S = 5.0


def destroy_within(context: zmq.Context[Any], timeout_s: float = TERM_TIMEOUT_S) -> None:
    """Close every socket of ``context`` with linger 0 and terminate it, or fail after
    ``timeout_s`` rather than block the whole run in ``term()``."""
    failed: list[Exception] = []

    def destroy() -> None:
        try:
            context.destroy(linger=0)
        except Exception as e:  # noqa: BLE001 - raised again on the test's thread below
            failed.append(e)

    # the test is over and no thread uses its sockets any more: closing them on another is safe
    t = threading.Thread(target=destroy, name="ctx-destroy", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise RuntimeError(f"zmq context not terminated within {timeout_s} s: "
                           "a socket it does not track is still open")  # fmt: skip
    if failed:
        raise failed[0]


#: the packages whose module-level memos (view caches, ``lru_cache``) a mutant may hide behind
OWN_PACKAGES = ("conf.", "ingress.", "workers.", "stateplane.", "timers.", "sipline.")


def clear_memos() -> None:
    """Empty every module-level cache of our packages: ``*_CACHE`` dicts and ``lru_cache``
    functions. mutmut forks each mutant's test run from a process that has already run the
    suite once, so without this a mutant in a cached parse (``parse_uri``, ``parse_via`` ...)
    is never called: the child answers from the parent's cache and the mutant "survives"."""
    for name, module in list(sys.modules.items()):
        if not name.startswith(OWN_PACKAGES) or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
            elif attr.endswith("_CACHE") and isinstance(value, dict):
                value.clear()


@pytest.fixture(autouse="SIPLINE_MUTATION" in os.environ)
def _fresh_memos() -> None:
    """Under ``./dev mutate`` only (tests/mutate.py sets SIPLINE_MUTATION): every test
    starts with empty caches, as it would in a process of its own."""
    clear_memos()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A context for one test, destroyed after it (sockets linger 0, ``term()`` bounded)."""
    context: zmq.Context[Any] = zmq.Context()
    yield context
    destroy_within(context)
