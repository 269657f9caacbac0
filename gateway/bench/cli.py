"""`p1-gateway bench`: the project's benchmarks, one sub-command each.

Another benchmark is one row in BENCHMARKS: a module exposing `configure(parser)` and
`main(args) -> int` (as gateway.cli's commands do); a missing module just hides its row.
"""

from __future__ import annotations

import argparse
import importlib

# name -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "decode": (
        "gateway.bench.decode",
        "decode speed (CRC included) against dsmr_parser's TelegramParser",
    ),
    "e2e": ("gateway.bench.e2e", "end to end: pseudo-terminal to MQTT"),
    "cold": (
        "gateway.bench.cold",
        "the same work's CPU right after its thread slept (why rig load costs more)",
    ),
    "tap": ("gateway.bench.tap", "p1-gateway tap's own share of a telegram's way, at rig load"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare one sub-command per available benchmark."""
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, help_text) in BENCHMARKS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue  # a benchmark whose module is not part of this build
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.configure(command)
        command.set_defaults(_bench_main=module.main)


def main(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    return int(args._bench_main(args))
