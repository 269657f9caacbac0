"""The config mapped onto the parts: what the multiplexer and the publisher are built from.

Pure functions of a validated `GatewayConfig` (only `publisher_settings` reads a file: the
broker password's); the daemon calls them at start and on every reload.
"""

from __future__ import annotations

from typing import Any

from gateway.config import FramingConfig, GatewayConfig, VariantConfig
from gateway.mux import PortConfig
from gateway.publish import (
    MqttSettings,
    PublisherSettings,
    Slot,
    SlotSchedule,
    SpoolSettings,
)

#: Settings only a restart applies (the ports and slots are applied live).
RESTART_SECTIONS = ("rig", "mqtt", "spool", "clock", "status", "schedule")


def port_config(variant: VariantConfig, framing: FramingConfig | None = None) -> PortConfig:
    """The multiplexer's view of a configured variant (`framing`: the config's defaults)."""
    truncate_after_s = variant.truncate_after_s
    if truncate_after_s is None:
        truncate_after_s = (framing or FramingConfig()).truncate_after_s
    return PortConfig(
        variant=variant.id,
        url=variant.port,
        spec=variant.spec,
        baudrate=variant.baudrate,
        bytesize=variant.bytesize,
        parity=variant.parity,
        stopbits=variant.stopbits,
        request_line=variant.request_line,
        truncate_after_s=truncate_after_s,
    )


def port_configs(cfg: GatewayConfig) -> list[PortConfig]:
    """The multiplexer's view of every configured variant."""
    return [port_config(v, cfg.framing) for v in cfg.variants]


def schedule_of(cfg: GatewayConfig) -> SlotSchedule:
    """The publisher's slot schedule for a config."""
    return SlotSchedule(Slot(s.holder, s.start, s.end) for s in cfg.slots)


def publisher_settings(cfg: GatewayConfig) -> PublisherSettings:
    """The publisher's settings for a config (reads the password file)."""
    m = cfg.mqtt
    return PublisherSettings(
        rig=cfg.rig.id,
        mqtt=MqttSettings(
            host=m.host,
            port=m.port,
            username=m.username,
            password=cfg.mqtt_password(),
            tls_ca_file=m.tls_ca_file,
            topic_prefix=m.topic_prefix,
            qos=m.qos,
            client_id=m.client_id,
            keepalive=m.keepalive,
        ),
        spool=SpoolSettings(
            dir=cfg.spool.dir,
            max_bytes=cfg.spool.max_mb * 1024 * 1024,
            batch_interval=cfg.spool.batch_interval,
        ),
        require_sync=cfg.clock.require_sync,
        end_lag=end_lag(cfg),
    )


def end_lag(cfg: GatewayConfig) -> float:
    """How long after a slot's end its `end` marker waits: 2 s, or longer when a variant's
    frame may be judged cut only later (its quiet-line limit, plus the reader's 1 s tick)."""
    quiet = [port_config(v, cfg.framing).truncate_after_s for v in cfg.variants]
    return max([2.0, *(q + 1.5 for q in quiet)])


def catalogue_of(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """The retained variant catalogue: id, spec, serial profile and model details."""
    entries = []
    for v in cfg.variants:
        profile = port_config(v).profile
        entries.append(
            {
                "id": v.id,
                "spec": v.spec,
                "serial": str(profile),
                "model": v.model,
                "description": v.description,
            }
        )
    return entries


def restart_only_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The sections whose change a reload cannot apply (they need a restart)."""
    return [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
