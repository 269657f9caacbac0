"""The status file's one schema: what the daemon writes, `p1-gateway status` reads back whole,
and a file from an older gateway (keys missing) or a newer one (keys unknown) still reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast, get_type_hints

from gateway.daemon.statusfile import (
    BrokerStatus,
    ClockStatus,
    ConfigStatus,
    DaemonStatus,
    GatewayCounters,
    LogStatus,
    PortEntry,
    ReloadOutcome,
    ScheduleStatus,
    SlotStatus,
    SystemdStatus,
    load_status,
    write_status_file,
)
from gateway.mux import PortHealth


def port(state: str = "up") -> PortEntry:
    """A port's health as the multiplexer reports it."""
    entry = PortHealth("m1", url="/dev/ttyUSB0", spec="V5", now_ns=0).snapshot(10**9).to_dict()
    entry["state"] = state
    return cast(PortEntry, entry)


def full() -> DaemonStatus:
    """A status with every field set, as a running daemon writes it."""
    return DaemonStatus(
        rig="rig-a",
        state="running",
        pid=42,
        version="1.2.3",
        started_at="2026-11-28T16:00:00Z",
        updated_at="2026-11-28T17:00:00Z",
        broker=BrokerStatus(True, "MQTTv5", "broker:1883", 3, 4, 1, 10, 2, 5, 0, "timeout"),
        clock=ClockStatus(synced=True, require_sync=True),
        slot=SlotStatus("acme", "2026-11-29T06:00:00+01:00"),
        schedule=ScheduleStatus("mqtt", 14, "version 15: overlap", None),
        config=ConfigStatus(
            "/etc/p1-gateway/p1-gateway.toml",
            ReloadOutcome("2026-11-28T16:30:00Z", False, ("f: x: bad",), ("mqtt",)),
        ),
        gateway=GatewayCounters(120, 2, 1, 3, 4, 1),
        log=LogStatus(dropped=7),
        systemd=SystemdStatus(9, 1, 0, "EAGAIN"),
        ports={"m1": port("up"), "m2": port("down")},
    )


def test_a_written_status_reads_back_whole(tmp_path: Path) -> None:
    """Every field the daemon writes comes back from the file as it was."""
    path = tmp_path / "status.json"
    write_status_file(path, full().to_json())
    assert load_status(path) == full()


def test_the_file_holds_one_json_object_per_section() -> None:
    """The file's layout: the sections in order, the counters and the last reload as objects."""
    data = json.loads(json.dumps(full().to_json()))
    assert list(data) == [
        "rig",
        "state",
        "pid",
        "version",
        "started_at",
        "updated_at",
        "broker",
        "clock",
        "slot",
        "schedule",
        "config",
        "gateway",
        "log",
        "systemd",
        "ports",
    ]
    assert data["config"]["last_reload"] == {
        "at": "2026-11-28T16:30:00Z",
        "ok": False,
        "problems": ["f: x: bad"],
        "restart_needed": ["mqtt"],
    }
    assert data["gateway"]["invalid_crc"] == 2
    assert data["broker"]["in_flight"] == 1 and data["broker"]["set_aside"] == 2


def test_an_older_file_reads_with_what_it_lacks_as_unknown() -> None:
    """A file without newer keys or sections reads: None or the section's default."""
    status = DaemonStatus.from_json(
        {"rig": "rig-a", "broker": {"connected": True}, "config": {"last_reload": None}}
    )
    assert status.rig == "rig-a" and status.pid is None
    assert status.broker.connected and status.broker.set_aside is None
    assert status.log == LogStatus(dropped=0) and status.systemd == SystemdStatus()
    assert status.config == ConfigStatus(None, None)
    assert status.ports == {}
    assert status.schedule == ScheduleStatus() and status.schedule.source is None
    assert DaemonStatus.from_json({}) == DaemonStatus()


def test_a_newer_file_reads_without_what_it_adds() -> None:
    """Keys and sections this reader does not know are left out; what it knows reads."""
    raw = full().to_json()
    raw["future"] = {"x": 1}
    raw["broker"]["queue_depth_p99"] = 3
    raw["config"]["last_reload"]["duration_s"] = 0.2
    assert DaemonStatus.from_json(raw) == full()


def test_null_or_malformed_sections_read_as_empty() -> None:
    """A section that is null or not a JSON object reads as its defaults, never an error."""
    status = DaemonStatus.from_json({"broker": None, "log": {"dropped": None}, "ports": []})
    assert status.broker == BrokerStatus()
    assert status.log.dropped == 0
    assert status.ports == {}
    assert DaemonStatus.from_json([1, 2]) == DaemonStatus()


def test_the_port_entry_names_every_key_of_the_multiplexers_health() -> None:
    """PortEntry lists exactly the keys the multiplexer's health payload has."""
    assert set(get_type_hints(PortEntry)) == set(port())


def test_the_summary_counts_ports_up_and_flags_a_refused_config() -> None:
    """The systemd STATUS line: ports up of those configured, the link, a refused reload."""
    assert full().summary(3) == (
        "1/3 ports up; broker connected; 4 unacked; config REFUSED (running the previous one)"
    )
    calm = DaemonStatus(broker=BrokerStatus(outstanding=0), ports={"m1": port("up")})
    assert calm.summary(1) == "1/1 ports up; broker DISCONNECTED; 0 unacked"


def test_to_json_is_the_whole_status_as_plain_json() -> None:
    """Every section and port becomes plain JSON, equal to a deep conversion of the status."""
    import dataclasses

    status = full()
    assert json.dumps(status.to_json()) == json.dumps(dataclasses.asdict(status))
    assert json.loads(json.dumps(status.to_json()))["config"]["last_reload"] is not None
