"""The booking rules through their public functions, with the clock passed in."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import LabRefusal
from gateway.lab import rules
from gateway.lab.rules import Booking, Policy

BXL = ZoneInfo("Europe/Brussels")
POLICY = Policy(zone=BXL, slot_hours=22, turnover_hours=2, notice_days=7)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
ACME = rules.Tester("acme", datetime(2031, 1, 1, tzinfo=UTC))
BETA = rules.Tester("beta", datetime(2031, 1, 1, tzinfo=UTC))
H = timedelta(hours=1)


def last_sunday(year: int, month: int) -> date:
    """The last Sunday of a month: Europe's DST changes happen on it."""
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() - 6) % 7)


def at(text: str) -> datetime:
    """A Brussels wall-clock time, in UTC."""
    return rules.read_time(text, BXL, NOW)


def book(
    start: datetime,
    *,
    days: int = 1,
    holder: str = "acme",
    tester: rules.Tester | None = ACME,
    rigs: tuple[str, ...] = ("rig-a",),
    bookings: tuple[Booking, ...] = (),
    now: datetime = NOW,
    policy: Policy = POLICY,
) -> rules.Plan:
    """`rules.book` with the usual defaults."""
    return rules.book(
        policy,
        holder=holder,
        tester=tester,
        rigs=rigs,
        start=start,
        days=days,
        bookings=bookings,
        now=now,
    )


def as_booking(plan: rules.Plan, ident: int) -> Booking:
    """An accepted plan as a stored booking."""
    return Booking(ident, plan.rig, plan.holder, plan.start, plan.end, plan.days)


# --- times --------------------------------------------------------------------------------


def test_a_time_without_offset_is_read_in_the_labs_zone() -> None:
    """08:00 in winter is 07:00Z, in summer 06:00Z; an explicit offset or Z is kept."""
    assert at("2030-01-14T08:00") == datetime(2030, 1, 14, 7, tzinfo=UTC)
    assert at("2030-07-14T08:00") == datetime(2030, 7, 14, 6, tzinfo=UTC)
    assert at("2030-01-14T08:00+00:00") == datetime(2030, 1, 14, 8, tzinfo=UTC)
    assert at("2030-01-14T08:00Z") == datetime(2030, 1, 14, 8, tzinfo=UTC)
    assert at("now") == NOW


@pytest.mark.parametrize("text", ["2030-01-14", "tomorrow", "2030-13-01T08:00", ""])
def test_a_start_must_be_a_date_and_a_time(text: str) -> None:
    """A bare date or words are refused with the reason."""
    with pytest.raises(LabRefusal):
        at(text)


def test_an_agreement_date_runs_through_the_end_of_that_local_day() -> None:
    """`--until 2030-12-31` ends at the next local midnight; a time is the end itself."""
    assert rules.read_until("2030-12-31", BXL) == datetime(2030, 12, 31, 23, tzinfo=UTC)
    assert rules.read_until("2030-07-31", BXL) == datetime(2030, 7, 31, 22, tzinfo=UTC)
    assert rules.read_until("2030-07-31T18:00+02:00", BXL) == datetime(2030, 7, 31, 16, tzinfo=UTC)
    with pytest.raises(LabRefusal):
        rules.read_until("next year", BXL)


def test_an_agreement_end_must_be_to_come() -> None:
    """Adding or renewing a tester with an end already past is refused."""
    with pytest.raises(LabRefusal, match="not in the future"):
        rules.check_agreement_end(NOW, NOW, BXL)
    assert rules.check_agreement_end(NOW + H, NOW, BXL) == NOW + H


# --- slot lengths, DST --------------------------------------------------------------------


def test_one_day_is_slot_hours_and_n_days_run_on_without_a_break() -> None:
    """One day: 08:00 to 06:00 the next morning; three days: to 06:00 on the fourth."""
    one = book(at("2030-01-14T08:00"))
    assert (one.end - one.start, one.days) == (22 * H, 1)
    three = book(at("2030-01-14T08:00"), days=3)
    assert three.end == at("2030-01-17T06:00")
    assert three.end - three.start == 70 * H


def test_across_the_spring_change_a_day_is_an_hour_shorter() -> None:
    """The Saturday before the last Sunday of March: 08:00 to 06:00 local is 21 h, and the
    2 h before Sunday 08:00 stay 2 h."""
    sunday = last_sunday(2030, 3)
    start = at(f"{sunday - timedelta(days=1)}T08:00")
    plan = book(start)
    assert plan.end - plan.start == 21 * H
    assert rules.local(plan.end, BXL).isoformat() == f"{sunday}T06:00:00+02:00"
    assert at(f"{sunday}T08:00") - plan.end == 2 * H
    three = book(at(f"{sunday - timedelta(days=2)}T08:00"), days=3)
    assert three.end - three.start == 69 * H


