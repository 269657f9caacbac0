"""The slot schedule: [start, end) semantics, validation, back-to-back slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import IdentifierError
from gateway.publish import ScheduleError, Slot, SlotSchedule
from gateway.publish.schedule import datetime_to_ns

T0 = datetime(2026, 11, 28, 8, 0, tzinfo=timezone(timedelta(hours=1)))
H = timedelta(hours=1)
NS = 1_000_000_000


def test_holder_at_uses_start_inclusive_end_exclusive() -> None:
    """The nanosecond before start and the end itself are outside; start is inside."""
    s = SlotSchedule([Slot("acme", T0, T0 + H)])
    start, end = datetime_to_ns(T0), datetime_to_ns(T0 + H)
    assert s.holder_at_ns(start - 1) is None
    assert s.holder_at_ns(start) == "acme"
    assert s.holder_at_ns(end - 1) == "acme"
    assert s.holder_at_ns(end) is None
    assert s.holder_at(T0 + H / 2) == "acme"


def test_back_to_back_slots_of_one_holder_have_no_gap() -> None:
    """Two adjacent slots of one holder cover the boundary; merged() joins them."""
    s = SlotSchedule([Slot("acme", T0 + H, T0 + 2 * H), Slot("acme", T0, T0 + H)])
    boundary = datetime_to_ns(T0 + H)
    assert all(s.holder_at_ns(boundary + d) == "acme" for d in (-1, 0, 1))
    assert s.merged() == (Slot("acme", T0, T0 + 2 * H),)


def test_adjacent_slots_of_two_holders_switch_at_the_boundary() -> None:
    """At the boundary nanosecond the next holder holds the rig."""
    s = SlotSchedule([Slot("acme", T0, T0 + H), Slot("bravo", T0 + H, T0 + 2 * H)])
    boundary = datetime_to_ns(T0 + H)
    assert s.holder_at_ns(boundary - 1) == "acme"
    assert s.holder_at_ns(boundary) == "bravo"


def test_offsets_compare_as_instants() -> None:
    """A slot written in +01:00 and a query in UTC meet at the same instant."""
    s = SlotSchedule([Slot("acme", T0, T0 + H)])
    assert s.holder_at(T0.astimezone(UTC)) == "acme"


@pytest.mark.parametrize(
    "slots",
    [
        [Slot("acme", T0, T0 + H), Slot("bravo", T0 + H / 2, T0 + 2 * H)],  # overlap
        [Slot("acme", T0, T0 + 3 * H), Slot("bravo", T0 + H, T0 + 2 * H)],  # inside
        [Slot("acme", T0, T0)],  # empty
        [Slot("acme", T0 + H, T0)],  # backwards
        [Slot("acme", datetime(2026, 1, 1), datetime(2026, 1, 2))],  # naive
        [Slot("ac/me", T0, T0 + H)],
        [Slot("acme\x00", T0, T0 + H)],
        [Slot("$acme", T0, T0 + H)],
    ],
)
def test_invalid_schedules_are_refused(slots: list[Slot]) -> None:
    """Overlap, start not before end, naive times and bad holders are refused whole."""
    with pytest.raises(ScheduleError):
        SlotSchedule(slots)
    assert issubclass(ScheduleError, IdentifierError)


def test_empty_schedule_routes_nowhere() -> None:
    """No slot: nobody holds the rig."""
    assert SlotSchedule().holder_at(T0) is None


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.integers(1, 50), st.sampled_from("abc")), max_size=20
    ),
    st.lists(st.integers(-10, 1100), max_size=50),
)
def test_holder_at_agrees_with_a_linear_scan(spans, probes) -> None:
    """Binary search answers what checking every slot answers."""
    slots, taken = [], []
    for start, length, holder in spans:
        end = start + length
        if any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        slots.append(Slot(holder, T0 + timedelta(seconds=start), T0 + timedelta(seconds=end)))
    schedule = SlotSchedule(slots)
    for p in probes:
        when = datetime_to_ns(T0) + p * NS
        expected = [
            s.holder for s in slots if datetime_to_ns(s.start) <= when < datetime_to_ns(s.end)
        ]
        assert schedule.holder_at_ns(when) == (expected[0] if expected else None)
