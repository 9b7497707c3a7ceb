"""The systemd units in deploy/systemd/ (docs/operations.md): they run what the Procfile runs,
each stage on its own, and systemd accepts them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conf.process import SHUTDOWN_S
from conf.settings import Tcp
from sipline.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "deploy" / "systemd"
#: what each Procfile role's unit file is called
UNIT_OF = {"ingress": "sipline-ingress@.service", "worker": "sipline-worker@.service",
           "timers": "sipline-timers@.service", "stateplane": "sipline-stateplane.service"}  # fmt: skip


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd.syntax(7) reads it: sections of keys, each key's values in
    order (keys may repeat), comments and blank lines skipped, backslash continuations
    joined. Raises ValueError on a line that is none of these."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, eq, value = line.partition("=")
        if not eq or current is None or not key.strip().isidentifier():
            raise ValueError(f"not a unit file line: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def procfile() -> dict[str, list[str]]:
    """Each Procfile role's command, without the shell's ``exec``."""
    out = {}
    for line in (REPO / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            role, _, cmd = line.partition(":")
            argv = shlex.split(cmd)
            out[role.strip()] = argv[1:] if argv[0] == "exec" else argv
    return out


class TestUnits:
    def test_every_procfile_role_has_a_unit_running_the_same_command(self) -> None:
        """The unit of each Procfile role runs the same program with the same arguments
        (``sipline <role>``), and no unit runs anything the Procfile does not."""
        roles = procfile()
        assert sorted(roles) == sorted(UNIT_OF)
        for role, argv in roles.items():
            unit = parse_unit((UNITS / UNIT_OF[role]).read_text())
            (start,) = unit["Service"]["ExecStart"]
            got = shlex.split(start)
            assert Path(got[0]).name == argv[0] and got[1:] == argv[1:], (role, start)
        assert {p.name for p in UNITS.glob("*.service")} == set(UNIT_OF.values())

    @pytest.mark.parametrize("name", sorted(UNIT_OF.values()))
    def test_each_stage_restarts_alone_within_the_target(self, name: str) -> None:
        """Every unit belongs to the node's target (stopped with it) but restarts on its own
        after a failure, stops on SIGTERM (the processes' graceful shutdown) and is given
        longer than that shutdown takes; an ingress longer than its TCP drain."""
        unit = parse_unit((UNITS / name).read_text())
        assert unit["Unit"]["PartOf"] == ["sipline.target"]
        assert unit["Install"]["WantedBy"] == ["sipline.target"]
        svc = unit["Service"]
        assert svc["Restart"] == ["on-failure"] and svc["KillSignal"] == ["SIGTERM"]
        stop_s = float(svc["TimeoutStopSec"][0])
        need = SHUTDOWN_S + (Tcp().drain_s if "ingress" in name else 0)
        assert stop_s > need, (name, stop_s, need)
        # one run directory for every process of the node, outliving any one unit
        assert svc["RuntimeDirectory"] == ["sipline"] and svc["RuntimeDirectoryPreserve"] == ["yes"]
        assert "XDG_RUNTIME_DIR=/run/sipline" in svc["Environment"]

    def test_reloading_the_target_runs_one_coordinated_ctl_reload(self) -> None:
        """``systemctl reload sipline.target`` reaches the stateplane unit alone, whose
        ExecReload is ``sipline ctl reload`` (a command the CLI takes), not a HUP; no other
        unit reloads, so a target reload runs the node's reload exactly once."""
        reloads = {}
        for name in UNIT_OF.values():
            unit = parse_unit((UNITS / name).read_text())
            if "ExecReload" in unit["Service"]:
                reloads[name] = (unit["Service"]["ExecReload"], unit["Unit"].get("ReloadPropagatedFrom"))
        assert list(reloads) == ["sipline-stateplane.service"], reloads
        ((exec_reload,), propagated) = reloads["sipline-stateplane.service"]
        assert propagated == ["sipline.target"]
        argv = shlex.split(exec_reload)
        assert argv[0] == "/opt/sipline/bin/sipline" and argv[1:] == ["ctl", "reload"], argv
        assert "kill" not in exec_reload and "HUP" not in exec_reload
        (start,) = parse_unit((UNITS / "sipline-stateplane.service").read_text())["Service"]["ExecStart"]
        assert shlex.split(start)[0] == argv[0]  # the same installed sipline
        args = build_parser().parse_args(argv[1:])
        assert (args.command, args.what) == ("ctl", "reload"), args

    def test_the_parser_refuses_what_is_not_a_unit(self) -> None:
        """The parser is strict enough to catch a broken file."""
        with pytest.raises(ValueError):
            parse_unit("[Service]\nExecStart /bin/true\n")
        with pytest.raises(ValueError):
            parse_unit("Type=exec\n")  # a key before any section

    @pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
    def test_systemd_accepts_every_unit(self, tmp_path: Path) -> None:
        """``systemd-analyze verify`` on one instance of each template and on the target,
        with ExecStart pointed at this checkout's sipline (verify checks it is executable):
        no warning names any of our files."""
        sipline = Path(sys.executable).parent / "sipline"
        for unit in UNITS.iterdir():
            text = unit.read_text().replace("/opt/sipline/bin/sipline", str(sipline))
            (tmp_path / unit.name).write_text(text)
        names = [n.replace("@.", "@1.") for n in UNIT_OF.values()] + ["sipline.target"]
        done = subprocess.run(["systemd-analyze", "verify", "--man=no",
                               *(str(tmp_path / n) for n in names)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        complaints = [ln for ln in (done.stdout + done.stderr).splitlines() if str(tmp_path) in ln]
        assert done.returncode == 0 and not complaints, done.stdout + done.stderr
