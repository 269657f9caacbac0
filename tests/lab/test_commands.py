"""`p1-gateway lab` end to end: bookings, refusals, DST edges, list, audit, calendars."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import icalendar
import pytest

from gateway.devkit.central import CentralBroker
from tests.lab.helpers import YEAR, Lab, last_sunday, retained


@pytest.fixture
def ready(lab: Lab) -> Lab:
    """The lab with rig accounts, and testers acme and beta under agreement."""
    lab.ok("rigs", "add", "rig-a")
    lab.ok("rigs", "add", "rig-b")
    lab.ok("testers", "add", "acme", "--until", f"{YEAR + 1}-12-31")
    lab.ok("testers", "add", "beta", "--until", f"{YEAR + 1}-12-31")
    return lab


def test_book_prints_the_booking_and_books_n_days_as_one_slot(ready: Lab) -> None:
    """`booked ID R START END`, three local days from 08:00 to 06:00 on the fourth morning."""
    result = ready.ok(
        "book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00", "--days", "3"
    )
    assert result.out == f"booked 1 rig-a {YEAR}-02-01T08:00:00+01:00 {YEAR}-02-04T06:00:00+01:00\n"
    assert result.err == ""
    offset = ready.ok("book", "beta", "--rig", "rig-b", "--start", f"{YEAR}-02-01T07:00:00Z")
    assert offset.out.split()[3] == f"{YEAR}-02-01T08:00:00+01:00"


@pytest.mark.parametrize(
    ("month", "before", "after"), [(3, "+01:00", "+02:00"), (10, "+02:00", "+01:00")]
)
def test_a_day_across_a_dst_change_ends_at_the_same_local_time(
    ready: Lab, central: CentralBroker, month: int, before: str, after: str
) -> None:
    """The Saturday before the last Sunday of March (October): 08:00 to Sunday 06:00 local,
    in the booking, the rig's schedule and the next holder's morning."""
    sunday = last_sunday(YEAR, month)
    saturday = sunday - timedelta(days=1)
    result = ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{saturday}T08:00")
    assert result.out.split()[3:] == [f"{saturday}T08:00:00{before}", f"{sunday}T06:00:00{after}"]
    slot = retained(central, "p1/rig-a/schedule")["slots"][0]  # type: ignore[index]
    assert (slot["start"], slot["end"]) == (
        f"{saturday}T08:00:00{before}",
        f"{sunday}T06:00:00{after}",
    )
    refused = ready("book", "beta", "--rig", "rig-a", "--start", f"{sunday}T07:59")
    assert refused.rc == 2 and "turnover" in refused.err
    ready.ok("book", "beta", "--rig", "rig-a", "--start", f"{sunday}T08:00")


def test_each_refusal_exits_2_with_its_reason(ready: Lab) -> None:
    """Overlap, turnover, unknown and disabled... every rule of `book` says why on stderr."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    ready.ok("testers", "add", "cleo", "--until", f"{YEAR}-02-02")
    cases = {
        ("beta", "rig-a", f"{YEAR}-02-01T20:00", "1"): "overlap",
        ("beta", "rig-a", f"{YEAR}-02-02T07:00", "1"): "turnover",
        ("nobody", "rig-a", f"{YEAR}-03-01T08:00", "1"): "unknown tester",
        ("cleo", "rig-b", f"{YEAR}-02-01T08:00", "2"): "agreement of 'cleo' ends",
        ("acme", "rig-b", "2001-01-01T08:00", "1"): "in the past",
        ("acme", "rig-c", f"{YEAR}-03-01T08:00", "1"): "unknown rig",
        ("acme", "rig-b", f"{YEAR}-03-01", "1"): "needs a time",
        ("acme", "rig-b", f"{YEAR}-03-01T08:00", "0"): "--days",
    }
    for (holder, rig, start, days), reason in cases.items():
        result = ready("book", holder, "--rig", rig, "--start", start, "--days", days)
        assert (result.rc, result.out) == (2, ""), (holder, rig, start, result)
        assert reason in result.err, (reason, result.err)


