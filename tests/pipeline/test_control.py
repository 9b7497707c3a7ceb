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
