"""`p1-gateway status`: a live terminal table of every port's health and the rig's state.

The daemon rewrites a small JSON status file about once a second (where: `status_file` in
gateway.config; the service's is /run/p1-gateway/status.json, on tmpfs); this command reads
it, so it needs no broker credentials, no password file, and works while the broker is down.
The file's schema is `gateway.daemon.statusfile`'s, shared with the daemon that writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from gateway.config import load_status_config
from gateway.daemon.statusfile import DaemonStatus, load_status, read_status_file
from gateway.errors import ConfigError

STALE_AFTER_S = 5.0

#: The service's status file: `$RUNTIME_DIRECTORY/status.json` with the unit's
#: `RuntimeDirectory=p1-gateway`. A technician's shell has no `$RUNTIME_DIRECTORY`.
SERVICE_STATUS_FILE = Path("/run/p1-gateway/status.json")

_STATE_COLOURS = {"up": "32", "silent": "33", "down": "31"}


def _age(timestamp: str | None, now: datetime) -> str:
    """How long ago an RFC 3339 time was, compactly ('3s', '4m', '2h', '-')."""
    if not timestamp:
        return "-"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    seconds = (now - then).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _paint(text: str, state: str, colour: bool) -> str:
    """Colour a state word for a terminal."""
    code = _STATE_COLOURS.get(state)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


def render(status: DaemonStatus, *, now: datetime | None = None, colour: bool = False) -> str:
    """The status as a table a technician reads at a glance."""
    now = now or datetime.now(UTC)
    lines = []
    age = _age(status.updated_at, now)
    try:
        updated = datetime.fromisoformat(str(status.updated_at or "").replace("Z", "+00:00"))
        stale = (now - updated).total_seconds() > STALE_AFTER_S
    except ValueError:
        stale = True
    broker, clock, slot = status.broker, status.clock, status.slot
    head = f"rig {_known(status.rig, '?')}  pid {_known(status.pid, '?')}  updated {age} ago"
    if stale:
        head += "  ** STALE: is the daemon running? **"
    lines.append(head)
    lines.append(
        f"broker {'connected' if broker.connected else 'DISCONNECTED'}"
        f"  spooled {_known(broker.spooled)}  in-flight {_known(broker.in_flight)}"
        f"  acked {_known(broker.acked)}  set aside {_known(broker.set_aside)}"
        f"  dropped {_known(broker.dropped)}"
    )
    lines.append(
        f"clock {'synchronised' if clock.synced else 'NOT SYNCHRONISED (routing held)'}"
        f"  slot {slot.holder + ' until ' + str(slot.until) if slot.holder else '(none)'}"
    )
    schedule = _schedule_line(status)
    if schedule:
        lines.append(schedule)
    if status.log.dropped:
        lines.append(f"log {status.log.dropped} lines DROPPED (the log sink was stuck)")
    reload = status.config.last_reload
    if reload is not None and not reload.ok:
        lines.append("config REFUSED at " + str(reload.at) + ": still running the old one")
        lines.extend("  " + str(p) for p in reload.problems)
    header = (
        "PORT",
        "STATE",
        "LAST",
        "TELEGRAMS",
        "CRC-ERR",
        "OVERSIZE",
        "NOISE-B",
        "RECONN",
        "JITTER",
    )
    rows = [header]
    for variant, h in sorted(status.ports.items()):
        jitter = h.get("jitter_ms")
        rows.append(
            (
                variant,
                str(h.get("state", "?")),
                _age(h.get("last_telegram_at"), now),
                str(h.get("telegrams", 0)),
                str(h.get("crc_errors", 0)),
                str(h.get("oversize", 0)),
                str(h.get("noise_bytes", 0)),
                str(h.get("reconnects", 0)),
                "-" if jitter is None else f"{float(jitter):.0f}ms",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        if n:
            cells[1] = _paint(cells[1], row[1], colour)
        lines.append("  ".join(cells).rstrip())
    if not status.ports:
        lines.append("(no ports configured)")
    return "\n".join(lines)


def _schedule_line(status: DaemonStatus) -> str | None:
    """Where the schedule comes from and, from the broker, the version applied and what went
    wrong; None for a file written before the schedule section."""
    schedule = status.schedule
    if schedule.source is None:
        return None
    if schedule.source != "mqtt":
        return f"schedule from the slots file ({schedule.source})"
    version = "none yet" if schedule.version is None else f"version {schedule.version}"
    line = f"schedule from the broker (mqtt): {version} applied"
    if schedule.refused:
        line += f"; last offered REFUSED: {schedule.refused}"
    if schedule.error:
        line += f"; kept copy FAILED: {schedule.error}"
    return line


def _known(value: object, unknown: str = "-") -> str:
    """A value for the table; `unknown` for one the file did not have."""
    return unknown if value is None else str(value)


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare status's arguments."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the daemon's main TOML file (finds its status file)")
    where.add_argument("--file", help="the status file itself")
    parser.add_argument("--once", action="store_true", help="print once and exit")
    parser.add_argument("--json", action="store_true", help="print the raw status JSON once")
    parser.add_argument("--interval", type=float, default=1.0, help="refresh period, seconds")


def written_for(path: Path, config: Path) -> bool:
    """Whether the status file at `path` was written by a daemon run with the config `config`."""
    try:
        file = load_status(path).config.file
    except (OSError, ValueError):
        return False
    if not file:
        return False
    written = Path(str(file))
    if written == config.absolute():
        return True
    try:
        return written.samefile(config)
    except OSError:
        return False


def find_status_file(config: Path, service_file: Path = SERVICE_STATUS_FILE) -> Path:
    """The status file of the daemon run with `config`: where `run --config` writes it, or,
    seen from outside the service, the service's own file when it was written for this same
    config (the fresher of the two when both are). The config need not be valid, nor readable
    when the service's file answers."""
    try:
        path = load_status_config(config).file
    except ConfigError:
        if written_for(service_file, config):
            return service_file
        raise
    if path == service_file or not written_for(service_file, config):
        return path
    return max((service_file, path), key=_mtime)


def _mtime(path: Path) -> float:
    """A file's modification time; -1 when it is missing."""
    try:
        return path.stat().st_mtime
    except OSError:
        return -1.0


def _status_path(args: argparse.Namespace) -> Path:
    """The status file named on the command line or found from the config."""
    if args.file:
        return Path(args.file)
    return find_status_file(Path(args.config))


def _show(path: Path, out: TextIO, colour: bool) -> int:
    """Print the status once; return 0, or 1 when there is none to print."""
    try:
        print(render(load_status(path), colour=colour), file=out)
    except FileNotFoundError:
        print(f"no status at {path}: is p1-gateway running?", file=out)
        return 1
    except (json.JSONDecodeError, OSError) as exc:
        print(f"cannot read {path}: {exc}", file=out)
        return 1
    return 0


def main(args: argparse.Namespace) -> int:
    """Show the status: once, as JSON, or live until Ctrl-C."""
    try:
        path = _status_path(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        try:
            print(json.dumps(read_status_file(path), indent=2))
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            print(f"no status at {path}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.once or not sys.stdout.isatty():
        return _show(path, sys.stdout, colour=False)
    try:
        while True:
            sys.stdout.write("\x1b[H\x1b[2J")
            _show(path, sys.stdout, colour=True)
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