def test_any_rig_takes_the_first_free_and_short_notice_warns(ready: Lab) -> None:
    """`--rig any` books rig-a, then rig-b beside it, then refuses; a start within a week
    is booked with `short notice` on stderr."""
    start = f"{YEAR}-02-01T08:00"
    assert ready.ok("book", "acme", "--rig", "any", "--start", start).out.split()[2] == "rig-a"
    assert ready.ok("book", "beta", "--rig", "any", "--start", start).out.split()[2] == "rig-b"
    refused = ready("book", "acme", "--rig", "any", "--start", start)
    assert refused.rc == 2 and "no rig free" in refused.err
    soon = ready.ok("book", "acme", "--rig", "any", "--start", "now")
    assert soon.err.startswith("lab: short notice")


def test_move_extend_and_cancel_under_the_same_rules(ready: Lab) -> None:
    """Each prints the booking as it is now; into another's slot, unknown or twice: exit 2."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    ready.ok("book", "beta", "--rig", "rig-a", "--start", f"{YEAR}-02-05T07:00")
    moved = ready.ok("move", "1", "--start", f"{YEAR}-02-02T08:00")
    assert moved.out == f"moved 1 rig-a {YEAR}-02-02T08:00:00+01:00 {YEAR}-02-03T06:00:00+01:00\n"
    extended = ready.ok("extend", "1", "--days", "1")
    assert extended.out.split()[-1] == f"{YEAR}-02-04T06:00:00+01:00"
    for args, reason in [
        (("extend", "1", "--days", "1"), "turnover"),
        (("move", "1", "--start", f"{YEAR}-02-04T08:00"), "overlap"),
        (("move", "9", "--start", f"{YEAR}-02-04T08:00"), "unknown booking 9"),
        (("extend", "9", "--days", "1"), "unknown booking 9"),
    ]:
        result = ready(*args)
        assert result.rc == 2 and reason in result.err, (args, result)
    assert ready.ok("cancel", "2").out.startswith("cancelled 2 rig-a")
    assert ready("cancel", "2").rc == 2
    ready.ok("extend", "1", "--days", "1")  # beta's slot is gone


def test_a_refusal_changes_nothing_in_the_store_nor_on_the_broker(
    ready: Lab, central: CentralBroker
) -> None:
    """After a dozen refused commands the store, the plugin's accounts and the retained
    schedules are byte for byte what they were."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")

    def snapshot() -> tuple[str, str, object, object]:
        with sqlite3.connect(ready.db) as db:
            dump = "\n".join(db.iterdump())
        return (
            dump,
            central.dynsec_file.read_text(),
            retained(central, "p1/rig-a/schedule"),
            retained(central, "p1/rig-b/schedule"),
        )

    before = snapshot()
    refused = [
        ("book", "beta", "--rig", "rig-a", "--start", f"{YEAR}-02-01T20:00"),
        ("book", "beta", "--rig", "any", "--start", "2001-01-01T08:00"),
        ("book", "nobody", "--rig", "rig-b", "--start", f"{YEAR}-02-01T08:00"),
        ("move", "1", "--start", "2001-01-01T08:00"),
        ("extend", "1", "--days", "400"),
        ("cancel", "7"),
        ("rigs", "add", "rig-a"),
        ("rigs", "add", "acme"),
        ("testers", "add", "acme", "--until", f"{YEAR}-12-31"),
        ("testers", "add", "rig-b", "--until", f"{YEAR}-12-31"),
        ("testers", "renew", "nobody", "--until", f"{YEAR}-12-31"),
        ("testers", "renew", "acme", "--until", "2001-01-01"),
        ("testers", "reset-code", "nobody"),
        ("calendar", "--holder", "nobody"),
        ("book", "acme"),
    ]
    for args in refused:
        result = ready(*args)
        assert result.rc == 2 and result.err, (args, result)
    assert snapshot() == before


