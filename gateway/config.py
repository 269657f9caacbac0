"""The gateway's configuration: the TOML schema, loading, validation as a whole, and diffs.

A configuration is a main TOML file plus, optionally, a variants file and a slots file named in
it (relative to the main file's folder); variants and slots may also stand inline. With
`[schedule] source = "mqtt"` the slots come from the lab over MQTT: the slots file and inline
slots are then not read. Environment
variables with the prefix `P1GW_` override the main file's settings, nested with `__`
(`P1GW_MQTT__HOST=broker.lan`, `P1GW_CLOCK__REQUIRE_SYNC=false`). Loading either yields a
complete, frozen `GatewayConfig` or raises `ConfigError` listing every problem with its file
and field: a configuration is accepted whole or refused whole.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.errors import ConfigError, ConfigProblem
from gateway.identifiers import (
    validate_holder,
    validate_rig_id,
    validate_topic_prefix,
    validate_variant_id,
)

ENV_PREFIX = "P1GW_"

RigId = Annotated[str, AfterValidator(validate_rig_id)]
VariantId = Annotated[str, AfterValidator(validate_variant_id)]
Holder = Annotated[str, AfterValidator(validate_holder)]
TopicPrefix = Annotated[str, AfterValidator(validate_topic_prefix)]


def _known_spec_names() -> frozenset[str]:
    """The telegram specification names dsmr_parser defines, plus "auto".

    From gateway.p1's spec table: importing dsmr_parser's specifications would load
    cryptography and dlms_cosem into the daemon (~12 MB) for nothing.
    """
    from gateway.p1.specs import AUTO, SPEC_NAMES

    return frozenset((*SPEC_NAMES, AUTO))


def _check_spec(value: str) -> str:
    """Accept "auto" or a dsmr_parser telegram specification name."""
    known = _known_spec_names()
    if value not in known:
        raise ValueError(f"unknown spec {value!r}; use one of: {', '.join(sorted(known))}")
    return value


def _check_zone(value: str | None) -> str | None:
    """Accept an IANA time zone name the system knows."""
    if value is None:
        return None
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r}") from exc
    return value


def _check_aware(value: datetime) -> datetime:
    """Require a time with an offset: a slot must not depend on the machine's zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("needs an offset, e.g. 2026-11-28T08:00:00+01:00")
    return value


SpecName = Annotated[str, AfterValidator(_check_spec)]
ZoneName = Annotated[str | None, AfterValidator(_check_zone)]
AwareDatetime = Annotated[datetime, AfterValidator(_check_aware)]


class _Frozen(BaseModel):
    """Base of every config section: immutable, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RigConfig(_Frozen):
    """The rig this gateway serves."""

    id: RigId


class MqttConfig(_Frozen):
    """How to reach the broker."""

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    topic_prefix: TopicPrefix = "p1"
    qos: int = Field(default=1, ge=0, le=2)  # not Literal: a P1GW_MQTT__QOS=1 string must do
    client_id: str | None = None
    keepalive: int = Field(default=30, ge=5, le=3600)


class SpoolConfig(_Frozen):
    """Where messages wait until the broker acknowledges them."""

    dir: Path = Path("/var/lib/p1-gateway")
    max_mb: int = Field(default=256, ge=1)
    batch_interval: float = Field(default=1.0, gt=0, le=10)


class ClockConfig(_Frozen):
    """Clock trust: route to holders only while the wall clock is synchronised."""

    require_sync: bool = True


#: Where the slot schedule comes from: the slots file (and inline slots), or the lab over MQTT.
ScheduleSource = Literal["file", "mqtt"]


class ScheduleConfig(_Frozen):
    """Where the slot schedule comes from (a restart applies a change)."""

    source: ScheduleSource = "file"
    """"file": the slots file and inline slots; "mqtt": the lab's `p1/R/schedule` (retained),
    kept on disk in the spool's folder."""


#: How long a frame may go without a byte before it is cut short as truncated (seconds).
DEFAULT_TRUNCATE_AFTER_S = 1.0


