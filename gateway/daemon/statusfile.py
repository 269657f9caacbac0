"""The status file: one schema for the daemon that writes it and `p1-gateway status` that reads it.

The daemon builds a `DaemonStatus` about once a second and writes its `to_json()`; the reader
turns whatever JSON it finds back into one with `DaemonStatus.from_json`, which reads a missing
key (a file written by an older gateway) as unknown: None, or the section's default, never an
error. A key the reader does not know (a newer gateway's) is ignored. Each port's entry is the
multiplexer's full view of its health (`PortEntry`): the public p1/R/health/V is the same less
what names the rig's host (its `port` and `last_error`), plus counters since the slot began.

Where the file is: `status_file` in gateway.config. Only the standard library is imported here,
so `p1-gateway status` stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class PortEntry(TypedDict, total=False):
    """One port's health, as the multiplexer reports it (`PortHealthSnapshot.to_dict`)."""

    variant: str
    port: str
    spec: str
    state: str
    state_age_s: float
    last_telegram_at: str | None
    last_telegram_age_s: float | None
    expected_interval_s: float
    interval_source: str
    telegrams: int
    crc_errors: int
    oversize: int
    truncated: int
    noise_bytes: int
    bytes_in: int
    reads: int
    reconnects: int
    open_failures: int
    consumer_errors: int
    jitter_ms: float | None
    jitter_p95_ms: float | None
    jitter_max_ms: float | None
    jitter_samples: int
    mean_interval_s: float | None
    error: str | None
    """Why the port is down, as a category: 'unplugged', 'disconnected', 'cannot open'."""
    last_error: str | None


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """The broker link and the publisher's queue (None: not in the file)."""

    connected: bool = False
    protocol: str | None = None
    host: str | None = None
    """As 'host:port'."""
    spooled: int | None = None
    outstanding: int | None = None
    in_flight: int | None = None
    acked: int | None = None
    set_aside: int | None = None
    dropped: int | None = None
    held_for_clock: int | None = None
    last_error: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> BrokerStatus:
        """Read the `broker` section; missing keys are unknown."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """Whether the wall clock is trusted, and whether routing waits for it."""

    synced: bool = False
    require_sync: bool | None = None

    @classmethod
    def from_json(cls, raw: object) -> ClockStatus:
        """Read the `clock` section; missing keys are unknown."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class SlotStatus:
    """Who holds the rig now, and until when (RFC 3339, as configured); None outside slots."""

    holder: str | None = None
    until: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> SlotStatus:
        """Read the `slot` section; missing keys are unknown."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class ScheduleStatus:
    """Where the slot schedule comes from ("file" or "mqtt") and, from the broker, the version
    applied, why the last one offered was refused, why the kept copy failed (None: fine)."""

    source: str | None = None
    version: int | None = None
    refused: str | None = None
    error: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> ScheduleStatus:
        """Read the `schedule` section; missing keys are unknown."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """The last reload attempt: when, whether applied, why not, what waits for a restart."""

    at: str | None = None
    ok: bool = True
    problems: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, raw: object) -> ReloadOutcome | None:
        """Read `config.last_reload`: None when there was none (null, missing or empty)."""
        if not isinstance(raw, Mapping) or not raw:
            return None
        return cls(
            at=raw.get("at"),
            ok=raw.get("ok", True),
            problems=tuple(raw.get("problems") or ()),
            restart_needed=tuple(raw.get("restart_needed") or ()),
        )


@dataclass(frozen=True, slots=True)
class ConfigStatus:
    """The config file the daemon runs (absolute path) and its last reload."""

    file: str | None = None
    last_reload: ReloadOutcome | None = None

    @classmethod
    def from_json(cls, raw: object) -> ConfigStatus:
        """Read the `config` section; missing keys are unknown."""
        data = _object(raw)
        return cls(data.get("file"), ReloadOutcome.from_json(data.get("last_reload")))


@dataclass(slots=True)
class GatewayCounters:
    """What the daemon itself counts (the parts count the rest); the `gateway` section."""

    telegrams: int = 0
    invalid_crc: int = 0
    undecodable: int = 0
    dropped_frames: int = 0
    reloads: int = 0
    reloads_refused: int = 0
    evidence_withheld: int = 0
    """Dropped frames not sent to the holder: over a port's evidence budget (a flood)."""

    def to_json(self) -> dict[str, int]:
        """The counters as a flat mapping."""
        return cast(dict[str, int], _plain(self))

    @classmethod
    def from_json(cls, raw: object) -> GatewayCounters:
        """Read the `gateway` section; a missing counter reads as 0."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class LogStatus:
    """Log lines dropped because the log sink was stuck."""

    dropped: int = 0

    @classmethod
    def from_json(cls, raw: object) -> LogStatus:
        """Read the `log` section; a missing or null count reads as 0."""
        return cls(_object(raw).get("dropped") or 0)


@dataclass(frozen=True, slots=True)
class SystemdStatus:
    """The notify datagrams: sent, refused for now (systemd not reading), dropped."""

    notify_sent: int = 0
    notify_blocked: int = 0
    notify_dropped: int = 0
    notify_last_error: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> SystemdStatus:
        """Read the `systemd` section; missing keys read as 0 or None."""
        return cls(**_fields(cls, raw))


@dataclass(frozen=True, slots=True)
class DaemonStatus:
    """The whole status file: rig, broker, clock, slot, schedule, config, counters, ports."""

    rig: str | None = None
    state: str | None = None
    """'running', or 'stopped' once the daemon has stopped."""
    pid: int | None = None
    version: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    """RFC 3339 UTC, to the second: how fresh the reading is."""
    broker: BrokerStatus = field(default_factory=BrokerStatus)
    clock: ClockStatus = field(default_factory=ClockStatus)
    slot: SlotStatus = field(default_factory=SlotStatus)
    schedule: ScheduleStatus = field(default_factory=ScheduleStatus)
    config: ConfigStatus = field(default_factory=ConfigStatus)
    gateway: GatewayCounters = field(default_factory=GatewayCounters)
    log: LogStatus = field(default_factory=LogStatus)
    systemd: SystemdStatus = field(default_factory=SystemdStatus)
    ports: Mapping[str, PortEntry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object the file holds (keys in the order of the fields)."""
        return cast(dict[str, Any], _plain(self))

    @classmethod
    def from_json(cls, raw: object) -> DaemonStatus:
        """Read a status file's JSON object; what is missing reads as unknown."""
        data = _object(raw)
        ports = _object(data.get("ports"))
        return cls(
            rig=data.get("rig"),
            state=data.get("state"),
            pid=data.get("pid"),
            version=data.get("version"),
            started_at=data.get("started_at"),
            updated_at=data.get("updated_at"),
            broker=BrokerStatus.from_json(data.get("broker")),
            clock=ClockStatus.from_json(data.get("clock")),
            slot=SlotStatus.from_json(data.get("slot")),
            schedule=ScheduleStatus.from_json(data.get("schedule")),
            config=ConfigStatus.from_json(data.get("config")),
            gateway=GatewayCounters.from_json(data.get("gateway")),
            log=LogStatus.from_json(data.get("log")),
            systemd=SystemdStatus.from_json(data.get("systemd")),
            ports={str(v): cast(PortEntry, dict(_object(e))) for v, e in ports.items()},
        )

    def summary(self, configured_ports: int) -> str:
        """One line for `systemctl status`: ports up, the broker link, a refused config."""
        up = sum(1 for port in self.ports.values() if port.get("state") == "up")
        link = "broker connected" if self.broker.connected else "broker DISCONNECTED"
        text = f"{up}/{configured_ports} ports up; {link}; {self.broker.outstanding} unacked"
        reload = self.config.last_reload
        if reload is not None and not reload.ok:
            text += "; config REFUSED (running the previous one)"
        return text