def test_list_shows_current_and_coming_bookings(ready: Lab) -> None:
    """One row per booking, filtered by rig or holder; cancelled ones only with --all."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    ready.ok("book", "beta", "--rig", "rig-b", "--start", f"{YEAR}-02-01T08:00", "--days", "2")
    ready.ok("cancel", "1")
    lines = ready.ok("list").out.splitlines()
    assert lines[0].split() == ["ID", "RIG", "HOLDER", "START", "END", "DAYS"]
    assert lines[1].split() == [
        "2",
        "rig-b",
        "beta",
        f"{YEAR}-02-01T08:00:00+01:00",
        f"{YEAR}-02-03T06:00:00+01:00",
        "2",
    ]
    assert len(lines) == 2
    assert len(ready.ok("list", "--holder", "acme").out.splitlines()) == 1
    everything = ready.ok("list", "--all", "--rig", "rig-a").out.splitlines()
    assert len(everything) == 2 and everything[1].split()[-1] == "cancelled"


def test_audit_says_who_changed_what_and_when(ready: Lab) -> None:
    """Every change is a line: when, who, what, on what, the details; refusals none."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    ready("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00")
    ready.ok("testers", "renew", "acme", "--until", f"{YEAR + 2}-06-30")
    ready.ok("testers", "reset-code", "beta")
    lines = ready.ok("audit").out.splitlines()
    whats = [line.split()[2:4] for line in lines[1:]]
    assert [w[0] for w in whats] == [
        "rigs",
        "rigs",
        "testers",
        "testers",
        "book",
        "testers",
        "testers",
    ]
    book = lines[5]
    assert "booking 1" in book and "holder=acme" in book and "rig=rig-a" in book
    assert f"until={YEAR + 2}-07-01T00:00:00+02:00" in lines[6]
    assert lines[1].split()[1]  # who


def test_calendars_give_a_holders_bookings_or_busy_rigs_without_names(ready: Lab) -> None:
    """iCalendar that icalendar reads back: acme's own bookings; everyone's busy times
    with no holder name anywhere."""
    ready.ok("book", "acme", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00", "--days", "2")
    ready.ok("book", "beta", "--rig", "rig-b", "--start", f"{YEAR}-02-01T08:00")
    mine = icalendar.Calendar.from_ical(ready.ok("calendar", "--holder", "acme").out)
    events = mine.walk("VEVENT")
    assert len(events) == 1
    assert events[0].decoded("dtstart").isoformat() == f"{YEAR}-02-01T07:00:00+00:00"
    assert events[0].decoded("dtend").isoformat() == f"{YEAR}-02-03T05:00:00+00:00"
    assert str(events[0]["location"]) == "rig-a"
    text = ready.ok("calendar").out
    busy = icalendar.Calendar.from_ical(text)
    assert sorted(str(e["location"]) for e in busy.walk("VEVENT")) == ["rig-a", "rig-b"]
    assert "acme" not in text and "beta" not in text


def test_renewing_an_agreement_lets_longer_bookings_through(ready: Lab) -> None:
    """An agreement through a date runs to its end in Brussels; renewed, a later slot fits."""
    ready.ok("testers", "add", "cleo", "--until", f"{YEAR}-02-02")
    assert ready("book", "cleo", "--rig", "rig-a", "--start", f"{YEAR}-02-02T08:00").rc == 2
    assert ready.ok("book", "cleo", "--rig", "rig-a", "--start", f"{YEAR}-02-01T08:00").rc == 0
    renewed = ready.ok("testers", "renew", "cleo", "--until", f"{YEAR}-03-31")
    assert renewed.out == f"tester cleo: agreement until {YEAR}-04-01T00:00:00+02:00\n"
    ready.ok("book", "cleo", "--rig", "rig-a", "--start", f"{YEAR}-02-02T08:00")


def test_a_bad_lab_toml_exits_2_naming_file_and_field(lab: Lab) -> None:
    """Unknown keys, a bad rig id, negative hours and a missing password file are each
    reported; nothing runs."""
    lab.write(rigs=["rig-a", "Rig B"], slot_hours=-1, turnover=2)
    (lab.folder / "planner.pass").unlink()
    result = lab("list")
    assert result.rc == 2 and result.out == ""
    for field in ("lab.rigs[1]", "lab.slot_hours", "lab.turnover"):
        assert f"{lab.config}: {field}" in result.err, field
    lab.write()
    result = lab("list")
    assert result.rc == 2 and "mqtt.password_file" in result.err