def test_across_the_autumn_change_a_day_is_an_hour_longer() -> None:
    """The Saturday before the last Sunday of October: 08:00 to 06:00 local is 23 h."""
    sunday = last_sunday(2030, 10)
    plan = book(at(f"{sunday - timedelta(days=1)}T08:00"))
    assert plan.end - plan.start == 23 * H
    assert rules.local(plan.end, BXL).isoformat() == f"{sunday}T06:00:00+01:00"
    assert at(f"{sunday}T08:00") - plan.end == 2 * H


def test_a_slot_starting_on_the_change_night_counts_local_hours() -> None:
    """From 01:00 local on the spring Sunday, 22 wall-clock hours are 21 absolute hours."""
    sunday = last_sunday(2030, 3)
    plan = book(at(f"{sunday}T01:00"))
    assert rules.local(plan.end, BXL).isoformat() == f"{sunday}T23:00:00+02:00"
    assert plan.end - plan.start == 21 * H


def test_the_next_holder_books_the_next_local_morning_across_either_change() -> None:
    """Back-to-back days of two holders fit exactly across both DST changes."""
    for month in (3, 10):
        sunday = last_sunday(2030, month)
        first = as_booking(book(at(f"{sunday - timedelta(days=1)}T08:00")), 1)
        second = book(at(f"{sunday}T08:00"), holder="beta", tester=BETA, bookings=(first,))
        assert second.start - first.end == 2 * H


def test_fractional_hours_make_a_day_of_seconds() -> None:
    """slot_hours and turnover_hours take fractions: a 36 s day, 7.2 s apart."""
    quick = Policy(zone=BXL, slot_hours=0.01, turnover_hours=0.002, notice_days=0)
    first = as_booking(book(NOW, policy=quick), 1)
    assert first.end - first.start == timedelta(seconds=36)
    with pytest.raises(LabRefusal, match="turnover"):
        book(
            first.end + timedelta(seconds=7),
            holder="beta",
            tester=BETA,
            bookings=(first,),
            policy=quick,
        )
    later = book(
        first.end + timedelta(seconds=7.2),
        holder="beta",
        tester=BETA,
        bookings=(first,),
        policy=quick,
    )
    assert later.warnings == ()


# --- who may book -------------------------------------------------------------------------


def test_the_tester_must_exist_and_be_enabled() -> None:
    """Unknown and disabled testers are refused, each with its reason."""
    with pytest.raises(LabRefusal, match="unknown tester 'acme'"):
        book(at("2030-02-01T08:00"), tester=None)
    with pytest.raises(LabRefusal, match="disabled"):
        book(at("2030-02-01T08:00"), tester=rules.Tester("acme", ACME.until, enabled=False))


def test_the_agreement_must_run_to_the_slots_end() -> None:
    """An agreement ending one second before the slot's end is refused; at its end, not."""
    start = at("2030-02-01T08:00")
    end = start + 22 * H
    with pytest.raises(LabRefusal, match="agreement of 'acme' ends"):
        book(start, tester=rules.Tester("acme", end - timedelta(seconds=1)))
    assert book(start, tester=rules.Tester("acme", end)).end == end


def test_no_start_in_the_past() -> None:
    """A start one second ago is refused; now is not in the past."""
    with pytest.raises(LabRefusal, match="in the past"):
        book(NOW - timedelta(seconds=1), policy=POLICY)
    assert book(NOW).start == NOW


def test_less_than_notice_days_ahead_books_with_a_warning() -> None:
    """Six days ahead: booked, warned `short notice`; seven days ahead: no warning."""
    soon = book(NOW + timedelta(days=6))
    assert soon.warnings and soon.warnings[0].startswith("short notice")
    assert book(NOW + timedelta(days=7)).warnings == ()


@pytest.mark.parametrize("days", [0, -1, rules.MAX_DAYS + 1])
def test_days_are_a_whole_number_from_one(days: int) -> None:
    """Zero, negative and over-long bookings are refused."""
    with pytest.raises(LabRefusal, match="--days"):
        book(at("2030-02-01T08:00"), days=days)


def test_bad_names_are_refused() -> None:
    """A holder or rig that could break a topic is refused before anything else."""
    with pytest.raises(LabRefusal, match="holder"):
        book(at("2030-02-01T08:00"), holder="ac/me")
    with pytest.raises(LabRefusal, match="rig id"):
        book(at("2030-02-01T08:00"), rigs=("rig+a",))


# --- overlap and turnover -----------------------------------------------------------------


