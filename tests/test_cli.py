"""The command line: every sub-command listed, only the chosen one's module imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.cli import COMMANDS, build_parser, chosen_command, main


def test_the_chosen_command_is_the_first_word_not_an_option() -> None:
    """`run --config x` -> run; options before it are skipped; unknown words give None."""
    assert chosen_command(["run", "--config", "x"]) == "run"
    assert chosen_command(["--version"]) is None
    assert chosen_command(["nonsense", "run"]) is None
    assert chosen_command([]) is None


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` names every sub-command, whichever modules were imported."""
    with pytest.raises(SystemExit):
        build_parser("run").parse_args(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)


def test_a_command_gets_its_own_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """`check-config --help` shows check-config's own arguments (its module configured it)."""
    with pytest.raises(SystemExit):
        main(["check-config", "--help"])
    assert "--config" in capsys.readouterr().out


def test_run_does_not_import_the_other_commands() -> None:
    """Parsing `run` imports the daemon, not the simulator, the benches or the status view."""
    script = (
        "import sys\n"
        "from gateway.cli import build_parser\n"
        "build_parser('run').parse_args(['run', '--config', 'x.toml'])\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    )
    loaded = set(out.stdout.split())
    assert {"gateway.daemon.run", "gateway.daemon.service"} <= loaded
    assert not loaded & {
        "gateway.sim",
        "gateway.bench",
        "gateway.daemon.checkconfig",
        "gateway.daemon.status",
    }
