"""The booking rules, pure: no IO and no clock of its own (`now` is passed in).

One day's test time is `slot_hours`. N consecutive days are one slot from T to the same local
time N-1 days later plus `slot_hours`, counted on the wall clock of the lab's zone: across a
DST change the slot is an hour shorter or longer in absolute time, and the turnover before the
next local morning keeps its length. Two holders on one rig are at least `turnover_hours`
apart (absolute time); one holder's own slots only may not overlap. The tester must exist, be
enabled, and have an agreement that runs to the slot's end or beyond; a slot never starts in
the past; one starting less than `notice_days` ahead is booked with a `short notice` warning.

A local time that does not exist (the hour skipped in spring) or exists twice (the hour
repeated in autumn) is read as Python does with `fold=0`: by the offset in force before the
change. Every refusal is a `LabRefusal` whose text is the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from gateway.errors import IdentifierError, LabRefusal
from gateway.identifiers import validate_holder, validate_rig_id

#: The longest booking, in days: a year and a day.
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class Policy:
    """The lab's numbers: its zone and the lengths the rules use."""

    zone: tzinfo
    slot_hours: float = 22
    turnover_hours: float = 2
    notice_days: float = 7

    @property
    def turnover(self) -> timedelta:
        """The least time between two holders on one rig."""
        return timedelta(hours=self.turnover_hours)

    @property
    def notice(self) -> timedelta:
        """How far ahead a booking should start to need no warning."""
        return timedelta(days=self.notice_days)


@dataclass(frozen=True, slots=True)
class Tester:
    """A tester as the rules see it: its agreement's end (exclusive) and whether enabled."""

    name: str
    until: datetime
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Booking:
    """An accepted booking: `holder` holds `rig` over [start, end), `days` local days long."""

    id: int
    rig: str
    holder: str
    start: datetime
    end: datetime
    days: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What a request would book, once every rule agrees; `warnings` go to stderr."""

    rig: str
    holder: str
    start: datetime
    end: datetime
    days: int
    warnings: tuple[str, ...] = ()


# --- times --------------------------------------------------------------------------------


def _aware(value: datetime, zone: tzinfo) -> datetime:
    """`value` with an offset: a naive one is read on the wall clock of `zone` (fold=0)."""
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=zone, fold=0)
    return value.astimezone(UTC)


def read_time(text: str, zone: tzinfo, now: datetime) -> datetime:
    """A start time as typed: RFC 3339 / ISO 8601 with a date and a time, `now`; naive times
    are read in `zone`. Returned in UTC."""
    word = text.strip()
    if word.lower() == "now":
        return now.astimezone(UTC)
    try:
        value = datetime.fromisoformat(word)
    except ValueError:
        raise LabRefusal(
            f"cannot read the time {text!r}: use e.g. 2026-12-14T08:00 or 2026-12-14T08:00+01:00"
        ) from None
    if "T" not in word.upper() and " " not in word:
        raise LabRefusal(f"{text!r} is a date: a start needs a time, e.g. {word}T08:00")
    return _aware(value, zone)


def read_until(text: str, zone: tzinfo) -> datetime:
    """An agreement's end as typed: a date runs through the end of that day in `zone`, a
    time (naive ones read in `zone`) is the end itself. Returned in UTC."""
    word = text.strip()
    try:
        day = date.fromisoformat(word)
    except ValueError:
        pass
    else:
        return _aware(datetime.combine(day + timedelta(days=1), time()), zone)
    try:
        return _aware(datetime.fromisoformat(word), zone)
    except ValueError:
        raise LabRefusal(
            f"cannot read {text!r} as a date or a time: use e.g. 2027-12-31 "
            "or 2027-12-31T18:00+01:00"
        ) from None


def local(value: datetime, zone: tzinfo) -> datetime:
    """`value` on the lab's wall clock (with its offset), as shown to planners."""
    return value.astimezone(zone)


def slot_end(policy: Policy, start: datetime, days: int) -> datetime:
    """The end of `days` consecutive days from `start`: the same local time `days - 1` days
    later plus `slot_hours`, on the lab's wall clock. In UTC."""
    wall = start.astimezone(policy.zone).replace(tzinfo=None)
    wall += timedelta(days=days - 1, hours=policy.slot_hours)
    return _aware(wall, policy.zone)


