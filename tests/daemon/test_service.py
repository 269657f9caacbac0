"""The daemon's pure decisions: watchdog gating, what a reload can apply, the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.daemon.service import (
    STATUS_STALL_S,
    catalogue_of,
    port_config,
    restart_only_changes,
    watchdog_ok,
)
from gateway.mux import LoopProgress
from gateway.publish import PublisherLiveness

NOW = 1_000_000_000_000


def alive(**kw: object) -> PublisherLiveness:
    """A healthy publisher liveness, with some fields replaced."""
    base: dict[str, object] = {
        "network_thread_alive": True,
        "network_progress_age": 0.1,
        "network_budget": 10.0,
        "writer_alive": True,
        "writer_progress_age": 0.1,
        "writer_budget": 10.0,
        "connected": True,
    }
    base.update(kw)
    return PublisherLiveness(**base)  # type: ignore[arg-type]


def loop(age_s: float, running: bool = True) -> LoopProgress:
    """A reader loop whose last iteration was `age_s` seconds ago."""
    return LoopProgress(running, 10, NOW - int(age_s * 1e9), 0.0)


def test_watchdog_fed_while_everything_progresses() -> None:
    """Both sides moving: WATCHDOG=1 may be sent, even while the broker is away."""
    assert watchdog_ok(loop(0.2), alive(), NOW)
    assert watchdog_ok(loop(0.2), alive(connected=False), NOW)


@pytest.mark.parametrize(
    ("progress", "liveness"),
    [
        (loop(30.0), alive()),
        (loop(0.1, running=False), alive()),
        (LoopProgress(True, 0, 0, None), alive()),
        (loop(0.1), alive(network_thread_alive=False)),
        (loop(0.1), alive(writer_alive=False)),
        (loop(0.1), alive(network_progress_age=60.0)),
        (loop(0.1), alive(writer_progress_age=60.0)),
    ],
)
def test_watchdog_withheld_when_a_loop_is_stuck(
    progress: LoopProgress, liveness: PublisherLiveness
) -> None:
    """A stalled or dead reader loop, paho thread or spool writer withholds WATCHDOG=1."""
    assert not watchdog_ok(progress, liveness, NOW)


def test_watchdog_withheld_while_a_status_write_hangs() -> None:
    """A status-file write that takes a few seconds is fine; one that hangs withholds it."""
    assert watchdog_ok(loop(0.1), alive(), NOW, status_busy_s=3.0)
    assert not watchdog_ok(loop(0.1), alive(), NOW, status_busy_s=STATUS_STALL_S + 1)


def write(tmp_path: Path, mqtt_port: int = 1883, spec: str = "V5") -> Path:
    """A minimal config; return its path."""
    path = tmp_path / "g.toml"
    path.write_text(
        f'[rig]\nid = "rig-a"\n[mqtt]\nport = {mqtt_port}\n[spool]\ndir = "s"\n'
        f'[[variant]]\nid = "m1"\nport = "/dev/ttyUSB0"\nspec = "{spec}"\nmodel = "T211"\n'
    )
    return path


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


def test_a_write_during_a_reload_is_still_seen_afterwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config file rewritten while a reload reads the files triggers another reload."""
    import gateway.daemon.service as app

    path = write(tmp_path)
    gw = app.Gateway(load_config(path))
    real_load = app.load_config

    def load_then_edit(p: Path) -> app.GatewayConfig:
        """Read the config, then let a technician save it again before the reload ends."""
        cfg = real_load(p)
        path.write_text(path.read_text().replace('model = "T211"', 'model = "T211 rev B"'))
        return cfg

    monkeypatch.setattr(app, "load_config", load_then_edit)
    assert gw.reload("test")
    assert gw._watcher.changed() == [path]
    monkeypatch.setattr(app, "load_config", real_load)
    assert gw.reload("file changed")
    assert gw.cfg.variants[0].model == "T211 rev B"
    assert gw._watcher.changed() == []


def test_next_due_keeps_the_grid_and_skips_missed_ticks() -> None:
    """Timers stay on due + k * every (so equal periods coincide); missed ticks are skipped."""
    import gateway.daemon.service as app

    assert app._next_due(10.0, 1.0, 10.0) == 11.0
    assert app._next_due(10.0, 1.0, 10.4) == 11.0
    assert app._next_due(10.0, 1.0, 13.5) == 14.0  # three ticks missed: no burst to catch up
    assert app._next_due(10.0, 5.0, 9.0) == 10.0  # not yet due: the first tick after now


class RecordingGateway:
    """A real Gateway (not started) whose main loop runs in a thread, recording what it does."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import threading

        import gateway.daemon.service as app

        # No timer falls due during a test: whatever happens after the first pass was woken.
        monkeypatch.setattr(app, "WATCH_INTERVAL_S", 3600.0)
        monkeypatch.setattr(app, "HEALTH_INTERVAL_S", 3600.0)
        path = write(tmp_path)
        path.write_text(path.read_text() + "[status]\ninterval = 60\n")
        self.gateway = app.Gateway(load_config(path))
        self.health: list[bool] = []
        self.reloads: list[str] = []
        self.gateway.publish_health = self._health  # type: ignore[method-assign]
        self.gateway.write_status = lambda state="running": None  # type: ignore[method-assign]
        self.gateway.reload = self._reload  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.gateway.serve, daemon=True)

    def _health(self, *, everything: bool) -> None:
        """Record a health pass that had something to publish."""
        with self.gateway._health_lock:
            due, self.gateway._health_due = self.gateway._health_due, set()
        if due or everything:
            self.health.append(everything)

    def _reload(self, why: str) -> bool:
        """Record a reload."""
        self.reloads.append(why)
        return True


def test_main_loop_is_woken_by_port_events_reloads_and_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every timer far off, a port event, SIGHUP's request and SIGTERM's still act."""
    from gateway.mux import PortUp
    from tests.support.mosquitto import wait_until

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
