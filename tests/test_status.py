"""`p1-gateway status`: the technician's table, from the daemon's status file."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.status import read_status_file, render, write_status_file

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
    text = render(sample(), now=NOW)
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
    assert "STALE" in render(sample(NOW - timedelta(seconds=30)), now=NOW)


def test_render_shows_a_refused_reload() -> None:
    """A refused config reload is shown with its problems."""
    status = sample()
    status["config"] = {"last_reload": {"ok": False, "at": "t", "problems": ["f: x: bad"]}}
    assert "config REFUSED" in render(status, now=NOW)
    assert "  f: x: bad" in render(status, now=NOW)


def test_render_shows_dropped_log_lines_only_when_there_are_some() -> None:
    """A head line counts log lines dropped by a stuck sink; none dropped, or an older file
    without the key, shows no such line."""
    status = sample()
    status["log"] = {"dropped": 17}
    head = render(status, now=NOW).split("PORT")[0]
    assert "log 17 lines DROPPED" in head
    status["log"] = {"dropped": 0}
    assert "DROPPED" not in render(status, now=NOW)
    assert "DROPPED" not in render(sample(), now=NOW)


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