def _plain(value: Any) -> Any:
    """A dataclass as nested dicts, its other values as they are (not copied: unlike
    `dataclasses.asdict`, which deep-copies the ports' dicts, ten times slower every second)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _object(raw: object) -> Mapping[str, Any]:
    """`raw` when it is a JSON object; an empty one otherwise (a missing or null section)."""
    return raw if isinstance(raw, Mapping) else {}


def _fields(cls: type[DataclassInstance], raw: object) -> dict[str, Any]:
    """The keys of a flat section `raw` that are fields of `cls`: what to build it with (a
    missing key leaves its field's default; an unknown one is left out)."""
    data = _object(raw)
    return {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}


def write_status_file(path: Path, status: Mapping[str, Any]) -> None:
    """Replace the status file atomically (write a temporary file, then rename).

    `json.dumps` then one write (`json.dump` to a file runs the pure-Python encoder); the
    temporary file's name is fixed per process (no random name to find), and the folder is
    made only when it is missing. The file is always mode 0644, whatever the umask.
    """
    data = json.dumps(status, separators=(",", ":"), default=str).encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_status_file(path: Path) -> dict[str, Any]:
    """The file's JSON object as written; raise FileNotFoundError when it was never written."""
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def load_status(path: Path) -> DaemonStatus:
    """The daemon's last status, read by the schema; FileNotFoundError when there is none."""
    return DaemonStatus.from_json(read_status_file(path))
