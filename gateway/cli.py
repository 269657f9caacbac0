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
    "run": ("gateway.app", "run the daemon in the foreground (systemd runs this)"),
    "check-config": ("gateway.checkconfig", "validate a configuration, apply nothing"),
    "simulate": ("gateway.sim.cli", "a virtual rig: pseudo-terminals emitting real telegrams"),
    "bench": ("gateway.bench", "the project's benchmarks"),
    "status": ("gateway.status", "a live table of every port's health and the rig's state"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="p1-gateway", description="P1 smart-meter gateway for test rigs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue  # a command whose module is not part of this build
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(_main=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen sub-command; return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