def test_overlap_is_refused_and_names_the_booking_in_the_way() -> None:
    """A slot inside another on the same rig is refused; on another rig it is fine."""
    first = as_booking(book(at("2030-02-01T08:00")), 7)
    with pytest.raises(LabRefusal, match=r"overlap: rig-a .*booking 7"):
        book(at("2030-02-01T20:00"), holder="beta", tester=BETA, bookings=(first,))
    with pytest.raises(LabRefusal, match="overlap"):
        book(at("2030-02-01T20:00"), bookings=(first,))
    other = book(
        at("2030-02-01T20:00"), holder="beta", tester=BETA, rigs=("rig-b",), bookings=(first,)
    )
    assert other.rig == "rig-b"


def test_two_holders_need_the_turnover_between_them_on_either_side() -> None:
    """Another holder starting less than 2 h after, or ending less than 2 h before, is
    refused; exactly 2 h is fine."""
    first = as_booking(book(at("2030-02-01T08:00")), 1)  # to 02-02 06:00
    kw = {"holder": "beta", "tester": BETA, "bookings": (first,)}
    with pytest.raises(LabRefusal, match="turnover"):
        book(at("2030-02-02T07:59"), **kw)  # type: ignore[arg-type]
    assert book(at("2030-02-02T08:00"), **kw).rig == "rig-a"  # type: ignore[arg-type]
    with pytest.raises(LabRefusal, match="turnover"):
        book(at("2030-01-31T08:01"), **kw)  # type: ignore[arg-type]  ends 02-01 06:01
    assert book(at("2030-01-31T08:00"), **kw).rig == "rig-a"  # type: ignore[arg-type]


def test_one_holder_may_follow_itself_without_turnover() -> None:
    """The same holder's slots may touch (they count as one), never overlap."""
    first = as_booking(book(at("2030-02-01T08:00")), 1)
    assert book(first.end, bookings=(first,)).start == first.end


def test_any_rig_takes_the_first_free_for_the_whole_span() -> None:
    """rig-a busy for part of the span: rig-b; both busy: refused with both reasons."""
    a = as_booking(book(at("2030-02-03T08:00"), holder="beta", tester=BETA), 1)
    plan = book(at("2030-02-01T08:00"), days=3, rigs=("rig-a", "rig-b"), bookings=(a,))
    assert plan.rig == "rig-b"
    b = as_booking(plan, 2)
    with pytest.raises(LabRefusal, match=r"no rig free .*rig-a.*rig-b"):
        book(
            at("2030-02-03T08:00"),
            holder="cleo",
            tester=TESTERS["cleo"],
            rigs=("rig-a", "rig-b"),
            bookings=(a, b),
        )
    assert book(at("2030-02-10T08:00"), rigs=("rig-a", "rig-b"), bookings=(a, b)).rig == "rig-a"


# --- move, extend, cancel -----------------------------------------------------------------


def test_move_keeps_days_and_rig_and_ignores_the_booking_itself() -> None:
    """A two-day booking moved by 12 h overlaps its old self: fine; into another's: refused."""
    mine = as_booking(book(at("2030-02-01T08:00"), days=2), 1)
    theirs = as_booking(book(at("2030-02-05T08:00"), holder="beta", tester=BETA), 2)
    moved = rules.move(
        POLICY, mine, start=at("2030-02-01T20:00"), tester=ACME, bookings=(mine, theirs), now=NOW
    )
    assert (moved.rig, moved.days, moved.end) == ("rig-a", 2, at("2030-02-03T18:00"))
    with pytest.raises(LabRefusal, match="turnover"):
        rules.move(
            POLICY,
            mine,
            start=at("2030-02-03T10:00"),
            tester=ACME,
            bookings=(mine, theirs),
            now=NOW,
        )
    with pytest.raises(LabRefusal, match="in the past"):
        rules.move(POLICY, mine, start=NOW - H, tester=ACME, bookings=(mine,), now=NOW)


def test_extend_adds_days_to_one_slot() -> None:
    """Extending by 2 days runs the same slot on to 06:00 two mornings later; a running
    booking may be extended; into another holder's turnover it may not."""
    mine = as_booking(book(at("2030-02-01T08:00")), 1)
    longer = rules.extend(POLICY, mine, more_days=2, tester=ACME, bookings=(mine,), now=NOW)
    assert (longer.start, longer.end, longer.days) == (mine.start, at("2030-02-04T06:00"), 3)
    running = rules.extend(
        POLICY, mine, more_days=1, tester=ACME, bookings=(mine,), now=mine.start + H
    )
    assert running.days == 2
    theirs = as_booking(book(at("2030-02-03T07:00"), holder="beta", tester=BETA), 2)
    with pytest.raises(LabRefusal, match="overlap"):
        rules.extend(POLICY, mine, more_days=2, tester=ACME, bookings=(mine, theirs), now=NOW)
    with pytest.raises(LabRefusal, match="agreement"):
        rules.extend(
            POLICY,
            mine,
            more_days=1,
            tester=rules.Tester("acme", mine.end),
            bookings=(mine,),
            now=NOW,
        )


