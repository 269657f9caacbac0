"""The running daemon without its threads: what a reload applies, the catalogue, the status
it reports, and what wakes its main loop."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import gateway.daemon.service as service
from gateway.config import GatewayConfig, load_config
from gateway.daemon.adapters import (
    catalogue_of,
    end_lag,
    port_config,
    port_configs,
    restart_only_changes,
)
from gateway.daemon.statusfile import DaemonStatus, SlotStatus
from gateway.mux import PortUp
from gateway.publish.mqtt import Inbound
from tests.support.mosquitto import wait_until


def write(tmp_path: Path, mqtt_port: int = 1883, spec: str = "V5", extra: str = "") -> Path:
    """A minimal config; return its path."""
    path = tmp_path / "g.toml"
    path.write_text(
        f'[rig]\nid = "rig-a"\n[mqtt]\nport = {mqtt_port}\n[spool]\ndir = "s"\n'
        f'[[variant]]\nid = "m1"\nport = "/dev/ttyUSB0"\nspec = "{spec}"\nmodel = "T211"\n' + extra
    )
    return path


def slot(holder: str, start: datetime, end: datetime) -> str:
    """A `[[slot]]` table."""
    return f'[[slot]]\nholder = "{holder}"\nstart = {start.isoformat()}\nend = {end.isoformat()}\n'


def test_a_slot_end_waits_for_frames_judged_cut_later(tmp_path: Path) -> None:
    """The `end` marker waits past a variant's quiet-line limit plus the reader's tick."""
    assert end_lag(load_config(write(tmp_path))) == 2.5
    slow = '[[variant]]\nid = "m2"\nport = "/dev/ttyUSB1"\ntruncate_after_s = 10\n'
    assert end_lag(load_config(write(tmp_path, extra=slow))) == 11.5


def test_reload_names_settings_that_need_a_restart(tmp_path: Path) -> None:
    """A changed broker port needs a restart; a changed variant does not."""
    old = load_config(write(tmp_path))
    assert restart_only_changes(old, load_config(write(tmp_path, spec="V4"))) == []
    assert restart_only_changes(old, load_config(write(tmp_path, mqtt_port=1884))) == ["mqtt"]


def test_catalogue_names_no_holder_and_resolves_the_serial_line(tmp_path: Path) -> None:
    """The catalogue carries id, spec, serial line and model, and nothing about slots."""
    cfg = load_config(write(tmp_path, spec="V2_2"))
    (entry,) = catalogue_of(cfg)
    assert entry == {
        "id": "m1",
        "spec": "V2_2",
        "serial": str(port_config(cfg.variants[0]).profile),
        "model": "T211",
        "description": None,
    }
    assert "9600" in entry["serial"]


def test_a_frame_is_cut_after_the_variants_truncate_after_s_else_the_framings(
    tmp_path: Path,
) -> None:
    """A variant's own truncate_after_s wins over [framing]'s, whose default is 1 s; a reload
    that changes only [framing] hands the multiplexer the new bound."""
    cfg = load_config(write(tmp_path))
    assert [p.truncate_after_s for p in port_configs(cfg)] == [1.0]
    cfg = load_config(write(tmp_path, extra="truncate_after_s = 0.5\n"))
    assert port_config(cfg.variants[0], cfg.framing).truncate_after_s == 0.5
    path = write(tmp_path)
    gw = service.Gateway(load_config(path))
    path.write_text("[framing]\ntruncate_after_s = 3.0\n" + path.read_text())
    assert gw.reload("framing changed")
    assert [p.truncate_after_s for p in gw.mux.configs.values()] == [3.0]


def test_a_write_during_a_reload_is_still_seen_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file rewritten while a reload reads the files triggers another reload."""
    path = write(tmp_path)
    gw = service.Gateway(load_config(path))
    real_load = service.load_config

    def load_then_edit(p: Path, **kw: Any) -> GatewayConfig:
        """Read the config, then let a technician save it again before the reload ends."""
        cfg = real_load(p, **kw)
        path.write_text(path.read_text().replace('model = "T211"', 'model = "T211 rev B"'))
        return cfg

    monkeypatch.setattr(service, "load_config", load_then_edit)
    assert gw.reload("test")
    assert gw.changed_files() == [path]
    monkeypatch.setattr(service, "load_config", real_load)
    assert gw.reload("file changed")
    assert gw.cfg.variants[0].model == "T211 rev B"
    assert gw.changed_files() == []


def test_the_status_shows_the_slot_the_publisher_routes_by(tmp_path: Path) -> None:
    """The status's slot is the schedule's at the reading's time, until its end as configured;
    after a reload that moves the slot away, nobody holds the rig."""
    now = datetime.now(UTC).replace(microsecond=0)
    end = (now + timedelta(hours=2)).astimezone(timezone(timedelta(hours=1)))
    path = write(tmp_path, extra=slot("acme", now - timedelta(hours=1), end))
    gw = service.Gateway(load_config(path))
    assert gw.status().slot == SlotStatus("acme", end.isoformat())  # its +01:00 kept
    assert gw.schedule.holder_at(now) == "acme"
    write(tmp_path, extra=slot("acme", now + timedelta(hours=1), end))
    assert gw.reload("slot moved")
    assert gw.status().slot == SlotStatus(None, None)
    assert gw.schedule.holder_at(now) is None


def test_the_status_reads_back_as_written(tmp_path: Path) -> None:
    """What the daemon writes, the status command reads back whole: one schema for both."""
    gw = service.Gateway(load_config(write(tmp_path)))
    assert gw.reload("test")
    status = gw.status(state="stopped")
    assert DaemonStatus.from_json(status.to_json()) == status
    assert status.rig == "rig-a" and status.state == "stopped"
    assert status.config.last_reload is not None and status.config.last_reload.ok
    assert status.gateway.reloads == 1
    assert gw.summary() == "0/1 ports up; broker DISCONNECTED; 0 unacked"