def _days(days: int) -> int:
    """`days` if it is a whole number of days from 1 to MAX_DAYS."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise LabRefusal(f"--days must be a whole number from 1 to {MAX_DAYS}, not {days!r}")
    return days


def _show(value: datetime, zone: tzinfo) -> str:
    """A time in a refusal's text: RFC 3339 on the lab's wall clock."""
    return local(value, zone).isoformat()


def _span(hours: float) -> str:
    """A length as a planner reads it: `45 min`, `2 h`, `1.5 h`, `3 d 4 h`."""
    if hours < 1:
        return f"{round(hours * 60)} min"
    days, rest = divmod(round(hours, 1), 24)
    text = f"{rest:g} h"
    return f"{days:g} d {text}" if days else text


# --- the rules ----------------------------------------------------------------------------


def check_tester(tester: Tester | None, holder: str, end: datetime, zone: tzinfo) -> Tester:
    """The tester holding a slot that ends at `end`: it exists, is enabled, and its agreement
    runs to `end` or beyond."""
    if tester is None:
        raise LabRefusal(f"unknown tester {holder!r}: add it with `lab testers add`")
    if not tester.enabled:
        raise LabRefusal(f"tester {holder!r} is disabled")
    if tester.until < end:
        raise LabRefusal(
            f"the agreement of {holder!r} ends {_show(tester.until, zone)}, "
            f"before the slot ends {_show(end, zone)}"
        )
    return tester


def check_agreement_end(until: datetime, now: datetime, zone: tzinfo) -> datetime:
    """An agreement end a tester may be given: one still to come."""
    if until <= now:
        raise LabRefusal(f"the agreement end {_show(until, zone)} is not in the future")
    return until


def clash(
    policy: Policy,
    rig: str,
    holder: str,
    start: datetime,
    end: datetime,
    bookings: Iterable[Booking],
    ignore: int | None = None,
) -> str | None:
    """Why [start, end) cannot be booked on `rig` for `holder` beside `bookings` (overlap, or
    less than the turnover between two holders), or None when it can."""
    gap = policy.turnover
    for other in sorted(bookings, key=lambda b: b.start):
        if other.rig != rig or other.id == ignore:
            continue
        if start < other.end and other.start < end:
            return (
                f"overlap: {rig} is booked from {_show(other.start, policy.zone)} to "
                f"{_show(other.end, policy.zone)} (booking {other.id}, {other.holder})"
            )
        if other.holder != holder and start < other.end + gap and other.start < end + gap:
            return (
                f"turnover: {rig} needs {_span(policy.turnover_hours)} between two holders; "
                f"booking {other.id} ({other.holder}) runs from "
                f"{_show(other.start, policy.zone)} to {_show(other.end, policy.zone)}"
            )
    return None


def _notice(policy: Policy, start: datetime, now: datetime) -> tuple[str, ...]:
    """The `short notice` warning when `start` is less than `notice_days` ahead."""
    if start - now < policy.notice:
        ahead = _span((start - now).total_seconds() / 3600)
        return (f"short notice: starts in {ahead}, less than {policy.notice_days:g} days ahead",)
    return ()


def _not_past(start: datetime, now: datetime, zone: tzinfo) -> None:
    """A slot never starts in the past."""
    if start < now:
        raise LabRefusal(f"start in the past: {_show(start, zone)} is before now")


def _not_ended(booking: Booking, now: datetime, zone: tzinfo) -> None:
    """A booking that has ended is history: it is not changed any more."""
    if booking.end <= now:
        raise LabRefusal(f"booking {booking.id} ended {_show(booking.end, zone)}")


def book(
    policy: Policy,
    *,
    holder: str,
    tester: Tester | None,
    rigs: Sequence[str],
    start: datetime,
    days: int,
    bookings: Iterable[Booking],
    now: datetime,
) -> Plan:
    """Book `days` days from `start` for `holder` on the first of `rigs` free for the whole
    span (one rig, or every rig in order for `--rig any`)."""
    try:
        validate_holder(holder)
        for rig in rigs:
            validate_rig_id(rig)
    except IdentifierError as exc:
        raise LabRefusal(str(exc)) from None
    if not rigs:
        raise LabRefusal("no rig to book: list the rigs in LAB.toml or add one")
    end = slot_end(policy, start, _days(days))
    check_tester(tester, holder, end, policy.zone)
    _not_past(start, now, policy.zone)
    existing = list(bookings)
    reasons = []
    for rig in rigs:
        why = clash(policy, rig, holder, start, end, existing)
        if why is None:
            return Plan(rig, holder, start, end, days, _notice(policy, start, now))
        reasons.append(why)
    if len(rigs) == 1:
        raise LabRefusal(reasons[0])
    span = f"{_show(start, policy.zone)} to {_show(end, policy.zone)}"
    raise LabRefusal(f"no rig free from {span}: " + "; ".join(reasons))


def move(
    policy: Policy,
    booking: Booking,
    *,
    start: datetime,
    tester: Tester | None,
    bookings: Iterable[Booking],
    now: datetime,
) -> Plan:
    """Move a booking to a new start on its rig, its days kept, under the rules of `book`."""
    _not_ended(booking, now, policy.zone)
    end = slot_end(policy, start, booking.days)
    check_tester(tester, booking.holder, end, policy.zone)
    _not_past(start, now, policy.zone)
    why = clash(policy, booking.rig, booking.holder, start, end, bookings, ignore=booking.id)
    if why is not None:
        raise LabRefusal(why)
    return Plan(booking.rig, booking.holder, start, end, booking.days, _notice(policy, start, now))


def extend(
    policy: Policy,
    booking: Booking,
    *,
    more_days: int,
    tester: Tester | None,
    bookings: Iterable[Booking],
    now: datetime,
) -> Plan:
    """Lengthen a booking by `more_days` days (one slot still), under the rules of `book`; a
    booking that has started may be extended."""
    _not_ended(booking, now, policy.zone)
    days = _days(booking.days + _days(more_days))
    end = slot_end(policy, booking.start, days)
    check_tester(tester, booking.holder, end, policy.zone)
    why = clash(
        policy, booking.rig, booking.holder, booking.start, end, bookings, ignore=booking.id
    )
    if why is not None:
        raise LabRefusal(why)
    return Plan(booking.rig, booking.holder, booking.start, end, days)


def cancel(policy: Policy, booking: Booking, now: datetime) -> None:
    """A booking may be cancelled until it has ended (a running one is cut off at once)."""
    _not_ended(booking, now, policy.zone)


def expired(testers: Iterable[Tester], now: datetime) -> list[str]:
    """The names of the enabled testers whose agreement has ended by `now`, sorted."""
    return sorted(t.name for t in testers if t.enabled and t.until <= now)