class FramingConfig(_Frozen):
    """How frames are cut from each port's bytes (a variant may set its own)."""

    truncate_after_s: float = Field(default=DEFAULT_TRUNCATE_AFTER_S, gt=0, le=60)
    """A frame that gets no byte for this long is cut short: evidence as 'truncated'."""


class LogConfig(_Frozen):
    """How the daemon logs."""

    format: Literal["auto", "console", "json", "journal"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class _StatusSection(_Frozen):
    """The `[status]` table as written: `file` may be left out (see `status_file`)."""

    file: Path | None = None
    interval: float = Field(default=1.0, gt=0, le=60)


class StatusConfig(_Frozen):
    """Where the daemon keeps its live status for `p1-gateway status`, and how often.

    `file` is always set: the `[status] file` of the config, else `default_status_file`.
    """

    file: Path
    interval: float


STATUS_FILE_NAME = "status.json"


def default_status_file(config_path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The status file of a config that names none: under systemd `status.json` in
    `$RUNTIME_DIRECTORY` (the first of its colon-separated paths), else `NAME.status.json`
    beside the config file `NAME.toml`: a run by hand never touches the service's file."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / STATUS_FILE_NAME
    path = Path(config_path).absolute()
    return path.with_name(f"{path.stem}.{STATUS_FILE_NAME}")


def status_file(
    config_path: Path, configured: Path | None, environ: Mapping[str, str] | None = None
) -> Path:
    """The status file for the config at `config_path`, as `run` writes it and `status` reads
    it: the configured `[status] file` (relative to the config's folder), else the default."""
    if configured is None:
        return default_status_file(config_path, environ)
    return Path(config_path).absolute().parent / configured  # an absolute one stays as it is


class VariantConfig(_Frozen):
    """One meter variant on the rig and the port it is read from."""

    id: VariantId
    port: str = Field(min_length=1)
    spec: SpecName = "auto"
    baudrate: int | None = Field(default=None, gt=0)
    bytesize: Literal[7, 8] | None = None
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    request_line: Literal["rts", "dtr"] | None = None
    zone: ZoneName = None
    model: str | None = None
    description: str | None = None
    truncate_after_s: float | None = Field(default=None, gt=0, le=60)
    """None: `[framing] truncate_after_s`."""


class SlotConfig(_Frozen):
    """A test slot: the holder receives the telegrams received in [start, end)."""

    holder: Holder
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _start_before_end(self) -> SlotConfig:
        """A slot must start before it ends."""
        if self.start >= self.end:
            raise ValueError(f"start {self.start.isoformat()} is not before end")
        return self


class EnvFirstSettings(BaseSettings):
    """Settings read from a file's data with environment overrides on top (the subclass's
    `env_prefix`: `P1GW_` for the gateway, `P1LAB_` for the lab)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, so the prefixed variables override the file."""
        return env_settings, init_settings


class _MainFile(EnvFirstSettings):
    """The main file's settings, with `P1GW_` environment overrides on top."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    rig: RigConfig
    mqtt: MqttConfig = MqttConfig()
    spool: SpoolConfig = SpoolConfig()
    clock: ClockConfig = ClockConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    framing: FramingConfig = FramingConfig()
    log: LogConfig = LogConfig()
    status: _StatusSection = _StatusSection()
    variants_file: Path | None = None
    slots_file: Path | None = None


class _StatusOnly(EnvFirstSettings):
    """The main file's `[status]` table alone, with `P1GW_STATUS__` overrides on top."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    status: _StatusSection = _StatusSection()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A whole, validated configuration and the files it came from."""

    path: Path
    rig: RigConfig
    mqtt: MqttConfig
    spool: SpoolConfig
    clock: ClockConfig
    log: LogConfig
    status: StatusConfig
    variants: tuple[VariantConfig, ...]
    slots: tuple[SlotConfig, ...]
    variants_file: Path | None
    slots_file: Path | None
    """The slots file read (None: none named, or the schedule comes from the broker)."""
    framing: FramingConfig = field(default_factory=FramingConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    @property
    def watched_files(self) -> tuple[Path, ...]:
        """The files whose change should trigger a reload."""
        files = [self.path, self.variants_file, self.slots_file]
        return tuple(dict.fromkeys(f for f in files if f is not None))

    def variant(self, variant_id: str) -> VariantConfig:
        """The variant with this id."""
        for v in self.variants:
            if v.id == variant_id:
                return v
        raise KeyError(variant_id)

    def mqtt_password(self) -> str | None:
        """The MQTT password: the first line of `mqtt.password_file`, if one is set."""
        if self.mqtt.password_file is None:
            return None
        with self.mqtt.password_file.open(encoding="utf-8") as fh:
            return fh.readline().rstrip("\r\n")


@dataclass(frozen=True, slots=True)
class VariantDiff:
    """How a new variant set differs from the running one, by variant id."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    unchanged: tuple[str, ...]

    @property
    def empty(self) -> bool:
        """True when nothing is added, removed or changed."""
        return not (self.added or self.removed or self.changed)


def diff_variants(old: Iterable[VariantConfig], new: Iterable[VariantConfig]) -> VariantDiff:
    """Compare two variant sets: which ids are added, removed, changed or untouched."""
    before = {v.id: v for v in old}
    after = {v.id: v for v in new}
    return VariantDiff(
        added=tuple(i for i in after if i not in before),
        removed=tuple(i for i in before if i not in after),
        changed=tuple(i for i in after if i in before and after[i] != before[i]),
        unchanged=tuple(i for i in after if i in before and after[i] == before[i]),
    )


# --- loading ------------------------------------------------------------------------------


def _field_name(loc: Sequence[int | str]) -> str:
    """Render a pydantic error location as `mqtt.port` or `variant[2].spec`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _problems(
    error: ValidationError, file: str, prefix: Sequence[int | str] = ()
) -> list[ConfigProblem]:
    """One ConfigProblem per pydantic error, naming the file and the field."""
    problems = []
    for item in error.errors(include_url=False):
        loc = (*prefix, *item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(ConfigProblem(file, _field_name(loc), message))
    return problems


def _read_toml(path: Path, problems: list[ConfigProblem]) -> dict[str, Any] | None:
    """Parse one TOML file, recording a problem instead of raising."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        problems.append(ConfigProblem(str(path), "(file)", "no such file"))
    except PermissionError:
        problems.append(ConfigProblem(str(path), "(file)", "permission denied"))
    except IsADirectoryError:
        problems.append(ConfigProblem(str(path), "(file)", "is a directory"))
    except tomllib.TOMLDecodeError as exc:
        problems.append(ConfigProblem(str(path), "(syntax)", str(exc)))
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem(str(path), "(syntax)", f"not UTF-8: {exc}"))
    return None


_VARIANTS = TypeAdapter(list[VariantConfig])
_SLOTS = TypeAdapter(list[SlotConfig])


def _list_section(
    data: Mapping[str, Any], key: str, file: str, problems: list[ConfigProblem]
) -> list[Any]:
    """The `[[key]]` array of tables of a parsed file (empty when absent)."""
    value = data.get(key, [])
    if not isinstance(value, list):
        problems.append(ConfigProblem(file, key, f"must be an array of tables ([[{key}]])"))
        return []
    return value


def _validate_list(
    adapter: TypeAdapter[Any], items: list[Any], key: str, file: str, problems: list[ConfigProblem]
) -> list[Any]:
    """Validate one file's `[[key]]` entries, recording problems with their index."""
    try:
        return list(adapter.validate_python(items))
    except ValidationError as exc:
        problems.extend(_problems(exc, file, (key,)))
        return []


_FILE_KEYS = ("variants_file", "slots_file")


def _hoist_file_keys(data: dict[str, Any], file: str, problems: list[ConfigProblem]) -> None:
    """Move `variants_file` / `slots_file` written after a [table] up to the top level.

    TOML puts keys that follow a table header into that table, so the contract's layout
    (the two keys at the end of the file, after `[clock]`) lands them in `clock`. Both places
    mean the same to a person, so both are accepted.
    """
    for section, table in list(data.items()):
        if not isinstance(table, dict):
            continue
        for key in _FILE_KEYS:
            if key not in table:
                continue
            value = table.pop(key)
            if key in data and data[key] != value:
                problems.append(ConfigProblem(file, f"{section}.{key}", f"conflicts with {key}"))
            else:
                data[key] = value


def _path_setting(main: _MainFile | None, data: Mapping[str, Any], key: str) -> Path | None:
    """A file setting from the validated settings, or from the raw file if those failed."""
    if main is not None:
        value: Path | None = getattr(main, key)
        return value
    raw = data.get(key)
    return Path(raw) if isinstance(raw, str) and raw else None


def _resolve(base: Path, value: Path | None) -> Path | None:
    """A path from the config, relative to the main file's folder."""
    if value is None:
        return None
    return value if value.is_absolute() else (base / value)


def _check_file_readable(
    path: Path | None, file: str, field: str, problems: list[ConfigProblem]
) -> None:
    """Record a problem when a file the daemon will read is missing or unreadable."""
    if path is None:
        return
    if not path.is_file():
        problems.append(ConfigProblem(file, field, f"{path}: no such file"))
    elif not os.access(path, os.R_OK):
        problems.append(ConfigProblem(file, field, f"{path}: not readable"))


def _check_unique_ids(
    entries: list[tuple[str, int, VariantConfig]], problems: list[ConfigProblem]
) -> None:
    """Variant ids, and the ports they read, must be unique on the rig."""
    seen_id: dict[str, str] = {}
    seen_port: dict[str, str] = {}
    for file, index, variant in entries:
        where = f"variant[{index}]"
        if variant.id in seen_id:
            problems.append(
                ConfigProblem(
                    file, f"{where}.id", f"{variant.id!r} already used in {seen_id[variant.id]}"
                )
            )
        else:
            seen_id[variant.id] = f"{file} {where}"
        if variant.port in seen_port:
            problems.append(
                ConfigProblem(
                    file,
                    f"{where}.port",
                    f"{variant.port!r} already read by {seen_port[variant.port]}",
                )
            )
        else:
            seen_port[variant.port] = f"{file} {where}"


def _check_no_overlap(
    entries: list[tuple[str, int, SlotConfig]], problems: list[ConfigProblem]
) -> None:
    """Slots may not overlap: at any instant at most one tester holds the rig."""
    ordered = sorted(entries, key=lambda e: e[2].start)
    for (f1, i1, a), (f2, i2, b) in itertools.pairwise(ordered):
        if b.start < a.end:
            problems.append(
                ConfigProblem(
                    f2,
                    f"slot[{i2}]",
                    f"overlaps {f1} slot[{i1}] "
                    f"({a.holder}, {a.start.isoformat()} to {a.end.isoformat()})",
                )
            )


def _env_overrides(environ: Mapping[str, str]) -> list[str]:
    """The `P1GW_` variables present, for error messages."""
    return sorted(k for k in environ if k.startswith(ENV_PREFIX))


def load_config(
    path: str | os.PathLike[str], *, schedule_source: ScheduleSource | None = None
) -> GatewayConfig:
    """Load and validate a whole configuration; raise ConfigError listing every problem.

    `schedule_source` overrides `[schedule] source` for what is read (a running daemon keeps
    its own until a restart): with "mqtt" no slots are read, neither the slots file nor
    inline ones."""
    main_path = Path(path).absolute()
    base = main_path.parent
    main_file = str(main_path)
    problems: list[ConfigProblem] = []
    data = _read_toml(main_path, problems)
    if data is None:
        raise ConfigError(problems)

    _hoist_file_keys(data, main_file, problems)
    inline_variants = _list_section(data, "variant", main_file, problems)
    inline_slots = _list_section(data, "slot", main_file, problems)
    settings_data = {k: v for k, v in data.items() if k not in ("variant", "slot")}

    main: _MainFile | None = None
    try:
        main = _MainFile(**settings_data)
    except ValidationError as exc:
        problems.extend(_problems(exc, main_file))
        overrides = _env_overrides(os.environ)
        if overrides:
            problems.append(
                ConfigProblem("environment", ", ".join(overrides), "these overrides were applied")
            )
    except SettingsError as exc:  # an environment value pydantic-settings cannot parse
        problems.append(
            ConfigProblem("environment", ", ".join(_env_overrides(os.environ)), str(exc))
        )

    source = schedule_source or (main.schedule.source if main is not None else "file")
    from_broker = source == "mqtt"  # the schedule comes from the broker: no slots are read
    if from_broker:
        inline_slots = []
    variant_entries: list[tuple[str, int, VariantConfig]] = []
    slot_entries: list[tuple[str, int, SlotConfig]] = []
    sources: list[tuple[str, Mapping[str, Any]]] = [
        (main_file, {"variant": inline_variants, "slot": inline_slots})
    ]

    # Check the included files even when the main settings are invalid: report everything.
    variants_file = _resolve(base, _path_setting(main, settings_data, "variants_file"))
    slots_file = _resolve(base, _path_setting(main, settings_data, "slots_file"))
    if from_broker:
        slots_file = None
    for extra in dict.fromkeys(f for f in (variants_file, slots_file) if f is not None):
        extra_data = _read_toml(extra, problems)
        if extra_data is None:
            continue
        allowed = set()
        if extra == variants_file:
            allowed.add("variant")
        if extra == slots_file:
            allowed.add("slot")
        for key in extra_data:
            if key not in allowed:
                problems.append(ConfigProblem(str(extra), key, "unknown setting in this file"))
        sources.append(
            (str(extra), {k: _list_section(extra_data, k, str(extra), problems) for k in allowed})
        )

    for file, section in sources:
        for index, v in enumerate(
            _validate_list(_VARIANTS, list(section.get("variant", [])), "variant", file, problems)
        ):
            variant_entries.append((file, index, v))
        for index, s in enumerate(
            _validate_list(_SLOTS, list(section.get("slot", [])), "slot", file, problems)
        ):
            slot_entries.append((file, index, s))

    _check_unique_ids(variant_entries, problems)
    _check_no_overlap(slot_entries, problems)
    if main is not None:
        _check_file_readable(
            _resolve(base, main.mqtt.password_file), main_file, "mqtt.password_file", problems
        )
        _check_file_readable(
            _resolve(base, main.mqtt.tls_ca_file), main_file, "mqtt.tls_ca_file", problems
        )

    if problems or main is None:
        raise ConfigError(problems)

    mqtt = main.mqtt.model_copy(
        update={
            "password_file": _resolve(base, main.mqtt.password_file),
            "tls_ca_file": _resolve(base, main.mqtt.tls_ca_file),
        }
    )
    spool = main.spool.model_copy(update={"dir": _resolve(base, main.spool.dir)})
    status = StatusConfig(
        file=status_file(main_path, main.status.file), interval=main.status.interval
    )
    return GatewayConfig(
        path=main_path,
        rig=main.rig,
        mqtt=mqtt,
        spool=spool,
        clock=main.clock,
        log=main.log,
        status=status,
        variants=tuple(v for _, _, v in variant_entries),
        slots=tuple(sorted((s for _, _, s in slot_entries), key=lambda s: s.start)),
        variants_file=variants_file,
        slots_file=slots_file,
        framing=main.framing,
        schedule=main.schedule,
    )


def load_status_config(path: str | os.PathLike[str]) -> StatusConfig:
    """Only the `[status]` settings of a main file, resolved as `load_config` resolves them,
    for `p1-gateway status`: no password, variants or slots file is read, and the rest of the
    main file may be invalid. Raise ConfigError when the file or its `[status]` is unusable."""
    main_path = Path(path).absolute()
    main_file = str(main_path)
    problems: list[ConfigProblem] = []
    data = _read_toml(main_path, problems)
    if data is None:
        raise ConfigError(problems)
    _hoist_file_keys(data, main_file, [])  # keys written after [status] are top-level ones
    try:
        section = _StatusOnly(status=data.get("status", {})).status
    except ValidationError as exc:
        raise ConfigError(_problems(exc, main_file)) from None
    except SettingsError as exc:
        overrides = ", ".join(_env_overrides(os.environ))
        raise ConfigError([ConfigProblem("environment", overrides, str(exc))]) from None
    return StatusConfig(file=status_file(main_path, section.file), interval=section.interval)
