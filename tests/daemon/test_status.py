"""`p1-gateway status`: the technician's table, from the daemon's status file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.daemon.status import find_status_file, render
from gateway.daemon.statusfile import (
    DaemonStatus,
    read_status_file,
    write_status_file,
)
from gateway.errors import ConfigError

NOW = datetime(2026, 11, 28, 17, 0, 0, tzinfo=UTC)


def sample(updated: datetime = NOW) -> dict[str, object]:
    """A status as the daemon writes it: one healthy port, one down."""
    return {
        "rig": "rig-a",
        "pid": 42,
        "updated_at": updated.isoformat().replace("+00:00", "Z"),
        "broker": {"connected": True, "spooled": 0, "in_flight": 1, "acked": 10},
        "clock": {"synced": True},
        "slot": {"holder": "acme", "until": "2026-11-29T06:00:00+01:00"},
        "ports": {
            "fluvius-t211": {
                "state": "up",
                "telegrams": 120,
                "crc_errors": 2,
                "last_telegram_at": "2026-11-28T16:59:59Z",
                "jitter_ms": 3.2,
            },
            "kaifa-dsmr42": {"state": "down", "telegrams": 0, "reconnects": 5},
        },
    }


def test_render_shows_each_port_state_and_counters() -> None:
    """Every port appears with its state and counters; the slot and broker are summarised."""
    text = render(DaemonStatus.from_json(sample()), now=NOW)
    lines = text.splitlines()
    flu = next(line for line in lines if line.startswith("fluvius-t211"))
    assert flu.split()[1:5] == ["up", "1s", "120", "2"]
    kaifa = next(line for line in lines if line.startswith("kaifa-dsmr42"))
    assert kaifa.split()[1] == "down"
    assert "slot acme until" in text
    assert "broker connected" in text
    assert "STALE" not in text


def test_render_flags_a_stale_status() -> None:
    """A status not refreshed for seconds is flagged: the daemon may be gone."""
    assert "STALE" in render(DaemonStatus.from_json(sample(NOW - timedelta(seconds=30))), now=NOW)


def test_render_shows_a_refused_reload() -> None:
    """A refused config reload is shown with its problems."""
    status = sample()
    status["config"] = {"last_reload": {"ok": False, "at": "t", "problems": ["f: x: bad"]}}
    assert "config REFUSED" in render(DaemonStatus.from_json(status), now=NOW)
    assert "  f: x: bad" in render(DaemonStatus.from_json(status), now=NOW)


def test_render_shows_dropped_log_lines_only_when_there_are_some() -> None:
    """A head line counts log lines dropped by a stuck sink; none dropped, or an older file
    without the key, shows no such line."""
    status = sample()
    status["log"] = {"dropped": 17}
    head = render(DaemonStatus.from_json(status), now=NOW).split("PORT")[0]
    assert "log 17 lines DROPPED" in head
    status["log"] = {"dropped": 0}
    assert "DROPPED" not in render(DaemonStatus.from_json(status), now=NOW)
    assert "DROPPED" not in render(DaemonStatus.from_json(sample()), now=NOW)


def test_status_file_round_trip_and_cli(tmp_path: Path) -> None:
    """The written file reads back, and `status --once --file` prints the table."""
    path = tmp_path / "run" / "status.json"
    write_status_file(path, sample(datetime.now(UTC)))
    assert read_status_file(path)["rig"] == "rig-a"
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--once", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "fluvius-t211" in out.stdout


def test_status_cli_without_a_daemon(tmp_path: Path) -> None:
    """With no status file, the command says the daemon may not run and exits 1."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--once", "--file", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "is p1-gateway running" in out.stdout


