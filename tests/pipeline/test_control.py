"""The control channel (conf/control.py) over real ipc:// sockets in a temporary run dir."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import zmq
from structlog.testing import capture_logs

from conf.control import ControlServer, ask
from tests.aio import run


def test_answers_unknown_commands_and_handler_errors(ctx: zmq.Context[Any],
                                                    tmp_path: Path) -> None:  # fmt: skip
    """Each live process answers for itself; an unknown command or a failing handler gets
    ``ok: false`` with the reason, and the server keeps serving."""

    def boom(_: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("nope")

    async def body() -> list[list[dict[str, Any]]]:
        srv = ControlServer(ctx, str(tmp_path), f"worker.1-{os.getpid()}",
                            {"hello": lambda a: {"said": a.get("x")}, "boom": boom})  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            out = []
            for cmd in ("hello", "nothing", "boom", "boom", "boom", "hello"):
                replies, silent = await loop.run_in_executor(
                    None, lambda c=cmd: ask(str(tmp_path), c, {"x": 1}, 2.0))  # type: ignore[misc]
                assert silent == []
                out.append(replies)
            return out
        finally:
            srv.close()

    with capture_logs() as logs:
        hello, unknown, boom_, boom2, boom3, again = run(body)
    assert hello == [{"ok": True, "proc": f"worker.1-{os.getpid()}", "said": 1}]
    assert unknown[0]["ok"] is False and "unknown command" in unknown[0]["error"]
    assert boom_[0]["ok"] is False and "ValueError: nope" in boom_[0]["error"]
    assert boom2 == boom3 == boom_
    assert again == hello
    # three failures, one log line: a client asking in a loop cannot flood the log
    assert [e["refused"] for e in logs if e["event"] == "control_failed"] == [1]


def test_ask_with_nobody_there(tmp_path: Path) -> None:
    """No control socket in the run dir: no replies, nobody silent, at once."""
    assert ask(str(tmp_path), "stats", timeout_s=0.2) == ([], [])


def test_a_handler_may_answer_later(ctx: zmq.Context[Any], tmp_path: Path) -> None:
    """Rule 5: a handler that answers with a future is answered when it is done, and other
    requests are served meanwhile; a future that fails is answered ``ok: false``."""

    async def body() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        loop = asyncio.get_running_loop()
        gate: asyncio.Future[dict[str, Any]] = loop.create_future()
        failing: asyncio.Future[dict[str, Any]] = loop.create_future()
        failing.set_exception(RuntimeError("read failed"))
        srv = ControlServer(ctx, str(tmp_path), f"worker.1-{os.getpid()}",
                            {"slow": lambda _: gate, "fast": lambda _: {"n": 1},
                             "bad": lambda _: failing})  # fmt: skip
        try:
            slow = loop.run_in_executor(None, lambda: ask(str(tmp_path), "slow", None, 5.0))
            fast, _ = await loop.run_in_executor(None, lambda: ask(str(tmp_path), "fast", None, 2.0))
            assert not slow.done()
            gate.set_result({"done": True})
            late, _ = await slow
            bad, _ = await loop.run_in_executor(None, lambda: ask(str(tmp_path), "bad", None, 2.0))
            return fast, late, bad
        finally:
            srv.close()

    fast, late, bad = run(body)
    assert fast[0]["n"] == 1 and late[0] == {"ok": True, "proc": f"worker.1-{os.getpid()}",
                                             "done": True}  # fmt: skip
    assert bad[0]["ok"] is False and "read failed" in bad[0]["error"]
