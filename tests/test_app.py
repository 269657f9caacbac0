"""The daemon's pure decisions: watchdog gating, what a reload can apply, the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import catalogue_of, port_config, restart_only_changes, watchdog_ok
from gateway.config import load_config
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
    import gateway.app as app

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
