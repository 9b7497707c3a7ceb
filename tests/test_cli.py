"""The ``sipline`` console script: check-config, and process roles refusing a bad config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conf.load import ConfigError, load
from sipline import cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "conf" / "sipline.toml"
BAD = "[[listen]]\ntransport = 'udp'\nport = 70000\n"


def sipline_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m sipline``."""
    script = Path(sys.executable).with_name("sipline")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sipline"]


def run(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    environ = {
        k: v for k, v in os.environ.items() if k not in ("SIPLINE_CONF", "HONCHO_PROCESS_NAME")
    }
    environ.update(env or {})
    return subprocess.run(
        sipline_command() + args,
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def bad_config(tmp_path: Path) -> tuple[Path, str]:
    """A config file with one error, and the message ``load`` gives for it."""
    run_dir = tmp_path / "run"
    p = tmp_path / "bad.toml"
    p.write_text(f"[node]\nrun_dir = '{run_dir}'\n{BAD}", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(p)
    return p, str(info.value)


class TestCheckConfigInProcess:
    def test_default_config_ok(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """check-config on the shipped file exits 0 and says ok."""
        monkeypatch.delenv("SIPLINE_CONF", raising=False)
        monkeypatch.chdir(ROOT)
        assert cli.main(["check-config"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"{ROOT / 'conf' / 'sipline.toml'}: ok")

    def test_bad_config(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config on a bad file exits 2 and prints the loader's message on stderr."""
        p, message = bad_config(tmp_path)
        assert cli.main(["check-config", "--conf", str(p)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err
        assert "listen[0].port: expected a number from 1 to 65535, found 70000" in captured.err
        assert captured.out == ""

    def test_bad_prefix_table_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """check-config reads the prefix tables and names a bad line: file, line, field."""
        csv = tmp_path / "carriers.csv"
        csv.write_text("+44,uas\n+4420,uas,0,0\n")
        p = tmp_path / "s.toml"
        p.write_text(
            '[[destination_set]]\nname = "uas"\ndestinations = ["sip:127.0.0.1:5080"]\n'
            f'[[prefix_table]]\nname = "carriers"\nfile = "{csv}"\n'
            '[[route]]\nname = "pstn"\nprefix_table = "carriers"\n'
        )
        assert cli.main(["check-config", "--conf", str(p)]) == 2
        err = capsys.readouterr().err
        assert f"{csv}:2: weight: expected a weight from 1 to 1000000, found '0'" in err
        csv.write_text("+44,uas\n")
        assert cli.main(["check-config", "--conf", str(p)]) == 0

    def test_conf_before_subcommand(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--conf works before the subcommand as well as after it."""
        p, message = bad_config(tmp_path)
        assert cli.main(["--conf", str(p), "check-config"]) == 2
        assert message in capsys.readouterr().err

    def test_env_names_the_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """SIPLINE_CONF is used when there is no --conf."""
        p, message = bad_config(tmp_path)
        monkeypatch.setenv("SIPLINE_CONF", str(p))
        assert cli.main(["check-config"]) == 2
        assert message in capsys.readouterr().err

    def test_flag_beats_env(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """--conf wins over SIPLINE_CONF."""
        p, _ = bad_config(tmp_path)
        monkeypatch.setenv("SIPLINE_CONF", str(p))
        assert cli.main(["check-config", "--conf", str(SHIPPED)]) == 0
        assert capsys.readouterr().out.startswith(f"{SHIPPED}: ok")

    def test_missing_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A missing file is a configuration error (exit 2), not a traceback."""
        assert cli.main(["check-config", "--conf", str(tmp_path / "none.toml")]) == 2
        assert (
            "(file): expected an existing TOML file, found no such file" in capsys.readouterr().err
        )


class TestConsoleScript:
    def test_check_config_default(self) -> None:
        """`sipline check-config` in the repository exits 0 on conf/sipline.toml."""
        r = run(["check-config"])
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout.startswith(f"{ROOT / 'conf' / 'sipline.toml'}: ok")

    def test_check_config_bad(self, tmp_path: Path) -> None:
        """`sipline check-config --conf bad.toml` exits 2 with file, key, expected and found."""
        p, message = bad_config(tmp_path)
        r = run(["check-config", "--conf", str(p)])
        assert r.returncode == 2
        assert r.stderr.strip() == f"configuration error: {message}"

    def test_check_config_env(self, tmp_path: Path) -> None:
        """`SIPLINE_CONF=bad.toml sipline check-config` reads that file."""
        p, message = bad_config(tmp_path)
        r = run(["check-config"], env={"SIPLINE_CONF": str(p)})
        assert r.returncode == 2 and message in r.stderr

    def test_syntax_error(self, tmp_path: Path) -> None:
        """A TOML syntax error is reported with its line, exit 2."""
        p = tmp_path / "broken.toml"
        p.write_text("[node\nname = 'x'\n", encoding="utf-8")
        r = run(["check-config", "--conf", str(p)])
        assert r.returncode == 2
        assert f"{p}: (syntax): expected valid TOML" in r.stderr and "line 1" in r.stderr

    @pytest.mark.parametrize("role", ["ingress", "worker"])
    def test_role_refuses_bad_config_before_starting(self, role: str, tmp_path: Path) -> None:
        """`sipline <role> --conf bad.toml` exits 2 with the message, before creating anything.

        The bad file names a run_dir that a started process would create before binding any
        socket; it must not exist afterwards, and no log line may have been written.
        """
        p, message = bad_config(tmp_path)
        r = run([role, "--conf", str(p)], cwd=tmp_path)
        assert r.returncode == 2
        assert message in r.stderr
        assert r.stdout == ""
        assert not (tmp_path / "run").exists()

    def test_no_subcommand_is_usage_error(self) -> None:
        """Plain `sipline` prints usage and exits 2."""
        r = run([])
        assert r.returncode == 2 and "usage: sipline" in r.stderr


def test_console_script_installed() -> None:
    """`pip install -e .` put a `sipline` script next to the interpreter (what honcho runs)."""
    assert Path(sys.executable).with_name("sipline").exists() or shutil.which("sipline")


def test_worker_stops_on_a_bad_prefix_table(tmp_path: Path) -> None:
    """A worker whose prefix table file has a bad line exits 2 before serving, and its log
    line names the file, the line and the field."""
    csv = tmp_path / "carriers.csv"
    csv.write_text("+44,uas\n+4420,uas,x\n")
    p = tmp_path / "s.toml"
    p.write_text(
        f'[node]\nrun_dir = "{tmp_path / "run"}"\n'
        '[[destination_set]]\nname = "uas"\ndestinations = ["sip:127.0.0.1:5080"]\n'
        f'[[prefix_table]]\nname = "carriers"\nfile = "{csv}"\n'
        '[[route]]\nname = "pstn"\nprefix_table = "carriers"\n'
    )
    res = run(["--conf", str(p), "worker"])
    assert res.returncode == 2, res.stdout + res.stderr
    refused = [json.loads(line) for line in res.stdout.splitlines()
               if '"prefix_table_refused"' in line]  # fmt: skip
    assert refused and f"{csv}:2: priority: expected a priority" in refused[0]["error"]


#: what ``sipline ctl`` must not import: structlog (and rich, which structlog imports when it
#: is installed, as in the dev lock), asyncio, the process packages and the compiled build;
#: ~0.1 s of CPU at each call, on a path the e2e tests and operators' scripts poll
CTL_NEVER_IMPORTS = ("structlog", "rich", "asyncio", "workers", "ingress", "stateplane",
                     "dialogstate", "conf.compiled")  # fmt: skip


@pytest.mark.parametrize("verb", ["stats", "reload", "dialogs"])
def test_ctl_start_up_imports_no_logging_or_process_code(verb: str, tmp_path: Path) -> None:
    """``sipline ctl`` against a stopped node answers (exit 1, nothing answered) having
    imported none of ``CTL_NEVER_IMPORTS`` (conf/logging.py says why)."""
    conf = tmp_path / "n.toml"
    conf.write_text(f"[node]\nrun_dir = '{tmp_path / 'run'}'\n[[listen]]\ntransport = 'udp'\n"
                    "port = 5999\n", encoding="utf-8")  # fmt: skip
    probe = ("import sys\nfrom sipline.cli import main\n"
             f"rc = main(['ctl', {verb!r}, '--conf', {str(conf)!r}, '--timeout', '0.2'])\n"
             f"print(rc, sorted(m for m in {CTL_NEVER_IMPORTS!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1 []\n", done.stdout
