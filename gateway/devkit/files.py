"""A gateway's configuration files for a private set-up (tests, the demo, the benchmarks)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

Slot = tuple[str, datetime, datetime]


def slots_toml(slots: Iterable[Slot]) -> str:
    """`[[slot]]` entries for (holder, start, end) triples."""
    return "".join(
        f'[[slot]]\nholder = "{holder}"\nstart = {start.isoformat()}\nend = {end.isoformat()}\n\n'
        for holder, start, end in slots
    )


def write_gateway_files(
    folder: Path,
    *,
    rig: str,
    broker_host: str,
    broker_port: int,
    password: str,
    variants_toml: str,
    slots: Iterable[Slot],
    spool_batch_interval: float | None = None,
    status_interval: float | None = None,
    log_format: str = "json",
    log_level: str = "info",
    comment: str = "a private gateway set-up",
    schedule_source: str = "file",
) -> Path:
    """Write gateway.toml, variants.toml, slots.toml and mqtt.pass in `folder`; return the
    main file. The clock is not required to be synchronised: a container's may never say so.
    `schedule_source` "mqtt": the schedule comes from the lab (slots.toml is then not read)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mqtt.pass").write_text(password + "\n")
    (folder / "variants.toml").write_text(variants_toml)
    (folder / "slots.toml").write_text(slots_toml(slots))
    batch = "" if spool_batch_interval is None else f"batch_interval = {spool_batch_interval}\n"
    interval = "" if status_interval is None else f"interval = {status_interval}\n"
    config = folder / "gateway.toml"
    config.write_text(
        f"""# {comment}
variants_file = "variants.toml"
slots_file = "slots.toml"

[rig]
id = "{rig}"

[mqtt]
host = "{broker_host}"
port = {broker_port}
username = "{rig}"
password_file = "mqtt.pass"

[spool]
dir = "spool"
{batch}
[clock]
require_sync = false

[schedule]
source = "{schedule_source}"

[status]
file = "run/status.json"
{interval}
[log]
format = "{log_format}"
level = "{log_level}"
"""
    )
    return config