def test_a_booking_that_has_ended_is_history() -> None:
    """Cancel, move and extend refuse a booking whose end has passed; a running one may be
    cancelled."""
    mine = as_booking(book(at("2030-02-01T08:00")), 1)
    later = mine.end
    for change in (
        lambda: rules.cancel(POLICY, mine, later),
        lambda: rules.move(POLICY, mine, start=later + H, tester=ACME, bookings=(), now=later),
        lambda: rules.extend(POLICY, mine, more_days=1, tester=ACME, bookings=(), now=later),
    ):
        with pytest.raises(LabRefusal, match="ended"):
            change()
    rules.cancel(POLICY, mine, mine.start + H)


# --- the property -------------------------------------------------------------------------

QUICK = Policy(zone=BXL, slot_hours=22, turnover_hours=2, notice_days=7)
BASE = datetime(2030, 3, 20, tzinfo=UTC)  # the spring change falls inside the range
TESTERS = {
    "acme": ACME,
    "beta": BETA,
    "cleo": rules.Tester("cleo", datetime(2031, 1, 1, tzinfo=UTC)),
}

operation = st.one_of(
    st.tuples(
        st.just("book"),
        st.sampled_from(sorted(TESTERS)),
        st.sampled_from([("rig-a",), ("rig-b",), ("rig-a", "rig-b")]),
        st.integers(0, 20 * 24 * 4),  # quarter hours after BASE
        st.integers(1, 4),
    ),
    st.tuples(st.just("move"), st.integers(0, 30), st.integers(0, 20 * 24 * 4)),
    st.tuples(st.just("extend"), st.integers(0, 30), st.integers(1, 3)),
    st.tuples(st.just("cancel"), st.integers(0, 30)),
)


def assert_no_overlap_nor_short_turnover(bookings: list[Booking]) -> None:
    """Every pair on one rig: disjoint, and two holders at least the turnover apart."""
    for i, a in enumerate(bookings):
        for b in bookings[i + 1 :]:
            if a.rig != b.rig:
                continue
            first, second = sorted((a, b), key=lambda x: x.start)
            assert first.end <= second.start, (first, second)
            if first.holder != second.holder:
                assert second.start - first.end >= QUICK.turnover, (first, second)


@settings(max_examples=300, deadline=None)
@given(st.lists(operation, max_size=25))
def test_no_two_accepted_bookings_ever_overlap_or_break_the_turnover(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    """Any sequence of book, move, extend and cancel, each accepted or refused by the rules,
    leaves bookings that never overlap and keep the turnover between two holders."""
    held: dict[int, Booking] = {}
    next_id = 1
    now = BASE
    for op in ops:
        try:
            if op[0] == "book":
                _, holder, rigs, quarters, days = op
                start = BASE + timedelta(minutes=15 * quarters)
                plan = rules.book(
                    QUICK,
                    holder=holder,
                    tester=TESTERS[holder],
                    rigs=rigs,
                    start=start,
                    days=days,
                    bookings=held.values(),
                    now=now,
                )
                held[next_id] = as_booking(plan, next_id)
                next_id += 1
            elif op[1] in held:
                current = held[op[1]]
                tester = TESTERS[current.holder]
                if op[0] == "move":
                    start = BASE + timedelta(minutes=15 * op[2])
                    plan = rules.move(
                        QUICK, current, start=start, tester=tester, bookings=held.values(), now=now
                    )
                    held[current.id] = as_booking(plan, current.id)
                elif op[0] == "extend":
                    plan = rules.extend(
                        QUICK,
                        current,
                        more_days=op[2],
                        tester=tester,
                        bookings=held.values(),
                        now=now,
                    )
                    held[current.id] = as_booking(plan, current.id)
                else:
                    rules.cancel(QUICK, current, now)
                    del held[current.id]
        except LabRefusal:
            pass
        assert_no_overlap_nor_short_turnover(list(held.values()))


def test_the_rules_are_pure() -> None:
    """rules.py imports no IO and reads no clock: `now` always comes from its caller."""
    tree = ast.parse(Path(rules.__file__).read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    allowed = {"__future__", "collections.abc", "dataclasses", "datetime"}
    assert imported <= allowed | {"gateway.errors", "gateway.identifiers"}, imported
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert not calls & {"now", "today", "utcnow", "monotonic", "open", "print"}
