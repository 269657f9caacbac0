"""`p1-gateway run --config FILE`: the daemon in the foreground, as systemd runs it.

Loads the config (refused whole: exit 2), starts the `Gateway`, turns SIGTERM/SIGINT into a
stop and SIGHUP into a reload, serves until stopped, and stops within `STOP_BUDGET_S`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import structlog

from gateway.config import load_config
from gateway.daemon.logs import configure_logging, flush_logs
from gateway.daemon.notify import Notifier
from gateway.daemon.service import Gateway
from gateway.errors import ConfigError, GatewayError

log = structlog.get_logger("p1-gateway")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_CONFIG = 2

#: SIGTERM to exit: the whole stop, the last log lines included, fits in this (systemd's
#: TimeoutStopSec is 10 s; a tester's "offline" status and the last batch come first).
STOP_BUDGET_S = 4.5


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare run's arguments."""
    parser.add_argument("--config", required=True, help="the main TOML file")


def _install_signals(gateway: Gateway) -> None:
    """SIGTERM/SIGINT stop the daemon; SIGHUP reloads its config."""

    def stop(_signum: int, _frame: FrameType | None) -> None:
        gateway.request_stop()

    def reload(_signum: int, _frame: FrameType | None) -> None:
        gateway.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def run(config_path: str | Path) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; return the exit code."""
    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("p1-gateway: invalid configuration; not started", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(cfg.log.format, cfg.log.level)
    notifier = Notifier()
    gateway: Gateway | None = None
    try:
        gateway = Gateway(cfg, notifier)
        _install_signals(gateway)
        gateway.start()
    except (GatewayError, OSError) as exc:  # a spool folder we may not write, a lost file...
        log.error("cannot start", error=str(exc))
        notifier.status(f"cannot start: {exc}")
        if gateway is not None:
            with contextlib.suppress(Exception):  # release what did start, then report
                gateway.stop(timeout=2.0)
        return EXIT_FATAL
    try:
        gateway.serve()
    finally:
        stop_began = time.monotonic()
        gateway.stop(timeout=STOP_BUDGET_S - 0.6)
        flush_logs(max(0.0, STOP_BUDGET_S - (time.monotonic() - stop_began)))
        notifier.close()
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    """`p1-gateway run --config FILE`."""
    return run(args.config)
