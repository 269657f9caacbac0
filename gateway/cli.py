"""The `p1-gateway` command line: one sub-command per job, each in a module of its own.

Each command module exposes `configure(parser)` to declare its arguments and
`main(args) -> int` to run; this file only dispatches, so adding a command is one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("gateway.daemon.run", "run the daemon in the foreground (systemd runs this)"),
    "check-config": ("gateway.daemon.checkconfig", "validate a configuration, apply nothing"),
    "simulate": ("gateway.sim.cli", "a virtual rig: pseudo-terminals emitting real telegrams"),
    "bench": ("gateway.bench.cli", "the project's benchmarks"),
    "status": ("gateway.daemon.status", "a live table of every port's health and the rig's state"),
    "lab": ("gateway.lab.cli", "the lab: bookings, tester and rig accounts, rig schedules"),
    "tap": ("gateway.tap.cli", "a rig's meter as a local TCP port or serial port (for testers)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser listing every sub-command; only `command`'s module is imported and
    declares its arguments (every module when None).

    Importing them all cost the daemon ~3.5 MB of RSS (the simulator, the corpus, the benches)
    for `run`, which needs none of them.
    """
    parser = argparse.ArgumentParser(
        prog="p1-gateway", description="P1 smart-meter gateway for test rigs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text, description=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue  # a command whose module is not part of this build
        chosen = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(chosen)
        chosen.set_defaults(_main=module.main)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named on a command line (the first word not an option), if known."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command; return its exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(words)).parse_args(words)
    try:
        return int(args._main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
