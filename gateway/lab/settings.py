"""LAB.toml: the lab's settings (`[lab]` and `[mqtt]`), validated whole, as gateway/config.py does.

Environment variables with the prefix `P1LAB_` override the file, nested with `__`
(`P1LAB_MQTT__HOST=central.lan`). Paths are relative to the file's folder. Loading yields a
frozen `LabSettings` or raises `ConfigError` naming the file and field of every problem.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from gateway.config import EnvFirstSettings, RigId, TopicPrefix, ZoneName
from gateway.errors import ConfigError, ConfigProblem

ENV_PREFIX = "P1LAB_"
#: The rig id the lab's own notices use (`p1/lab/notice/ID`): never a rig.
RESERVED_RIG = "lab"


class _Frozen(BaseModel):
    """Base of every section: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class LabSection(_Frozen):
    """`[lab]`: the store, the zone, the rigs and the booking rules' numbers."""

    db: Path = Path("/var/lib/p1-lab/lab.sqlite")
    zone: ZoneName = "Europe/Brussels"
    rigs: tuple[RigId, ...] = ()
    slot_hours: float = Field(default=22, gt=0, le=24)
    turnover_hours: float = Field(default=2, ge=0, lt=24)
    notice_days: float = Field(default=7, ge=0, le=3660)

    @field_validator("rigs")
    @classmethod
    def _rigs_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each rig once, and never the reserved id `lab`."""
        if RESERVED_RIG in value:
            raise ValueError(f"{RESERVED_RIG!r} is reserved (the lab's own notices)")
        if len(set(value)) != len(value):
            raise ValueError("a rig is listed twice")
        return value


class LabMqtt(_Frozen):
    """`[mqtt]`: the central broker, reached as the dynamic security plugin's admin."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str = Field(min_length=1)
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    topic_prefix: TopicPrefix = "p1"
    timeout: float = Field(default=10, gt=0, le=300)


class _LabFile(EnvFirstSettings):
    """The whole file, with `P1LAB_` environment overrides on top."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    lab: LabSection = LabSection()
    mqtt: LabMqtt


@dataclass(frozen=True, slots=True)
class LabSettings:
    """A whole, validated LAB.toml with its paths resolved."""

    path: Path
    lab: LabSection
    mqtt: LabMqtt

    @property
    def zone(self) -> ZoneInfo:
        """The lab's time zone: how times without an offset are read, and local days."""
        return ZoneInfo(self.lab.zone or "Europe/Brussels")

    def mqtt_password(self) -> str | None:
        """The planner's password: the first line of `mqtt.password_file`, if one is set."""
        if self.mqtt.password_file is None:
            return None
        try:
            with self.mqtt.password_file.open(encoding="utf-8") as fh:
                return fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                [ConfigProblem(str(self.path), "mqtt.password_file", str(exc))]
            ) from None


def _field(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as `lab.rigs[1]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + part
    return out or "(top level)"


def _read(path: Path) -> dict[str, Any]:
    """The parsed TOML file, or ConfigError saying why it cannot be read."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([ConfigProblem(str(path), "(file)", reason.lower())]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), "(syntax)", str(exc))]) from None


def load_lab_settings(path: str | os.PathLike[str]) -> LabSettings:
    """Load and validate LAB.toml whole; raise ConfigError listing every problem."""
    file_path = Path(path).absolute()
    name = str(file_path)
    data = _read(file_path)
    try:
        parsed = _LabFile(**data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors(include_url=False):
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown setting"
            problems.append(ConfigProblem(name, _field(tuple(item["loc"])), message))
        raise ConfigError(problems) from None
    except SettingsError as exc:
        env = ", ".join(sorted(k for k in os.environ if k.startswith(ENV_PREFIX)))
        raise ConfigError([ConfigProblem("environment", env, str(exc))]) from None
    base = file_path.parent

    def resolve(value: Path | None) -> Path | None:
        return None if value is None else base / value  # an absolute one stays as it is

    mqtt = parsed.mqtt.model_copy(
        update={
            "password_file": resolve(parsed.mqtt.password_file),
            "tls_ca_file": resolve(parsed.mqtt.tls_ca_file),
        }
    )
    lab = parsed.lab.model_copy(update={"db": resolve(parsed.lab.db)})
    problems = []
    for key, value in (("password_file", mqtt.password_file), ("tls_ca_file", mqtt.tls_ca_file)):
        if value is not None and not (value.is_file() and os.access(value, os.R_OK)):
            problems.append(ConfigProblem(name, f"mqtt.{key}", f"{value}: not a readable file"))
    if problems:
        raise ConfigError(problems)
    return LabSettings(path=file_path, lab=lab, mqtt=mqtt)
