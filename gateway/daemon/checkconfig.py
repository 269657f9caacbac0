"""`p1-gateway check-config`: validate everything `run` would load, apply nothing."""

from __future__ import annotations

import argparse
import sys

from gateway.config import load_config
from gateway.errors import ConfigError

EXIT_VALID = 0
EXIT_INVALID = 2


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare check-config's arguments."""
    parser.add_argument("--config", required=True, help="the main TOML file")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")


def main(args: argparse.Namespace) -> int:
    """Exit 0 when the config is valid; 2 with each problem on stderr when it is not."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"check-config: {len(exc.problems)} problem(s); nothing applied", file=sys.stderr)
        return EXIT_INVALID
    if not args.quiet:
        if cfg.schedule.source == "mqtt":
            slots = f"slots from the broker ({cfg.mqtt.topic_prefix}/{cfg.rig.id}/schedule)"
        else:
            slots = f"{len(cfg.slots)} slot(s)"
        print(f"{cfg.path}: valid: rig {cfg.rig.id}, {len(cfg.variants)} variant(s), {slots}")
    return EXIT_VALID