def test_status_file_is_replaced_whole_with_mode_0644(tmp_path: Path) -> None:
    """Each write replaces the file (no temporary file left), mode 0644 whatever the umask."""
    import os
    import stat

    path = tmp_path / "status.json"
    old = os.umask(0o077)
    try:
        write_status_file(path, {"rig": "rig-a", "n": 1, "at": datetime(2026, 1, 1, tzinfo=UTC)})
        write_status_file(path, {"rig": "rig-a", "n": 2})
    finally:
        os.umask(old)
    assert read_status_file(path) == {"rig": "rig-a", "n": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def daemon_config(folder: Path, status_table: str = "") -> Path:
    """A daemon config with no ports and a broker nobody answers, its password file beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mqtt.pass").write_text("secret\n")
    path = folder / "gateway.toml"
    path.write_text(
        textwrap.dedent(
            """
            [rig]
            id = "rig-a"
            [mqtt]
            host = "127.0.0.1"
            port = 9
            username = "rig-a"
            password_file = "mqtt.pass"
            [spool]
            dir = "spool"
            [clock]
            require_sync = false
            [log]
            format = "json"
            """
        )
        + status_table
    )
    return path


def status_cli(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`p1-gateway status --once --config` in the environment `env`."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--once", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("under_systemd", [False, True])
def test_status_finds_what_run_wrote_without_the_password_file(
    tmp_path: Path, under_systemd: bool
) -> None:
    """`status --config X` shows what a real `run --config X` writes: beside X by hand, in
    RUNTIME_DIRECTORY under systemd; and it still does once the password file is gone."""
    config = daemon_config(tmp_path / "etc")
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
    expected = tmp_path / "etc" / "gateway.status.json"
    if under_systemd:
        env["RUNTIME_DIRECTORY"] = f"{tmp_path}/rt:{tmp_path}/rt2"
        expected = tmp_path / "rt" / "status.json"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while not expected.exists() and time.monotonic() < deadline:
            assert daemon.poll() is None, "the daemon exited"
            time.sleep(0.1)
        assert expected.exists()
        (tmp_path / "etc" / "mqtt.pass").unlink()
        out = status_cli(config, env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"pid {daemon.pid}" in out.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    written = {p.name for p in tmp_path.rglob("*.json")}
    assert written == {expected.name}, written


def test_status_uses_the_configured_file(tmp_path: Path) -> None:
    """An explicit `[status] file` is the one shown, even under systemd."""
    config = daemon_config(tmp_path, '[status]\nfile = "elsewhere/s.json"\n')
    write_status_file(tmp_path / "elsewhere" / "s.json", sample(datetime.now(UTC)))
    env = {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "rt")}
    out = status_cli(config, env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "fluvius-t211" in out.stdout


def written_by(config: Path, updated: datetime | None = None) -> dict[str, object]:
    """A status as a daemon run with `config` writes it."""
    status = sample(updated or datetime.now(UTC))
    status["config"] = {"file": str(config), "last_reload": None}
    return status


def test_the_services_file_is_shown_only_for_its_own_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a shell (no RUNTIME_DIRECTORY), the service's status file is found for the config
    it was written for, even when that config cannot be loaded; never for another config."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    service = tmp_path / "run" / "p1-gateway" / "status.json"
    rig = daemon_config(tmp_path / "etc")
    dev = daemon_config(tmp_path / "dev")
    write_status_file(service, written_by(rig))
    assert find_status_file(rig, service) == service
    assert find_status_file(dev, service) == tmp_path / "dev" / "gateway.status.json"
    rig.write_text("[rig\n")  # unreadable as TOML: the service keeps its loaded config
    assert find_status_file(rig, service) == service
    dev.write_text("[rig\n")
    with pytest.raises(ConfigError):
        find_status_file(dev, service)


def test_the_fresher_of_two_status_files_for_one_config_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file left by a run by hand does not hide the running service's, nor the reverse."""
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    service = tmp_path / "run" / "status.json"
    config = daemon_config(tmp_path / "etc")
    by_hand = tmp_path / "etc" / "gateway.status.json"
    write_status_file(by_hand, written_by(config))
    write_status_file(service, written_by(config))
    os.utime(by_hand, (time.time() - 60, time.time() - 60))
    assert find_status_file(config, service) == service
    os.utime(service, (time.time() - 120, time.time() - 120))
    assert find_status_file(config, service) == by_hand


def test_render_shows_where_the_schedule_comes_from() -> None:
    """The slots file, or the broker's version applied, a refusal and a failed kept copy; a
    file written before the schedule section shows no such line."""
    status = sample()
    assert "schedule" not in render(DaemonStatus.from_json(status), now=NOW)
    status["schedule"] = {"source": "file"}
    assert "schedule from the slots file (file)" in render(DaemonStatus.from_json(status), now=NOW)
    status["schedule"] = {"source": "mqtt", "version": None}
    text = render(DaemonStatus.from_json(status), now=NOW)
    assert "schedule from the broker (mqtt): none yet applied" in text
    status["schedule"] = {"source": "mqtt", "version": 14, "refused": "version 15: overlap"}
    text = render(DaemonStatus.from_json(status), now=NOW)
    assert "(mqtt): version 14 applied; last offered REFUSED: version 15: overlap" in text
    status["schedule"] = {"source": "mqtt", "version": 14, "error": "cannot write x"}
    assert "kept copy FAILED: cannot write x" in render(DaemonStatus.from_json(status), now=NOW)
