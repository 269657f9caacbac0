"""What each rig is told, without a broker: the payload, the version, the rig's answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.lab.rules import Booking
from gateway.lab.schedule import RigView, payload, read_views, version_to_tell

BXL = ZoneInfo("Europe/Brussels")
T = datetime(2030, 7, 1, 6, tzinfo=UTC)


def test_the_payload_is_the_rigs_whole_schedule_on_the_labs_wall_clock() -> None:
    """Only that rig's slots, by start, RFC 3339 with the Brussels offset, no extra keys."""
    bookings = [
        Booking(2, "rig-a", "beta", T + timedelta(days=2), T + timedelta(days=2, hours=22), 1),
        Booking(1, "rig-a", "acme", T, T + timedelta(hours=22), 1),
        Booking(3, "rig-b", "cleo", T, T + timedelta(hours=22), 1),
    ]
    body = json.loads(payload("rig-a", 7, bookings, BXL))
    assert body == {
        "rig": "rig-a",
        "version": 7,
        "slots": [
            {
                "holder": "acme",
                "start": "2030-07-01T08:00:00+02:00",
                "end": "2030-07-02T06:00:00+02:00",
            },
            {
                "holder": "beta",
                "start": "2030-07-03T08:00:00+02:00",
                "end": "2030-07-04T06:00:00+02:00",
            },
        ],
    }


@pytest.mark.parametrize(
    ("version", "told", "view", "expected"),
    [
        (3, 3, RigView(schedule=3, applied=3), None),  # told and applied
        (3, 3, RigView(schedule=3), None),  # told; the rig has not answered yet
        (4, 3, RigView(schedule=3, applied=3), 4),  # a change
        (4, 3, RigView(schedule=3, applied=9), 10),  # a change, the rig ahead (a restore)
        (3, 3, RigView(schedule=3, applied=9), 10),  # no change, the rig ahead
        (3, 3, RigView(), 4),  # the broker lost it
        (3, 3, RigView(schedule=12), 13),  # someone else's schedule on the broker
        (0, 0, RigView(), None),  # never told, nothing to tell
        (3, 3, RigView(schedule=3, applied=3, refused="bad"), None),  # refused: say, not resend
    ],
)
def test_the_version_to_tell_rises_above_everything_seen(
    version: int, told: int, view: RigView, expected: int | None
) -> None:
    """A change goes out at its version unless the broker or the rig shows a higher one."""
    assert version_to_tell(version, told, view) == expected


def test_the_rigs_answers_are_read_and_junk_ignored() -> None:
    """Versions, refusals, status and bridge state per rig; unreadable payloads count as
    none, other prefixes and bad rig ids are skipped."""
    views = read_views(
        "p1",
        {
            "p1/rig-a/schedule": b'{"rig": "rig-a", "version": 5, "slots": []}',
            "p1/rig-a/schedule/applied": b'{"version": 4, "refused": "overlap"}',
            "p1/rig-a/status": b'{"state": "online"}',
            "p1/rig-b/schedule/applied": b"not json",
            "p1/rig-b/bridge/state": b"0",
            "p1/rig-b/status": b'{"state": "online"}',
            "p1/Rig_C/schedule": b'{"version": 1}',
            "other/rig-d/schedule": b'{"version": 1}',
            "p1/rig-e/schedule": b'{"version": -1}',
        },
    )
    assert views["rig-a"] == RigView(5, 4, "overlap", "online", None)
    assert views["rig-a"].connected is True
    assert views["rig-b"].applied is None and views["rig-b"].connected is False  # bridge says 0
    assert views["rig-e"].schedule is None
    assert set(views) == {"rig-a", "rig-b", "rig-e"}
    assert RigView().connected is None
