"""The board: each holder's retained schedule and the rig's calendar, without IO."""

from __future__ import annotations

import json
from datetime import timedelta

from gateway.publish import Slot, SlotSchedule, TopicBuilder
from gateway.publish.board import Board, busy_times
from gateway.publish.schedule import datetime_to_ns
from tests.publish.test_schedule import T0

NS = 1_000_000_000
BASE = datetime_to_ns(T0)
TOPICS = TopicBuilder("rig-a")


def sched(*spans: tuple[str, int, int]) -> SlotSchedule:
    """A schedule from (holder, start h, end h) relative to T0."""
    return SlotSchedule(
        Slot(h, T0 + timedelta(hours=a), T0 + timedelta(hours=b)) for h, a, b in spans
    )


def hours(h: float) -> int:
    """Wall ns `h` hours after T0."""
    return BASE + round(h * 3600 * NS)


def said(messages: list[tuple[str, bytes]]) -> dict[str, dict[str, object]]:
    """The payloads by topic, parsed."""
    return {topic: json.loads(data) for topic, data in messages}


def test_each_holder_is_told_its_own_current_and_coming_slots_only() -> None:
    """acme's schedule names acme's slots (unmerged, the past left out); bravo's, bravo's."""
    s = sched(("acme", -5, -3), ("acme", 0, 2), ("acme", 2, 4), ("bravo", 4, 6), ("acme", 8, 9))
    got = said(Board(TOPICS).messages(s, hours(1)))
    acme = got["p1/rig-a/slot/acme/schedule"]
    assert acme == {
        "rig": "rig-a",
        "holder": "acme",
        "slots": [
            {"start": "2026-11-28T07:00:00Z", "end": "2026-11-28T09:00:00Z"},
            {"start": "2026-11-28T09:00:00Z", "end": "2026-11-28T11:00:00Z"},
            {"start": "2026-11-28T15:00:00Z", "end": "2026-11-28T16:00:00Z"},
        ],
        "updated_at": "2026-11-28T08:00:00.000000Z",
    }
    bravo = got["p1/rig-a/slot/bravo/schedule"]
    assert bravo["slots"] == [{"start": "2026-11-28T11:00:00Z", "end": "2026-11-28T13:00:00Z"}]
    assert b"acme" not in json.dumps(bravo).encode()
    assert got["p1/rig-a/calendar"] == {
        "rig": "rig-a",
        "busy": [
            {"start": "2026-11-28T07:00:00Z", "end": "2026-11-28T13:00:00Z"},
            {"start": "2026-11-28T15:00:00Z", "end": "2026-11-28T16:00:00Z"},
        ],
    }


def test_a_dropped_holder_is_told_an_empty_list_once() -> None:
    """bravo leaves the schedule: `"slots": []` once; after that bravo is not mentioned."""
    board = Board(TOPICS)
    board.messages(sched(("acme", 0, 2), ("bravo", 2, 4)), hours(1))
    board.reschedule()
    got = said(board.messages(sched(("acme", 0, 2)), hours(1.5)))
    assert got["p1/rig-a/slot/bravo/schedule"]["slots"] == []
    board.reschedule()
    assert "p1/rig-a/slot/bravo/schedule" not in said(
        board.messages(sched(("acme", 0, 2)), hours(1.6))
    )


def test_unchanged_lists_keep_their_updated_at_and_bytes() -> None:
    """A reload that changes only bravo leaves acme's payload byte for byte."""
    board = Board(TOPICS)
    before = dict(board.messages(sched(("acme", 0, 2), ("bravo", 2, 4)), hours(1)))
    board.reschedule()
    after = dict(board.messages(sched(("acme", 0, 2), ("bravo", 2, 5)), hours(1.5)))
    acme = "p1/rig-a/slot/acme/schedule"
    assert after[acme] == before[acme]
    assert json.loads(after["p1/rig-a/slot/bravo/schedule"])["updated_at"].startswith(
        "2026-11-28T08:30:00"
    )


def test_a_refresh_is_due_when_the_schedule_changes_or_a_slot_ends() -> None:
    """due(): stale after reschedule; else when the routing time reaches the next slot end."""
    board = Board(TOPICS)
    s = sched(("acme", 0, 2), ("acme", 2, 4))
    assert board.due(hours(0))
    board.messages(s, hours(1))
    assert not board.due(hours(1.9))
    assert board.due(hours(2))
    got = said(board.messages(s, hours(2)))
    assert len(got["p1/rig-a/slot/acme/schedule"]["slots"]) == 1  # the ended one dropped
    board.reschedule()
    assert board.due(hours(2.1))


def test_what_a_holder_was_told_survives_a_restart() -> None:
    """Restored from the snapshot: the same bytes again, and a holder dropped while the
    gateway was down still gets its empty list."""
    board = Board(TOPICS)
    first = dict(board.messages(sched(("acme", 0, 2), ("bravo", 2, 4)), hours(1)))
    assert board.dirty
    state = board.snapshot()
    assert not board.dirty
    again = Board(TOPICS, state)
    second = dict(again.messages(sched(("acme", 0, 2)), hours(1.2)))
    assert second["p1/rig-a/slot/acme/schedule"] == first["p1/rig-a/slot/acme/schedule"]
    assert json.loads(second["p1/rig-a/slot/bravo/schedule"])["slots"] == []


def test_busy_times_join_touching_and_overlapping_spans() -> None:
    """Back to back (any holders) or overlapping: one busy span."""
    assert busy_times([(5, 6), (0, 2), (2, 3), (2, 4)]) == ((0, 4), (5, 6))
    assert busy_times([]) == ()