class RecordingGateway:
    """A real Gateway (not started) whose main loop runs in a thread, recording what it does."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> None:
        # No timer falls due during a test: whatever happens after the first pass was woken.
        monkeypatch.setattr(service, "WATCH_INTERVAL_S", 3600.0)
        monkeypatch.setattr(service, "HEALTH_INTERVAL_S", 3600.0)
        path = write(tmp_path, extra=extra)
        path.write_text(path.read_text() + "[status]\ninterval = 60\n")
        self.gateway = service.Gateway(load_config(path))
        self.health: list[bool] = []
        self.health_at: list[datetime] = []
        self.reloads: list[str] = []
        self.gateway.publish_health = self.record_health  # type: ignore[method-assign]
        self.gateway.write_status = lambda state="running": None  # type: ignore[method-assign]
        self.gateway.reload = self.record_reload  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.gateway.serve, daemon=True)

    def record_health(self, *, everything: bool) -> None:
        """Record a health pass that had something to publish."""
        if self.gateway.take_health_due() or everything:
            self.health.append(everything)
            self.health_at.append(datetime.now(UTC))

    def record_reload(self, why: str) -> bool:
        """Record a reload."""
        self.reloads.append(why)
        return True


def test_main_loop_is_woken_by_port_events_reloads_and_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every timer far off, a port event, SIGHUP's request and SIGTERM's still act."""
    rec = RecordingGateway(tmp_path, monkeypatch)
    rec.thread.start()
    assert wait_until(lambda: rec.health == [True], 10)  # the first pass: routine health
    rec.gateway.consume(PortUp("m1", 0, 0))  # as the reader thread reports it
    assert wait_until(lambda: rec.health == [True, False], 10)
    rec.gateway.request_reload()
    assert wait_until(lambda: rec.reloads == ["signal"], 10)
    rec.gateway.request_stop()
    rec.thread.join(10)
    assert not rec.thread.is_alive()


def test_main_loop_wakes_at_a_slot_edge_for_a_whole_health_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every timer far off, a slot that begins shortly wakes the loop at its start to
    publish every port's health (its slot counters restart there)."""
    start = datetime.now(UTC) + timedelta(seconds=1.5)
    rec = RecordingGateway(tmp_path, monkeypatch, slot("acme", start, start + timedelta(hours=1)))
    rec.thread.start()
    assert wait_until(lambda: len(rec.health) == 2, 10)
    rec.gateway.request_stop()
    rec.thread.join(10)
    assert rec.health == [True, True]
    assert rec.health_at[0] < start <= rec.health_at[1]


def test_the_schedule_source_is_the_one_started_with_until_a_restart(tmp_path: Path) -> None:
    """A gateway started with the slots file keeps reading it when the file says "mqtt" (a
    restart is named); one started with "mqtt" reads no slots when the file says "file"."""
    now = datetime.now(UTC).replace(microsecond=0)
    held = slot("acme", now - timedelta(hours=1), now + timedelta(hours=1))
    path = write(tmp_path, extra=held)
    gw = service.Gateway(load_config(path))
    path.write_text('[schedule]\nsource = "mqtt"\n' + path.read_text())
    assert gw.reload("source changed")
    assert gw.schedule.holder_at(now) == "acme" and gw.following is None
    assert gw.last_reload is not None and gw.last_reload.restart_needed == ("schedule",)
    assert gw.status().schedule.source == "file"

    following = service.Gateway(load_config(path))
    assert following.following is not None and following.schedule.holder_at(now) is None
    path.write_text(path.read_text().replace('source = "mqtt"', 'source = "file"'))
    assert following.reload("source changed")
    assert following.schedule.holder_at(now) is None
    assert following.status().schedule.source == "mqtt"


def test_a_schedule_from_the_broker_is_applied_on_the_main_thread(tmp_path: Path) -> None:
    """What the link handed off waits in the inbox (and wakes the main loop) until
    `follow_schedule` judges it: applied, kept on disk, routed by; a refused one is not."""
    now = datetime.now(UTC).replace(microsecond=0)
    path = write(tmp_path, extra='[schedule]\nsource = "mqtt"\n')
    gw = service.Gateway(load_config(path))
    assert gw.following is not None
    body = (
        '{"rig":"rig-a","version":3,"slots":[{"holder":"acme",'
        f'"start":"{(now - timedelta(hours=1)).isoformat()}",'
        f'"end":"{(now + timedelta(hours=1)).isoformat()}"}}]}}'
    ).encode()
    gw._wake.clear()
    gw.following.handoff(Inbound("p1/rig-a/schedule", body, True))
    assert gw._wake.is_set() and gw.schedule.holder_at(now) is None  # not on paho's thread
    gw.follow_schedule()
    assert gw.schedule.holder_at(now) == "acme"
    assert (tmp_path / "s" / "schedule.json").read_bytes() == body
    assert gw.status().schedule.version == 3
    gw.following.handoff(Inbound("p1/rig-a/schedule", body.replace(b"acme", b"ACME"), True))
    gw.follow_schedule()
    assert gw.schedule.holder_at(now) == "acme" and gw.status().schedule.version == 3
    assert "version 3: slot[0].holder" in str(gw.status().schedule.refused)
    again = service.Gateway(load_config(path))  # a start: the kept version routes
    assert again.schedule.holder_at(now) == "acme" and again.status().schedule.version == 3
